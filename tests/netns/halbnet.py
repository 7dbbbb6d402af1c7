#!/usr/bin/env python3
"""halbnet: the network-namespace topology that halb's end-to-end tests run in.

    with Topology() as t:                      # builds everything, tears it down on any exit
        t.start_backends()
        t.wait_for(lambda: t.http_get("b1") == "b1", 5, "b1 answers")
        ...

Layout (all names carry the PID of the run, so parallel runs never collide):

    hbt<pid>-lan      the LAN: bridge h<pid>br, one port per node (h<pid><role>)
    hbt<pid>-lb1/lb2  the two halb nodes           eth0 10.77.0.11 / .12
    hbt<pid>-client   the client                   eth0 10.77.0.50 .. (one address per user)
    hbt<pid>-b1/b2/b3 the backends                 eth0 10.77.0.21 .. .23
                      HTTP on :8080 (X-Backend: bN), TCP echo on :9000
    VIP               10.77.0.100 (held by whichever node is master)

Every interface lives inside a test namespace (veths are created directly in them), so the
root namespace is never touched. Cleanup runs on success, failure, exception, SIGINT, SIGTERM
and on the harness's own deadline; a detached reaper process cleans up even after a SIGKILL
of the test (e.g. a CTest timeout). Processes are ended by PID only.

Run as a script it offers small probes that run inside a namespace (ip netns exec NS ...):
    halbnet.py arp-probe IFACE TARGET_IP [--window S]   MACs that answer ARP for TARGET_IP
    halbnet.py http-get URL [--source IP]                prints the X-Backend header
    halbnet.py echo HOST PORT [--source IP]              exits 0 if an echo came back intact
    halbnet.py garp IFACE IP [--count N]                 announce IP from this namespace
"""
from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

HERE = Path(__file__).resolve().parent
NS_PREFIX = "hbt"  # namespace names: hbt<pid>-<role>
SKIP = 77  # CTest SKIP_RETURN_CODE: not root, or a tool is missing


class HarnessError(RuntimeError):
    pass


class Deadline(Exception):
    """The harness's own time limit ran out (raised from SIGALRM)."""


# --------------------------------------------------------------------------------------------
# small utilities


def sh(argv: List[str], *, check=True, timeout=10.0, capture=True) -> subprocess.CompletedProcess:
    """Runs a short command with a deadline; raises HarnessError with its output on failure."""
    try:
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=capture, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise HarnessError(f"timed out after {timeout}s: {' '.join(argv)}") from e
    if check and r.returncode != 0:
        raise HarnessError(f"failed ({r.returncode}): {' '.join(argv)}\n{r.stdout}{r.stderr}")
    return r


def proc_starttime(pid: int) -> Optional[int]:
    """Start time of a process in clock ticks since boot, to tell it from a reused PID."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    # the command name may hold spaces and parentheses: fields start after the last ')'
    fields = data[data.rindex(")") + 2:].split()
    return int(fields[19])


def pid_alive(pid: int, starttime: Optional[int]) -> bool:
    st = proc_starttime(pid)
    if st is None:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False  # a zombie has ended; only its parent's wait is missing
    except OSError:
        return False
    return starttime is None or st == starttime


def wait_for(cond: Callable[[], object], timeout: float, what: str, interval: float = 0.01):
    """Polls `cond` until it returns a true value (returned) or raises TimeoutError."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = cond()
            if v:
                return v
        except (HarnessError, OSError) as e:  # a probe failing is "not yet"
            last_exc = e
        if time.monotonic() >= deadline:
            extra = f" (last error: {last_exc})" if last_exc else ""
            raise TimeoutError(f"timed out after {timeout:.2f}s waiting for: {what}{extra}")
        time.sleep(interval)


def require_root_and_tools(tools=("ip", "setpriv")):
    """Exits with SKIP when the test cannot run here (not root, or iproute2 missing)."""
    if os.geteuid() != 0:
        print("SKIP: network-namespace tests need root", file=sys.stderr)
        sys.exit(SKIP)
    for t in tools:
        if shutil.which(t) is None:
            print(f"SKIP: '{t}' not found", file=sys.stderr)
            sys.exit(SKIP)


def list_namespaces() -> List[str]:
    r = sh(["ip", "netns", "list"])
    return [line.split()[0] for line in r.stdout.splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------
# processes


@dataclass
class Proc:
    name: str
    ns: str
    argv: List[str]
    popen: subprocess.Popen
    log: Path
    starttime: Optional[int]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int):
        if self.alive():
            os.kill(self.pid, sig)

    def wait(self, timeout: float) -> Optional[int]:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace: float = 3.0) -> Optional[int]:
        """SIGTERM, then SIGKILL after `grace` seconds. Returns the exit status."""
        if self.alive():
            self.signal(signal.SIGTERM)
            if self.wait(grace) is None:
                self.signal(signal.SIGKILL)
                self.wait(5.0)
        return self.popen.returncode

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


# --------------------------------------------------------------------------------------------
# the reaper: cleans up after a harness that was killed without running its own cleanup


def _reaper_main(read_fd: int, state_file: str):
    """Runs in a detached grandchild: waits for EOF on the pipe (the harness has exited, by any
    means), then ends the recorded processes and deletes the recorded namespaces."""
    try:
        while True:
            try:
                if not os.read(read_fd, 64):
                    break
            except InterruptedError:
                continue
        try:
            with open(state_file) as f:
                state = json.load(f)
        except (OSError, ValueError):
            return
        procs = [(p["pid"], p["starttime"]) for p in state.get("procs", [])]
        for pid, st in procs:
            if pid_alive(pid, st):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        for ns in state.get("namespaces", []):
            subprocess.run(["ip", "netns", "del", ns], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)
        with contextlib.suppress(OSError):
            os.unlink(state_file)
    finally:
        os._exit(0)


def start_reaper(state_file: Path) -> int:
    """Forks the reaper (double fork + setsid, so neither a process-group kill nor CTest's
    kill of the test's process tree reaches it). Returns the write end of its pipe: the reaper
    acts when every copy of it is closed, i.e. when this process is gone."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            os.close(w)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            # close every inherited descriptor but the pipe (log files, sockets)
            os.closerange(3, r)
            os.closerange(r + 1, 1024)
            _reaper_main(r, str(state_file))
        finally:
            os._exit(0)
    os.close(r)
    os.waitpid(pid, 0)
    os.set_inheritable(w, False)
    return w


# --------------------------------------------------------------------------------------------
# the topology

LB_NODES = ("lb1", "lb2")
BACKENDS = ("b1", "b2", "b3")
HTTP_PORT = 8080
ECHO_PORT = 9000


@dataclass
class Node:
    role: str
    ns: str
    addr: str  # primary address on eth0
    port: str  # the bridge-side veth end, in the LAN namespace
    mac: str = ""
    extra_addrs: List[str] = field(default_factory=list)


class Topology:
    """Builds the LAN, two LB nodes, a client and three backends in namespaces."""

    def __init__(self, *, subnet: str = "10.77.0", users: int = 8, logdir: Optional[Path] = None,
                 deadline: Optional[float] = None, lb_sysctls: Optional[Dict[str, str]] = None,
                 ipv6: bool = False, verbose: bool = True):
        if users < 1 or users > 40:
            raise ValueError("users must be in 1..40")
        self.pid = os.getpid()
        self.tag = f"{NS_PREFIX}{self.pid}"
        self.subnet = subnet
        self.prefix_len = 24
        self.vip = f"{subnet}.100"
        self.verbose = verbose
        self.deadline = deadline
        self.lb_sysctls = dict(lb_sysctls or {})
        self.ipv6 = ipv6
        base = Path(os.environ.get("HALB_NETNS_LOGDIR", Path.cwd() / "netns-logs"))
        self.logdir = Path(logdir) if logdir else base / f"{self.tag}-{int(time.time())}"
        self.nodes: Dict[str, Node] = {}
        self.lan_ns = f"{self.tag}-lan"
        self.bridge = f"h{self.pid}br"
        self.procs: List[Proc] = []
        self.client_addrs = [f"{subnet}.{50 + i}" for i in range(users)]
        self._namespaces: List[str] = []
        self._state_file: Optional[Path] = None
        self._reaper_fd: Optional[int] = None
        self._old_handlers = {}
        self._up = False
        self.setup_seconds = 0.0
        self.teardown_seconds = 0.0

        addrs = {"lb1": 11, "lb2": 12, "client": 50, "b1": 21, "b2": 22, "b3": 23}
        short = {"lb1": "lb1", "lb2": "lb2", "client": "cl", "b1": "b1", "b2": "b2", "b3": "b3"}
        for role, host in addrs.items():
            port = f"h{self.pid}{short[role]}"
            assert len(port) <= 15 and len(self.bridge) <= 15
            self.nodes[role] = Node(role, f"{self.tag}-{role}", f"{subnet}.{host}", port)
        self.nodes["client"].extra_addrs = self.client_addrs[1:]

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self):
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is not None and not isinstance(exc, (SystemExit,)):
            self.dump_logs()
        self.down()
        return False

    def _log(self, msg: str):
        if self.verbose:
            print(f"[halbnet {time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def _on_signal(self, signum, frame):
        # Turn SIGTERM/SIGHUP into an exception so `with` blocks unwind and clean up; SIGINT
        # already raises KeyboardInterrupt.
        raise SystemExit(128 + signum)

    def _on_alarm(self, signum, frame):
        raise Deadline(f"harness deadline of {self.deadline}s reached")

    def _save_state(self):
        state = {
            "namespaces": self._namespaces,
            "procs": [{"pid": p.pid, "starttime": p.starttime} for p in self.procs if p.alive()],
        }
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self._state_file)

    def up(self):
        t0 = time.monotonic()
        self.logdir.mkdir(parents=True, exist_ok=True)
        self._state_file = self.logdir / "harness-state.json"
        self._save_state()
        self._reaper_fd = start_reaper(self._state_file)
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
            self._old_handlers[s] = signal.getsignal(s)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGHUP, self._on_signal)
        if self.deadline:
            signal.signal(signal.SIGALRM, self._on_alarm)
            signal.setitimer(signal.ITIMER_REAL, self.deadline)
        self._up = True

        for name in [self.lan_ns] + [n.ns for n in self.nodes.values()]:
            if name in list_namespaces():
                raise HarnessError(f"namespace {name} already exists (a stale run with this PID?)")
            self._namespaces.append(name)
            self._save_state()  # recorded before it exists: the reaper tolerates a missing one
            sh(["ip", "netns", "add", name])
            sh(["ip", "-n", name, "link", "set", "lo", "up"])

        lan = self.lan_ns
        sh(["ip", "-n", lan, "link", "add", self.bridge, "type", "bridge",
            "stp_state", "0", "forward_delay", "0", "mcast_snooping", "0"])
        sh(["ip", "-n", lan, "link", "set", self.bridge, "up"])
        for n in self.nodes.values():
            # Both ends are created inside namespaces: nothing ever appears in the root one.
            sh(["ip", "-n", lan, "link", "add", n.port, "type", "veth",
                "peer", "name", "eth0", "netns", n.ns])
            sh(["ip", "-n", lan, "link", "set", n.port, "master", self.bridge])
            sh(["ip", "-n", lan, "link", "set", n.port, "up"])
            if not self.ipv6:  # no IPv6 link-local chatter (DAD, router solicitations)
                self.sysctl(n.ns, "net.ipv6.conf.all.disable_ipv6", "1")
            sh(["ip", "-n", n.ns, "addr", "add", f"{n.addr}/{self.prefix_len}", "dev", "eth0"])
            for a in n.extra_addrs:
                sh(["ip", "-n", n.ns, "addr", "add", f"{a}/{self.prefix_len}", "dev", "eth0"])
            sh(["ip", "-n", n.ns, "link", "set", "eth0", "up"])
            n.mac = json.loads(sh(["ip", "-n", n.ns, "-j", "link", "show", "eth0"]).stdout)[0]["address"]
        for role in LB_NODES:
            for k, v in self.lb_sysctls.items():
                self.sysctl(self.nodes[role].ns, k, v)
        self.setup_seconds = time.monotonic() - t0
        self._log(f"topology {self.tag} up in {self.setup_seconds * 1000:.0f} ms; logs in {self.logdir}")

    def down(self):
        """Stops every process and deletes every namespace. Idempotent; never raises."""
        if not self._up:
            return
        t0 = time.monotonic()
        if self.deadline:
            signal.setitimer(signal.ITIMER_REAL, 0)
        # Ignore further signals while cleaning up: a second Ctrl-C must not leave half the
        # topology behind.
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        try:
            for p in reversed(self.procs):
                with contextlib.suppress(Exception):
                    if p.alive():
                        p.signal(signal.SIGTERM)
            deadline = time.monotonic() + 3.0
            for p in reversed(self.procs):
                with contextlib.suppress(Exception):
                    p.wait(max(0.0, deadline - time.monotonic()))
                    if p.alive():
                        p.signal(signal.SIGKILL)
                        p.wait(5.0)
            for ns in reversed(self._namespaces):
                with contextlib.suppress(Exception):
                    sh(["ip", "netns", "del", ns], check=False)
            remaining = set(self._namespaces) & set(list_namespaces())
            if remaining:
                print(f"[halbnet] WARNING: namespaces left: {sorted(remaining)}", file=sys.stderr)
            else:
                self._namespaces = []
            with contextlib.suppress(Exception):
                self._save_state()
            if self._reaper_fd is not None:
                os.close(self._reaper_fd)  # the reaper wakes, finds nothing left, and exits
                self._reaper_fd = None
        finally:
            for s, h in self._old_handlers.items():
                with contextlib.suppress(Exception):
                    signal.signal(s, h if h is not None else signal.SIG_DFL)
            self._old_handlers = {}
            self._up = False
            self.teardown_seconds = time.monotonic() - t0
            self._log(f"topology {self.tag} down in {self.teardown_seconds * 1000:.0f} ms")

    def set_deadline(self, seconds: float):
        """(Re)arms the harness's own deadline, counted from now."""
        self.deadline = seconds
        if signal.SIGALRM not in self._old_handlers:
            self._old_handlers[signal.SIGALRM] = signal.getsignal(signal.SIGALRM)
        signal.signal(signal.SIGALRM, self._on_alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)

    def leftovers(self) -> List[str]:
        """What of this run still exists: namespaces, root-namespace links, live processes."""
        left = [f"netns {ns}" for ns in list_namespaces() if ns.startswith(self.tag + "-")]
        links = json.loads(sh(["ip", "-j", "link", "show"]).stdout)
        left += [f"link {l['ifname']}" for l in links if l["ifname"].startswith(f"h{self.pid}")]
        left += [f"process {p.name} pid {p.pid}" for p in self.procs if pid_alive(p.pid, p.starttime)]
        return left

    # -- running things in namespaces ----------------------------------------------------------

    def ns(self, role: str) -> str:
        return self.nodes[role].ns

    def sysctl(self, ns: str, key: str, value: str):
        path = "/proc/sys/" + key.replace(".", "/")
        sh(["ip", "netns", "exec", ns, "sh", "-c", f"echo {value} > {path}"])

    def run(self, role: str, argv: List[str], *, timeout: float = 10.0, check=True):
        """Runs a short command inside a node's namespace and returns its CompletedProcess."""
        return sh(["ip", "netns", "exec", self.ns(role)] + argv, timeout=timeout, check=check)

    def spawn(self, role: str, name: str, argv: List[str], env: Optional[Dict[str, str]] = None) -> Proc:
        """Starts a long-running process in a node's namespace; its output goes to
        <logdir>/<name>.log. It dies with the harness (parent-death signal) and is recorded for
        the reaper."""
        log = self.logdir / f"{name}.log"
        f = open(log, "ab")
        f.write(f"--- {time.strftime('%H:%M:%S')} start: {' '.join(argv)}\n".encode())
        f.flush()
        full_env = dict(os.environ)
        full_env.update(env or {})
        # `ip netns exec` and setpriv exec in place, so the PID is the program's own.
        popen = subprocess.Popen(
            ["setpriv", "--pdeathsig", "KILL", "--", "ip", "netns", "exec", self.ns(role)] + argv,
            stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, env=full_env,
            start_new_session=True, close_fds=True)
        f.close()
        p = Proc(name, self.ns(role), argv, popen, log, proc_starttime(popen.pid))
        self.procs.append(p)
        self._save_state()
        return p

    def kill9(self, proc: Proc):
        """SIGKILL, as in a crash; waits until the process is gone."""
        proc.signal(signal.SIGKILL)
        if proc.wait(5.0) is None:
            raise HarnessError(f"{proc.name} (pid {proc.pid}) survived SIGKILL")
        self._save_state()

    def dump_logs(self, lines: int = 30):
        for p in self.procs:
            print(f"----- {p.name} (pid {p.pid}, exit {p.popen.returncode}) {p.log}", file=sys.stderr)
            print(p.log_tail(lines), file=sys.stderr)

    # -- backends ----------------------------------------------------------------------------

    def start_backends(self, *, session_cookie: str = "", wait: float = 10.0) -> List[Proc]:
        procs = []
        for b in BACKENDS:
            argv = [sys.executable, str(HERE / "backend.py"), "--name", b,
                    "--http", f"0.0.0.0:{HTTP_PORT}", "--echo", f"0.0.0.0:{ECHO_PORT}"]
            if session_cookie:
                argv += ["--session-cookie", session_cookie]
            procs.append(self.spawn(b, f"backend-{b}", argv))
        for b in BACKENDS:
            self.wait_for(lambda b=b: self.tcp_open("client", self.nodes[b].addr, HTTP_PORT),
                          wait, f"backend {b} listening")
            self.wait_for(lambda b=b: self.tcp_open("client", self.nodes[b].addr, ECHO_PORT),
                          wait, f"backend {b} echo listening")
        return procs

    # -- probes ------------------------------------------------------------------------------

    def wait_for(self, cond, timeout: float, what: str, interval: float = 0.01):
        return wait_for(cond, timeout, what, interval)

    def tcp_open(self, role: str, host: str, port: int) -> bool:
        r = self.run(role, [sys.executable, str(HERE / "halbnet.py"), "connect", host, str(port)],
                     check=False, timeout=5)
        return r.returncode == 0

    def http_get(self, role: str, host: str, port: int = HTTP_PORT, *, source: str = "",
                 path: str = "/") -> Optional[str]:
        """One HTTP GET from a namespace; returns the X-Backend header or None on failure."""
        argv = [sys.executable, str(HERE / "halbnet.py"), "http-get", f"http://{host}:{port}{path}"]
        if source:
            argv += ["--source", source]
        r = self.run(role, argv, check=False, timeout=5)
        return r.stdout.strip() if r.returncode == 0 else None

    def echo(self, role: str, host: str, port: int = ECHO_PORT, *, source: str = "") -> bool:
        argv = [sys.executable, str(HERE / "halbnet.py"), "echo", host, str(port)]
        if source:
            argv += ["--source", source]
        return self.run(role, argv, check=False, timeout=5).returncode == 0

    def ping(self, role: str, addr: str) -> bool:
        return self.run(role, ["ping", "-c", "1", "-W", "1", "-n", "-q", addr],
                        check=False, timeout=5).returncode == 0

    # -- failure injection -------------------------------------------------------------------

    def link_down(self, role: str, how: str = "cut"):
        """Takes a node off the LAN.
        cut:     detach its bridge port — the node notices nothing (carrier stays up), frames
                 just stop, as when the other side sees a VM lose power or a switch port die.
        carrier: set the node's eth0 down — the node's kernel sees the link go away."""
        n = self.nodes[role]
        if how == "cut":
            sh(["ip", "-n", self.lan_ns, "link", "set", n.port, "nomaster"])
        elif how == "carrier":
            sh(["ip", "-n", n.ns, "link", "set", "eth0", "down"])
        else:
            raise ValueError(how)

    def link_up(self, role: str, how: str = "cut"):
        n = self.nodes[role]
        if how == "cut":
            sh(["ip", "-n", self.lan_ns, "link", "set", n.port, "master", self.bridge])
        elif how == "carrier":
            sh(["ip", "-n", n.ns, "link", "set", "eth0", "up"])
        else:
            raise ValueError(how)

    # -- VIP observation ---------------------------------------------------------------------

    def holds_addr(self, role: str, addr: str) -> bool:
        data = json.loads(sh(["ip", "-n", self.ns(role), "-j", "addr", "show"]).stdout)
        return any(a.get("local") == addr for link in data for a in link.get("addr_info", []))

    def add_vip(self, role: str, vip: Optional[str] = None, garp: bool = True):
        """Configures the VIP on a node and announces it (what a master does; for tests of the
        harness and the drill that run without halb)."""
        vip = vip or self.vip
        sh(["ip", "-n", self.ns(role), "addr", "add", f"{vip}/{self.prefix_len}", "dev", "eth0"])
        if garp:
            self.run(role, [sys.executable, str(HERE / "halbnet.py"), "garp", "eth0", vip])

    def del_vip(self, role: str, vip: Optional[str] = None):
        vip = vip or self.vip
        sh(["ip", "-n", self.ns(role), "addr", "del", f"{vip}/{self.prefix_len}", "dev", "eth0"])

    def vip_holders(self, vip: Optional[str] = None) -> List[str]:
        """LB nodes that have the VIP configured (ip -n NS addr)."""
        vip = vip or self.vip
        return [r for r in LB_NODES if self.holds_addr(r, vip)]

    def arp_responders(self, ip: Optional[str] = None, window: float = 0.3) -> List[str]:
        """Nodes that answer an ARP request for `ip` broadcast from the client, by MAC
        (unknown MACs are returned as 'mac:<addr>'). Every reply within `window` counts."""
        ip = ip or self.vip
        r = self.run("client", [sys.executable, str(HERE / "halbnet.py"), "arp-probe", "eth0", ip,
                                "--window", str(window)], timeout=window + 5)
        macs = json.loads(r.stdout)["macs"]
        by_mac = {n.mac: n.role for n in self.nodes.values()}
        return sorted(by_mac.get(m, f"mac:{m}") for m in macs)

    def client_neighbour(self, ip: Optional[str] = None) -> Optional[str]:
        """Which node the client's ARP cache points at for `ip` (None if no entry)."""
        ip = ip or self.vip
        data = json.loads(sh(["ip", "-n", self.ns("client"), "-j", "neigh", "show", ip]).stdout)
        for e in data:
            mac = e.get("lladdr")
            if mac:
                return {n.mac: n.role for n in self.nodes.values()}.get(mac, f"mac:{mac}")
        return None

    def vip_watcher(self, vip: Optional[str] = None) -> "VipWatcher":
        return VipWatcher(self, vip or self.vip)


class VipWatcher:
    """Follows `ip monitor address` in both LB namespaces and keeps the timeline of who held
    the VIP, so a scenario can check "never two holders" exactly instead of by sampling."""

    SENTINEL = "127.0.0.77"

    def __init__(self, topo: Topology, vip: str):
        self.sentinel_seen: Dict[str, bool] = {}
        self.topo = topo
        self.vip = vip
        self.lock = threading.Lock()
        self.held: Dict[str, bool] = {}
        self.events: List[tuple] = []  # (monotonic, role, "add"|"del")
        self.procs: List[Proc] = []
        self.threads: List[threading.Thread] = []

    def __enter__(self):
        for role in LB_NODES:
            p = self.topo.spawn(role, f"vipmon-{role}", ["ip", "monitor", "address"])
            # spawn() logs to a file; follow it rather than piping, so the monitor's lifetime
            # is owned by the topology like every other process.
            self.procs.append(p)
        for role, p in zip(LB_NODES, self.procs):
            t = threading.Thread(target=self._follow, args=(role, p), daemon=True)
            t.start()
            self.threads.append(t)
        # A monitor is subscribed once it reports a sentinel address we add on lo; only then is
        # the current state read, after which every change arrives as an event. The monitor may
        # not have subscribed yet when the first add happens, so the sentinel is re-added until
        # one of its events is seen.
        def sentinel_seen(role: str) -> bool:
            if self.sentinel_seen.get(role):
                return True
            ns = self.topo.ns(role)
            sh(["ip", "-n", ns, "addr", "del", self.SENTINEL + "/32", "dev", "lo"], check=False)
            sh(["ip", "-n", ns, "addr", "add", self.SENTINEL + "/32", "dev", "lo"])
            return False

        try:
            for role in LB_NODES:
                wait_for(lambda role=role: sentinel_seen(role), 10.0, f"ip monitor subscribed in {role}",
                         interval=0.1)
        finally:
            for role in LB_NODES:
                sh(["ip", "-n", self.topo.ns(role), "addr", "del", self.SENTINEL + "/32", "dev", "lo"],
                   check=False)
        for role in LB_NODES:
            held = self.topo.holds_addr(role, self.vip)
            with self.lock:
                self.held[role] = held
        return self

    def __exit__(self, *a):
        for p in self.procs:
            p.stop(1.0)
        for t in self.threads:
            t.join(2.0)
        return False

    def _follow(self, role: str, p: Proc):
        with open(p.log, "r", errors="replace") as f:
            while True:
                line = f.readline()
                if not line:
                    if not p.alive():
                        return
                    time.sleep(0.005)
                    continue
                if f" {self.SENTINEL}/" in line:
                    self.sentinel_seen[role] = True
                    continue
                if f" {self.vip}/" not in line:
                    continue
                kind = "del" if line.startswith("Deleted") else "add"
                with self.lock:
                    self.events.append((time.monotonic(), role, kind))
                    self.held[role] = kind == "add"

    def holders(self) -> List[str]:
        with self.lock:
            return sorted(r for r, h in self.held.items() if h)

    def timeline(self) -> List[tuple]:
        with self.lock:
            return list(self.events)


# --------------------------------------------------------------------------------------------
# probes that run inside a namespace (invoked through `ip netns exec NS halbnet.py ...`)


def _cmd_arp_probe(iface: str, target: str, window: float) -> int:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
    s.bind((iface, 0x0806))
    mac = s.getsockname()[4]
    # our own IPv4 address on the interface
    out = subprocess.run(["ip", "-j", "-4", "addr", "show", "dev", iface], capture_output=True,
                         text=True, check=True).stdout
    src_ip = json.loads(out)[0]["addr_info"][0]["local"]
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, socket.inet_aton(src_ip),
                      b"\0" * 6, socket.inet_aton(target))
    frame = b"\xff" * 6 + mac + struct.pack("!H", 0x0806) + arp
    s.send(frame)
    macs = {}
    end = time.monotonic() + window
    while True:
        left = end - time.monotonic()
        if left <= 0:
            break
        rd, _, _ = select.select([s], [], [], left)
        if not rd:
            continue
        pkt = s.recv(2048)
        if len(pkt) < 42:
            continue
        # ARP after the Ethernet header: htype, ptype, hlen, plen, then op, sha, spa
        op, sha, spa = struct.unpack("!6xH6s4s", pkt[14:32])
        if op == 2 and socket.inet_ntoa(spa) == target:
            m = ":".join(f"{b:02x}" for b in sha)
            macs[m] = macs.get(m, 0) + 1
    print(json.dumps({"target": target, "macs": sorted(macs), "replies": macs}))
    return 0


def _cmd_garp(iface: str, ip: str, count: int, interval: float) -> int:
    """Gratuitous ARP (an unsolicited reply, sender = target = ip) from this namespace."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
    s.bind((iface, 0x0806))
    mac = s.getsockname()[4]
    a = socket.inet_aton(ip)
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 2, mac, a, b"\xff" * 6, a)
    for i in range(count):
        s.send(b"\xff" * 6 + mac + struct.pack("!H", 0x0806) + arp)
        if i + 1 < count:
            time.sleep(interval)
    return 0


def _connect(host: str, port: int, source: str, timeout: float) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    if source:
        s.bind((source, 0))
    s.connect((host, port))
    return s


def _cmd_http_get(url: str, source: str, timeout: float) -> int:
    assert url.startswith("http://")
    hostport, _, path = url[len("http://"):].partition("/")
    host, _, port = hostport.partition(":")
    s = _connect(host, int(port or 80), source, timeout)
    s.sendall(f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode(errors="replace").split("\r\n")
    if not head or " 200 " not in head[0] + " ":
        print(head[0] if head else "no response", file=sys.stderr)
        return 1
    for h in head[1:]:
        k, _, v = h.partition(":")
        if k.strip().lower() == "x-backend":
            print(v.strip())
            return 0
    print("?")
    return 0


def _cmd_echo(host: str, port: int, source: str, timeout: float) -> int:
    s = _connect(host, port, source, timeout)
    msg = os.urandom(64)
    s.sendall(msg)
    got = b""
    while len(got) < len(msg):
        chunk = s.recv(len(msg) - len(got))
        if not chunk:
            break
        got += chunk
    return 0 if got == msg else 1


def _cmd_connect(host: str, port: int, timeout: float) -> int:
    try:
        _connect(host, port, "", timeout).close()
        return 0
    except OSError:
        return 1


def main(argv: List[str]) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="halbnet.py")
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("arp-probe")
    a.add_argument("iface")
    a.add_argument("target")
    a.add_argument("--window", type=float, default=0.3)
    h = sub.add_parser("http-get")
    h.add_argument("url")
    h.add_argument("--source", default="")
    h.add_argument("--timeout", type=float, default=2.0)
    e = sub.add_parser("echo")
    e.add_argument("host")
    e.add_argument("port", type=int)
    e.add_argument("--source", default="")
    e.add_argument("--timeout", type=float, default=2.0)
    g = sub.add_parser("garp")
    g.add_argument("iface")
    g.add_argument("ip")
    g.add_argument("--count", type=int, default=3)
    g.add_argument("--interval", type=float, default=0.02)
    c = sub.add_parser("connect")
    c.add_argument("host")
    c.add_argument("port", type=int)
    c.add_argument("--timeout", type=float, default=1.0)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "arp-probe":
            return _cmd_arp_probe(args.iface, args.target, args.window)
        if args.cmd == "http-get":
            return _cmd_http_get(args.url, args.source, args.timeout)
        if args.cmd == "echo":
            return _cmd_echo(args.host, args.port, args.source, args.timeout)
        if args.cmd == "garp":
            return _cmd_garp(args.iface, args.ip, args.count, args.interval)
        if args.cmd == "connect":
            return _cmd_connect(args.host, args.port, args.timeout)
    except OSError as ex:
        print(f"{args.cmd}: {ex}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
