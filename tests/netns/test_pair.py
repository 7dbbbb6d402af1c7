#!/usr/bin/env python3
"""The failover scenarios of issue 6, each printing the drill report (CTest: netns.pair.NAME,
labels netns and pair; registered DISABLED until the pair works — configure with
-DHALB_NETNS_PAIR=ON to run them).

    test_pair.py SCENARIO        (as root; HALB_BIN names the halb binary)

Every scenario: three backends, both halb nodes from one generated configuration (advert
interval 100 ms), lb1 master, two drills through the VIP — users sticky by source address
(with long-lived TCP connections) and users sticky by application cookie (two per address) —
then the event, then the assertions:
  * every drill client retries once: zero requests fail after the retry;
  * zero sticky users reach another server (source and cookie);
  * no long-lived connection hangs (without continuity they may be reset, never hung);
  * after a kill, exactly one node answers ARP for the VIP (within the VIP lifetime);
  * never two masters: both nodes alive and on the LAN never hold the VIP at once, beyond
    one advert interval during a preemption;
  * outage: SIGKILL of the master < 100 ms; link down <= 3 x advert + skew + 50 ms.
"""
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
from halbnet import Topology, require_root_and_tools, wait_for  # noqa: E402
from pair import (APP_PORT, LB_SYSCTLS, SESSION_COOKIE, Drill, Pair, PairSettings,  # noqa: E402
                  drill_args)

ADVERT_MS = 100
SIGKILL_MAX_OUTAGE_MS = 100  # issue 6: fast death detection through the state-sync link
MARGIN_MS = 50


def link_down_max_outage_ms(s: PairSettings) -> float:
    return s.master_down_ms("lb2") + MARGIN_MS  # 3 x advert + skew(lb2) + 50 ms = 411 ms


def clean_stop_max_outage_ms(s: PairSettings) -> float:
    # priority 0 makes the backup take over after Skew_Time (RFC 9568 section 6.4.2)
    return s.advert_interval_ms + s.skew_ms("lb2") + MARGIN_MS


def two_masters_tolerance_ms(s: PairSettings) -> float:
    # a preempting master and the stepping-down one overlap until the latter hears one advert
    return s.advert_interval_ms + 20


failures = []


def check(cond, what):
    print(f"  [{'ok' if cond else 'FAIL'}] {what}", flush=True)
    if not cond:
        failures.append(what)


def measure_for(seconds):
    """A measurement window: traffic flows through the pair while the drill records it. Not a
    synchronisation — every wait for a state uses wait_for with a deadline."""
    time.sleep(seconds)


class Drills:
    """The two drills of every scenario, started together, stopped together, checked together."""

    def __init__(self, t, tag=""):
        half = len(t.client_addrs) // 2
        self.src = Drill(t, f"source{tag}", drill_args(t, rate=1000, sources=t.client_addrs[:half]))
        self.cookie = Drill(t, f"cookie{tag}", drill_args(t, rate=400, sources=t.client_addrs[half:],
                                                          port=APP_PORT, tcp_conns=0,
                                                          users_per_source=2))

    def __enter__(self):
        self.src.__enter__()
        self.cookie.__enter__()
        self.src.wait_ready()
        self.cookie.wait_ready()
        return self

    def __exit__(self, *exc):
        self.src.__exit__(*exc)
        self.cookie.__exit__(*exc)
        return False

    def stop_and_check(self, max_outage_ms, event_ms=None):
        for d in (self.src, self.cookie):
            r = d.stop()
            h, tcp = r["http"], r["tcp"]
            name = d.name
            check(h["failed_after_retry"] == 0,
                  f"{name}: zero failed requests after one retry ({h['failed_raw']} raw)")
            check(h["users_moved"] == 0, f"{name}: zero sticky users moved (of {h['users_total']})")
            check(h["users_without_response"] == 0, f"{name}: every user answered")
            check(h["outage"]["longest_gap_ms"] <= max_outage_ms,
                  f"{name}: outage {h['outage']['longest_gap_ms']:.1f} ms <= {max_outage_ms:.0f} ms")
            if event_ms is not None:
                print(f"  {name}: outage began {h['outage']['start_unix_ms'] - event_ms:+.0f} ms from the event")
            if tcp["connections"]:
                check(tcp["hung"] == 0, f"{name}: no long-lived connection hung "
                      f"(intact {tcp['intact']}, reset {tcp['reset']}, lost {tcp['lost']})")
                check(tcp["corrupt"] == 0, f"{name}: no long-lived connection corrupted")


def only_one_arp_responder(t, pair, role):
    deadline = pair.s.vip_lifetime_ms / 1000 + 1.0
    wait_for(lambda: t.arp_responders() == [role], deadline, f"only {role} answers ARP for the VIP")
    for _ in range(3):  # and it stays so
        check(t.arp_responders() == [role], f"only {role} answers ARP for the VIP")


# ---------------------------------------------------------------------------------------------


def master_sigkill(t, pair, w):
    with Drills(t) as d:
        measure_for(1.0)
        at = pair.kill9("lb1")
        wait_for(lambda: "lb2" in w.holders(), 2.0, "lb2 claims the VIP")
        only_one_arp_responder(t, pair, "lb2")
        measure_for(1.0)
        d.stop_and_check(SIGKILL_MAX_OUTAGE_MS, at)


def master_link_down(t, pair, w):
    with Drills(t) as d:
        measure_for(1.0)
        at = pair.link_down("lb1")
        wait_for(lambda: "lb2" in w.holders(), 2.0, "lb2 claims the VIP")
        # lb1 still holds it, cut off: the clients hear only lb2
        only_one_arp_responder(t, pair, "lb2")
        measure_for(1.0)
        pair.link_up("lb1")
        pair.wait_master("lb1", 10.0)  # preempt: lb1 takes mastership back once in sync
        measure_for(1.0)
        d.stop_and_check(link_down_max_outage_ms(pair.s), at)


def master_clean_stop(t, pair, w):
    with Drills(t) as d:
        measure_for(1.0)
        at = pair.stop_clean("lb1")
        pair.wait_master("lb2", 2.0)  # the leaving master removes its VIP itself
        check(t.arp_responders() == ["lb2"], "only lb2 answers ARP right after a clean stop")
        measure_for(1.0)
        d.stop_and_check(clean_stop_max_outage_ms(pair.s), at)


def old_master_returns_preempt(t, pair, w):
    with Drills(t) as d:
        measure_for(1.0)
        at = pair.kill9("lb1")
        only_one_arp_responder(t, pair, "lb2")
        pair.start("lb1")
        pair.wait_synced("lb1", 10.0)
        pair.wait_master("lb1", pair.s.preempt_delay_ms / 1000 + 10.0)
        only_one_arp_responder(t, pair, "lb1")
        measure_for(1.0)
        d.stop_and_check(SIGKILL_MAX_OUTAGE_MS, at)


def old_master_returns_no_preempt(t, pair, w):
    with Drills(t) as d:
        measure_for(1.0)
        at = pair.kill9("lb1")
        only_one_arp_responder(t, pair, "lb2")
        pair.start("lb1")
        pair.wait_synced("lb1", 10.0)
        # without preempt lb2 keeps the VIP: watch it over twenty advert intervals
        end = time.monotonic() + 20 * pair.s.advert_interval_ms / 1000
        while time.monotonic() < end:
            if w.holders() != ["lb2"]:
                break
            time.sleep(pair.s.advert_interval_ms / 1000 / 4)
        check(w.holders() == ["lb2"], "without preempt the returning lb1 stays backup")
        d.stop_and_check(SIGKILL_MAX_OUTAGE_MS, at)


def backup_restart(t, pair, w):
    with Drills(t) as d:
        measure_for(1.0)
        pair.kill9("lb2")
        measure_for(0.5)  # lb1 serves alone; users keep being seen
        pair.start("lb2")
        pair.wait_synced("lb2", 10.0)  # the restarted backup receives the full tables
        at = pair.kill9("lb1")  # and now it must serve every user from them
        only_one_arp_responder(t, pair, "lb2")
        measure_for(1.0)
        d.stop_and_check(SIGKILL_MAX_OUTAGE_MS, at)


def repeat20(t, pair, w):
    master, backup = "lb1", "lb2"
    for i in range(20):
        print(f"--- drill {i + 1} of 20: SIGKILL {master}", flush=True)
        with Drills(t, tag=f"-{i + 1}") as d:
            measure_for(0.5)
            at = pair.kill9(master)
            only_one_arp_responder(t, pair, backup)
            pair.start(master)
            pair.wait_synced(master, 10.0)
            measure_for(0.3)
            d.stop_and_check(SIGKILL_MAX_OUTAGE_MS, at)
        check(w.holders() == [backup], f"drill {i + 1}: {backup} is the only master")
        master, backup = backup, master


SCENARIOS = {
    "master_sigkill": (master_sigkill, PairSettings(advert_interval_ms=ADVERT_MS)),
    "master_link_down": (master_link_down, PairSettings(advert_interval_ms=ADVERT_MS)),
    "master_clean_stop": (master_clean_stop, PairSettings(advert_interval_ms=ADVERT_MS)),
    "old_master_returns_preempt": (old_master_returns_preempt, PairSettings(advert_interval_ms=ADVERT_MS)),
    "old_master_returns_no_preempt": (old_master_returns_no_preempt,
                                      PairSettings(advert_interval_ms=ADVERT_MS, preempt=False)),
    "backup_restart": (backup_restart, PairSettings(advert_interval_ms=ADVERT_MS)),
    # without preempt mastership alternates, so each drill kills the current master
    "repeat20": (repeat20, PairSettings(advert_interval_ms=ADVERT_MS, preempt=False)),
}


def main(argv):
    if len(argv) != 1 or argv[0] not in SCENARIOS:
        print(f"usage: test_pair.py {{{'|'.join(SCENARIOS)}}}", file=sys.stderr)
        return 2
    require_root_and_tools()
    fn, settings = SCENARIOS[argv[0]]
    print(f"=== scenario {argv[0]}", flush=True)
    with Topology(lb_sysctls=LB_SYSCTLS, deadline=540) as t:
        t.start_backends(session_cookie=SESSION_COOKIE)
        pair = Pair(t, settings)
        pair.start_all()
        pair.wait_master("lb1", 10.0)
        pair.wait_synced("lb2", 10.0)
        with t.vip_watcher() as w:
            fn(t, pair, w)
            overlap = pair.two_master_overlap_ms(w)
            check(overlap <= two_masters_tolerance_ms(settings),
                  f"never two masters (longest overlap {overlap:.1f} ms)")
        if failures:
            t.dump_logs()
    print(f"=== {argv[0]}: {'FAILED: ' + '; '.join(failures) if failures else 'passed'}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
