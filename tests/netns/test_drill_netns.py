#!/usr/bin/env python3
"""`halb drill` end to end in the namespaces, against a scripted failover (CTest:
netns.drill_failover, label netns). Runs today, without the pair: both LB nodes run a toy
relay (toyproxy.py) that picks servers by client address, and the test moves the VIP by hand
— kill -9 the relay on lb1, wait a scripted delay, add the VIP on lb2 with gratuitous ARP,
then remove lb1's copy. The drill must see what was scripted: an outage of about that delay beginning at the
kill, failures that a retry hides once the VIP has moved, nobody moved to another server, and
long-lived connections reset (not hung) — the old relay's sockets die with it.
"""
import json
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
from halbnet import BACKENDS, ECHO_PORT, HTTP_PORT, Topology, require_root_and_tools, wait_for  # noqa: E402
from pair import Drill, halb_bin  # noqa: E402

HERE = Path(__file__).resolve().parent
SCRIPTED_OUTAGE_S = 0.30


def main():
    require_root_and_tools()
    halb_bin()
    failures = []

    def check(cond, what):
        print(f"  [{'ok' if cond else 'FAIL'}] {what}", flush=True)
        if not cond:
            failures.append(what)

    with Topology(deadline=100) as t:
        t.start_backends()
        servers = ",".join(t.nodes[b].addr for b in BACKENDS)
        relays = {}
        for role in ("lb1", "lb2"):
            relays[role] = t.spawn(role, f"toyproxy-{role}", [
                sys.executable, str(HERE / "toyproxy.py"), "--listen", f"80={HTTP_PORT}",
                "--listen", f"9000={ECHO_PORT}", "--servers", servers])
        for role in ("lb1", "lb2"):
            addr = t.nodes[role].addr
            t.wait_for(lambda a=addr: t.http_get("client", a, 80) in BACKENDS, 10, f"relay on {role}")
        t.add_vip("lb1")
        t.wait_for(lambda: t.http_get("client", t.vip, 80) in BACKENDS, 5, "VIP answers")

        args = ["--http", f"{t.vip}:80", "--source", ",".join(t.client_addrs), "--rate", "1000",
                "--timeout", "1s", "--retry-once", "--duration", "30s",
                "--tcp", f"{t.vip}:9000", "--tcp-conns", "16", "--tcp-interval", "50ms",
                "--tcp-timeout", "3s"]
        with Drill(t, "scripted", args) as d:
            d.wait_ready()
            time.sleep(1.0)  # measurement window before the event
            kill_ms = time.time() * 1000
            t.kill9(relays["lb1"])
            time.sleep(SCRIPTED_OUTAGE_S)  # the scripted outage itself
            # as in a takeover: the new holder announces the VIP; the dead node's copy goes
            # later (removing it first would blackhole SYNs already on their way to lb1)
            t.add_vip("lb2", garp=False)
            added_ms = time.time() * 1000
            t.run("lb2", [sys.executable, str(HERE / "halbnet.py"), "garp", "eth0", t.vip])
            announced_ms = time.time() * 1000
            t.del_vip("lb1")
            wait_for(lambda: t.arp_responders() == ["lb2"], 2, "only lb2 answers ARP")
            time.sleep(1.0)  # measurement window after the event
            r = d.stop()
        h, tcp = r["http"], r["tcp"]
        # the VIP works again once lb2 has it and the client has heard the first announcement
        lo, hi = added_ms - kill_ms, announced_ms - kill_ms
        gap = h["outage"]["longest_gap_ms"]
        began = h["outage"]["start_unix_ms"] - kill_ms
        print(f"  scripted outage {lo:.0f}..{hi:.0f} ms; drill saw {gap:.1f} ms beginning {began:+.0f} ms from the kill")
        check(lo - 20 <= gap <= hi + 100, "the drill's outage matches the scripted one")
        check(-50 <= began <= 20, "the outage begins at the kill")
        check(h["failed_raw"] > 0, f"requests failed while nobody served ({h['failed_raw']} raw)")
        check(h["users_moved"] == 0, "no user moved (both relays hash by client address)")
        check(h["users_total"] == 2 * len(t.client_addrs), "one user per address and mode")
        check(h["users_without_response"] == 0, "every user answered")
        check(h["latency"]["after_gap"]["count"] > 500, "traffic after the gap was measured")
        check(tcp["connections"] == 16 and tcp["hung"] == 0, f"no long-lived connection hung ({tcp})")
        check(tcp["reset"] + tcp["lost"] == 16, "every long-lived connection was cut by the relay's death")
        print(json.dumps({"outage_ms": gap, "failed_raw": h["failed_raw"],
                          "failed_after_retry": h["failed_after_retry"], "requests": h["requests"]}))
    print(f"=== drill_failover: {'FAILED: ' + '; '.join(failures) if failures else 'passed'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
