#!/usr/bin/env python3
"""Self-test of the namespace harness (CTest: netns.harness, label netns, needs root).

Builds the topology, checks connectivity and every helper the scenarios rely on (VIP
holders, ARP responders, link cut/carrier, kill -9, the VIP watcher), tears down and checks
nothing is left — then checks that cleanup also happens when the test is stopped by SIGTERM,
SIGINT, its own deadline, and SIGKILL (the reaper).
"""
import os
import signal
import subprocess
import sys
import time
import unittest
from pathlib import Path

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, str(Path(__file__).resolve().parent))
import halbnet  # noqa: E402
from halbnet import BACKENDS, ECHO_PORT, HTTP_PORT, Topology, list_namespaces, wait_for  # noqa: E402

HERE = Path(__file__).resolve().parent


class TopologyTest(unittest.TestCase):
    def test_topology_connectivity_helpers_and_teardown(self):
        t = Topology(users=4, deadline=60)
        with t:
            t.start_backends()
            # client -> each backend, HTTP (identity) and echo, from every source address
            for b in BACKENDS:
                addr = t.nodes[b].addr
                for src in t.client_addrs:
                    self.assertEqual(t.http_get("client", addr, HTTP_PORT, source=src), b)
                self.assertTrue(t.echo("client", addr, ECHO_PORT, source=t.client_addrs[-1]))
                # and from the LB nodes, which proxy to them
                self.assertEqual(t.http_get("lb1", addr), b)
                self.assertEqual(t.http_get("lb2", addr), b)
            self.assertTrue(t.ping("lb1", t.nodes["lb2"].addr))
            self.assertTrue(t.ping("lb2", t.nodes["lb1"].addr))
            # the namespaces are isolated from the host: no route out
            self.assertFalse(t.ping("client", "8.8.8.8"))

            # VIP helpers, driven by hand the way halb will drive them
            lb1, lb2 = t.ns("lb1"), t.ns("lb2")
            with t.vip_watcher() as w:
                self.assertEqual(t.vip_holders(), [])
                self.assertEqual(t.arp_responders(), [])
                halbnet.sh(["ip", "-n", lb1, "addr", "add", f"{t.vip}/24", "dev", "eth0"])
                wait_for(lambda: w.holders() == ["lb1"], 2, "watcher sees lb1 holding the VIP")
                self.assertEqual(t.vip_holders(), ["lb1"])
                self.assertEqual(t.arp_responders(), ["lb1"])
                halbnet.sh(["ip", "-n", lb2, "addr", "add", f"{t.vip}/24", "dev", "eth0"])
                self.assertEqual(t.arp_responders(), ["lb1", "lb2"])  # the split-brain picture
                wait_for(lambda: w.holders() == ["lb1", "lb2"], 2, "watcher sees both")
                halbnet.sh(["ip", "-n", lb1, "addr", "del", f"{t.vip}/24", "dev", "eth0"])
                wait_for(lambda: w.holders() == ["lb2"], 2, "watcher sees lb1 drop the VIP")
                self.assertEqual(t.arp_responders(), ["lb2"])
                # a VIP with a finite lifetime expires on its own (what halb relies on after
                # a SIGKILL); the watcher sees the kernel remove it
                halbnet.sh(["ip", "-n", lb1, "addr", "add", f"{t.vip}/24", "dev", "eth0",
                            "valid_lft", "1", "preferred_lft", "1"])
                wait_for(lambda: w.holders() == ["lb1", "lb2"], 2, "lb1 holds it again")
                wait_for(lambda: w.holders() == ["lb2"], 3, "lb1's VIP expires")
                kinds = [(role, kind) for _, role, kind in w.timeline()]
                self.assertEqual(kinds[:2], [("lb1", "add"), ("lb2", "add")])
                self.assertEqual(kinds[-1], ("lb1", "del"))

                # client's neighbour table follows the last ARP answer
                self.assertTrue(t.http_get("client", t.vip, HTTP_PORT) is None)  # nobody listens
                self.assertEqual(t.client_neighbour(), "lb2")

                # link cut: the node notices nothing, but nobody hears it
                t.link_down("lb2", "cut")
                self.assertEqual(t.arp_responders(), [])
                self.assertFalse(t.ping("lb1", t.nodes["lb2"].addr))
                self.assertEqual(t.vip_holders(), ["lb2"])  # it still holds the VIP
                t.link_up("lb2", "cut")
                wait_for(lambda: t.arp_responders() == ["lb2"], 3, "lb2 answers again")
                # carrier down: the node's own link goes away
                t.link_down("lb2", "carrier")
                self.assertFalse(t.ping("lb1", t.nodes["lb2"].addr))
                t.link_up("lb2", "carrier")
                wait_for(lambda: t.ping("lb1", t.nodes["lb2"].addr), 5, "lb2 reachable again")

            # kill -9 of a process: gone, and its service with it
            b3 = [p for p in t.procs if p.name == "backend-b3"][0]
            t.kill9(b3)
            self.assertFalse(b3.alive())
            self.assertEqual(b3.popen.returncode, -signal.SIGKILL)
            self.assertFalse(t.echo("client", t.nodes["b3"].addr))
            pids = [p.pid for p in t.procs]
        self.assertEqual(t.leftovers(), [])
        for pid in pids:
            self.assertFalse(os.path.exists(f"/proc/{pid}"), f"pid {pid} left")
        print(f"setup {t.setup_seconds * 1000:.0f} ms, teardown {t.teardown_seconds * 1000:.0f} ms")

    def test_unique_names_and_short_interfaces(self):
        t = Topology()
        self.assertTrue(all(n.ns.startswith(f"hbt{os.getpid()}-") for n in t.nodes.values()))
        ifnames = [n.port for n in t.nodes.values()] + [t.bridge]
        self.assertTrue(all(len(n) <= 15 for n in ifnames))
        self.assertEqual(len(set(ifnames)), len(ifnames))


def hold_child(deadline):
    """Runs in a child process: builds the topology with backends, reports, then waits to be
    stopped (by a signal or by its own deadline, armed once everything is up)."""
    with Topology(users=2, deadline=60, verbose=False) as t:
        t.start_backends()
        pids = " ".join(str(p.pid) for p in t.procs)
        print(f"READY {t.tag} {pids}", flush=True)
        if deadline:
            t.set_deadline(deadline)
        while True:
            time.sleep(0.05)  # nothing to poll: waiting to be interrupted is the point


class CleanupTest(unittest.TestCase):
    def run_child(self, sig, deadline=0, expect_reaper=False):
        child = subprocess.Popen([sys.executable, __file__, "--hold", str(deadline)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 start_new_session=True)
        try:
            line = child.stdout.readline()
            if not line.startswith("READY"):
                child.kill()
                self.fail(f"child said {line!r}: {child.stderr.read()}")
            _, tag, *pids = line.split()
            pids = [int(p) for p in pids]
            self.assertIn(f"{tag}-lan", list_namespaces())
            t0 = time.monotonic()
            if sig is not None:
                os.kill(child.pid, sig)
            child.wait(timeout=deadline + 30)
            # after a SIGKILL only the reaper can clean up, and it does so asynchronously
            wait_for(lambda: not any(ns.startswith(tag + "-") for ns in list_namespaces()),
                     15 if expect_reaper else 1, f"namespaces of {tag} removed")
            wait_for(lambda: not any(os.path.exists(f"/proc/{p}") for p in pids),
                     15 if expect_reaper else 1, "child's processes ended")
            return time.monotonic() - t0
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            child.stdout.close()
            child.stderr.close()

    def test_sigterm(self):
        self.run_child(signal.SIGTERM)

    def test_sigint(self):
        self.run_child(signal.SIGINT)

    def test_own_deadline(self):
        self.run_child(None, deadline=0.5)

    def test_sigkill_reaper(self):
        took = self.run_child(signal.SIGKILL, expect_reaper=True)
        print(f"reaper cleaned up {took * 1000:.0f} ms after SIGKILL")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--hold":
        hold_child(float(sys.argv[2]))
        sys.exit(0)
    halbnet.require_root_and_tools()
    unittest.main(verbosity=2)
