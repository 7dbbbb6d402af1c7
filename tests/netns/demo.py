#!/usr/bin/env python3
"""The failover demo (scripts/demo.sh; ./halb.sh demo): the pair in network namespaces, load
through the VIP with `halb drill`, SIGKILL of the master, the drill report, and teardown.

    demo.py HALB_BINARY [--pair | --toy]

--pair   the real pair (needs halb run with VRRP and state-sync)
--toy    toy relays on both nodes and a failover scripted by the demo (works without the pair)
default  the pair; if no node claims the VIP within 10 s, say so and show --toy instead
"""
import os
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from halbnet import BACKENDS, ECHO_PORT, HTTP_PORT, Topology, require_root_and_tools, wait_for  # noqa: E402
from pair import LB_SYSCTLS, SESSION_COOKIE, Drill, Pair, PairSettings, drill_args  # noqa: E402


def say(msg):
    print(f"\n--- {msg}", flush=True)


def watch(t, seconds):
    """Shows who holds the VIP while traffic flows (a demo pause, not a synchronisation)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.5)


def pair_demo(t) -> bool:
    s = PairSettings(advert_interval_ms=100)
    pair = Pair(t, s)
    say(f"configuration (one file for both nodes): {pair.config}")
    print(pair.config.read_text())
    say("starting halb on lb1 (priority 150) and lb2 (priority 100)")
    pair.start_all()
    try:
        pair.wait_master("lb1", 10.0)
    except TimeoutError:
        print("no node claimed the VIP within 10 s: this halb does not run the pair yet "
              "(VRRP, state-sync and the data plane are being built).")
        for r in ("lb1", "lb2"):
            print(f"  {r} log:\n" + "\n".join("    " + l for l in pair.procs[r].log_tail(10).splitlines()))
        return False
    print(f"lb1 is master: VIP {t.vip} on lb1, ARP answered by {t.arp_responders()}")
    try:
        pair.wait_synced("lb2", 10.0)
        print("lb2 is in sync with lb1")
    except Exception as e:  # the demo goes on; the scenarios in CI assert it
        print(f"(could not confirm state-sync: {e})")
    args = drill_args(t, rate=500, tcp_conns=16)
    say(f"halb drill from {len(t.client_addrs)} client addresses: HTTP (new connection and keep-alive, "
        f"retry once) and 16 long-lived TCP connections through {t.vip}")
    with Drill(t, "demo", args) as d:
        d.wait_ready()
        watch(t, 2.0)
        say("SIGKILL of halb on lb1, the master")
        pair.kill9("lb1")
        wait_for(lambda: "lb2" in t.vip_holders(), 3.0, "lb2 claims the VIP")
        print(f"lb2 holds the VIP; VIP holders now {t.vip_holders()} (lb1's copy expires on its own)")
        wait_for(lambda: t.arp_responders() == ["lb2"], s.vip_lifetime_ms / 1000 + 1.0,
                 "only lb2 answers ARP")
        print(f"ARP for {t.vip} is answered by {t.arp_responders()} only")
        watch(t, 2.0)
        say("the drill report")
        d.stop()
    return True


def toy_demo(t):
    say("toy relays on lb1 and lb2 stand in for halb (they pick servers by client address)")
    servers = ",".join(t.nodes[b].addr for b in BACKENDS)
    relays = {r: t.spawn(r, f"toyproxy-{r}", [sys.executable, str(HERE / "toyproxy.py"), "--listen",
                                              f"80={HTTP_PORT}", "--listen", f"9000={ECHO_PORT}",
                                              "--servers", servers]) for r in ("lb1", "lb2")}
    for r in ("lb1", "lb2"):
        wait_for(lambda a=t.nodes[r].addr: t.http_get("client", a, 80) in BACKENDS, 10, f"relay on {r}")
    t.add_vip("lb1")
    print(f"VIP {t.vip} on lb1")
    with Drill(t, "demo-toy", drill_args(t, rate=500, tcp_conns=16)) as d:
        d.wait_ready()
        watch(t, 2.0)
        say("kill -9 the relay on lb1; 300 ms later the VIP moves to lb2 with gratuitous ARP")
        t.kill9(relays["lb1"])
        time.sleep(0.3)  # the scripted outage
        t.add_vip("lb2")
        t.del_vip("lb1")
        watch(t, 2.0)
        say("the drill report")
        d.stop()


def main(argv):
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    os.environ["HALB_BIN"] = os.path.abspath(argv[0])
    mode = argv[1] if len(argv) > 1 else "--auto"
    require_root_and_tools()
    say("building the topology: bridge LAN, lb1, lb2, client, three backends (network namespaces)")
    with Topology(lb_sysctls=LB_SYSCTLS, deadline=300) as t:
        for n in t.nodes.values():
            print(f"  {n.role:7} {n.ns:18} {n.addr}" + (f" (+{len(n.extra_addrs)} more)" if n.extra_addrs else ""))
        t.start_backends(session_cookie=SESSION_COOKIE)
        if mode == "--toy":
            toy_demo(t)
        elif not pair_demo(t):
            if mode == "--pair":
                return 1
            for p in list(t.procs):
                if p.name.startswith("halb-") and p.alive():
                    p.stop()
            toy_demo(t)
        say("tearing everything down")
    print(f"done; logs in {t.logdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
