#!/usr/bin/env python3
"""Can halb run as an unprivileged user with only the three capabilities its unit grants?

CTest: netns.caps_nonroot (label netns, needs root). The driver builds a private network
namespace (a veth pair, nothing in the root namespace), then runs the probe inside it three
times through setpriv, exactly as halb.service starts halb (User=, AmbientCapabilities=,
CapabilityBoundingSet=, NoNewPrivileges=):

  1. as `nobody` with CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE ambient  -> all must work
  2. as `nobody` with no capabilities                                        -> all must fail
     (the negative control: it proves that each operation really needs a capability)
  3. as `nobody` with every capability but the one each operation needs     -> that one fails
     (so every capability in the unit is needed, by at least one operation)

Each operation is what a halb subsystem does at run time:
  vrrp_socket      raw IPPROTO_VRRP socket, SO_BINDTODEVICE, multicast join, send an advert
  garp             AF_PACKET socket, send a gratuitous ARP
  vip_netlink      RTM_NEWADDR of a VIP with a finite lifetime and IFA_F_NODAD, then delete it
  listen_vip_80    IP_FREEBIND listener on port 80 of an address the node does not hold
  tcp_repair       dump an established TCP socket with TCP_REPAIR and re-create it on an
                   absent address with IP_FREEBIND + IP_TRANSPARENT (connection continuity)
  rt_fifo1         SCHED_FIFO priority 1 for the VRRP control thread: needs no capability but
                   RLIMIT_RTPRIO >= 1 (the unit's LimitRTPRIO=1); checked with and without that
                   limit when this machine lets root raise it (CAP_SYS_RESOURCE), else reported

Run as `caps_probe.py` (the test) or `caps_probe.py --probe` (one probe, prints JSON).
"""
import errno
import json
import os
import socket
import struct
import subprocess
import sys
import time

SKIP = 77
USER, GROUP = "nobody", "nogroup"
CAPS = ["net_admin", "net_raw", "net_bind_service"]
# operation -> the capability it needs (the one whose absence must make it fail)
NEEDS = {
    "vrrp_socket": "net_raw",
    "garp": "net_raw",
    "vip_netlink": "net_admin",
    "listen_vip_80": "net_bind_service",
    "tcp_repair": "net_admin",
}
IFACE, NODE_ADDR, VIP, ABSENT = "veth0", "10.99.0.1", "10.99.0.100", "10.99.0.201"

# --------------------------------------------------------------------------- the probe

SOL_TCP = 6
TCP_REPAIR, TCP_REPAIR_QUEUE, TCP_QUEUE_SEQ = 19, 20, 21
TCP_RECV_QUEUE, TCP_SEND_QUEUE = 1, 2
TCP_REPAIR_OFF_NO_WP = -1
IP_TRANSPARENT, IP_FREEBIND = 19, 15
IPPROTO_VRRP = 112


def op_vrrp_socket():
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_VRRP)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, IFACE.encode())
    mreq = socket.inet_aton("224.0.0.18") + socket.inet_aton(NODE_ADDR)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
    # VRRPv3 advert: version 3 type 1, vrid 51, priority 100, 1 address, interval 10 cs
    advert = struct.pack("!BBBBHH4s", 0x31, 51, 100, 1, 10, 0, socket.inet_aton(VIP))
    s.sendto(advert, ("224.0.0.18", 0))
    s.close()


def op_garp():
    s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0806))
    s.bind((IFACE, 0x0806))
    mac = open(f"/sys/class/net/{IFACE}/address").read().strip()
    sha = bytes.fromhex(mac.replace(":", ""))
    vip = socket.inet_aton(VIP)
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, sha, vip, b"\0" * 6, vip)
    s.sendto(arp, (IFACE, 0x0806, 0, 0, b"\xff" * 6))
    s.close()


def _nl_addr(msg_type, flags, ifindex, addr, prefix, valid_lft=None, ifa_flags=0):
    def attr(t, payload):
        a = struct.pack("HH", 4 + len(payload), t) + payload
        return a + b"\0" * (-len(a) % 4)

    body = struct.pack("BBBBI", socket.AF_INET, prefix, 0, 0, ifindex)
    body += attr(2, socket.inet_aton(addr))  # IFA_LOCAL
    body += attr(1, socket.inet_aton(addr))  # IFA_ADDRESS
    if valid_lft is not None:  # IFA_CACHEINFO: preferred, valid, cstamp, tstamp
        body += attr(6, struct.pack("IIII", valid_lft, valid_lft, 0, 0))
    if ifa_flags:
        body += attr(8, struct.pack("I", ifa_flags))  # IFA_FLAGS
    return struct.pack("IHHII", 16 + len(body), msg_type, flags, 1, 0) + body


def _nl_call(msg):
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)  # NETLINK_ROUTE
    s.bind((0, 0))
    s.send(msg)
    data = s.recv(65536)
    s.close()
    _, mtype = struct.unpack("IH", data[:6])
    if mtype == 2:  # NLMSG_ERROR
        err = struct.unpack("i", data[16:20])[0]
        if err != 0:
            raise OSError(-err, os.strerror(-err))


def op_vip_netlink():
    ifindex = socket.if_nametoindex(IFACE)
    NLM_F_REQUEST, NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE = 1, 4, 0x400, 0x100
    IFA_F_NODAD = 0x02
    _nl_call(_nl_addr(20, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, ifindex, VIP, 24,
                      valid_lft=5, ifa_flags=IFA_F_NODAD))  # RTM_NEWADDR
    _nl_call(_nl_addr(21, NLM_F_REQUEST | NLM_F_ACK, ifindex, VIP, 24))  # RTM_DELADDR


def op_listen_vip_80():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((VIP, 80))
    s.listen(8)
    s.close()


def op_tcp_repair():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    cli = socket.create_connection(srv.getsockname(), timeout=2)
    peer, _ = srv.accept()
    cli.sendall(b"ping")
    assert peer.recv(4) == b"ping"
    time.sleep(0.05)  # let the ACK arrive: an idle socket is what halb dumps
    # dump (what the master does for idle connections)
    peer.setsockopt(SOL_TCP, TCP_REPAIR, 1)
    peer.setsockopt(SOL_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)
    snd = struct.unpack("I", peer.getsockopt(SOL_TCP, TCP_QUEUE_SEQ, 4))[0]
    peer.setsockopt(SOL_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)
    rcv = struct.unpack("I", peer.getsockopt(SOL_TCP, TCP_QUEUE_SEQ, 4))[0]
    peer.setsockopt(SOL_TCP, TCP_REPAIR, TCP_REPAIR_OFF_NO_WP)
    # restore (what the new master does before it holds the VIP)
    r = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    r.setsockopt(SOL_TCP, TCP_REPAIR, 1)
    r.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
    r.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
    r.setsockopt(SOL_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)
    r.setsockopt(SOL_TCP, TCP_QUEUE_SEQ, struct.pack("I", rcv))  # may exceed INT_MAX
    r.setsockopt(SOL_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)
    r.setsockopt(SOL_TCP, TCP_QUEUE_SEQ, struct.pack("I", snd))
    r.bind((ABSENT, 7000))
    r.connect(("10.99.0.2", cli.getsockname()[1]))  # repair mode: no packet is sent
    r.setsockopt(SOL_TCP, TCP_REPAIR, TCP_REPAIR_OFF_NO_WP)
    for s in (r, peer, cli, srv):
        s.close()


def op_rt_fifo1():
    SCHED_RESET_ON_FORK = 0x40000000
    os.sched_setscheduler(0, os.SCHED_FIFO | SCHED_RESET_ON_FORK, os.sched_param(1))


OPS = {
    "vrrp_socket": op_vrrp_socket,
    "garp": op_garp,
    "vip_netlink": op_vip_netlink,
    "listen_vip_80": op_listen_vip_80,
    "tcp_repair": op_tcp_repair,
    "rt_fifo1": op_rt_fifo1,
}
CAP_OPS = [op for op in OPS if op in NEEDS]


def probe():
    out = {"uid": os.getuid(), "caps": _caps_line()}
    for name, fn in OPS.items():
        try:
            fn()
            out[name] = "ok"
        except OSError as e:
            out[name] = errno.errorcode.get(e.errno, str(e.errno))
        except Exception as e:  # noqa: BLE001 - reported, judged by the driver
            out[name] = f"error: {e!r}"
    print(json.dumps(out))
    return 0


def _caps_line():
    for line in open("/proc/self/status"):
        if line.startswith("CapEff:"):
            return line.split()[1]
    return "?"


# --------------------------------------------------------------------------- the driver


def sh(*argv, check=True):
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=20)


def run_probe(ns, caps, rtprio=False):
    """Runs the probe as nobody in `ns` with `caps` ambient (and only those in the bounding set,
    with no_new_privs), the way systemd starts halb.service; rtprio: with LimitRTPRIO=1."""
    capset = ",".join(["-all"] + [f"+{c}" for c in caps])
    limit = ["prlimit", "--rtprio=1:1"] if rtprio else []
    argv = ["ip", "netns", "exec", ns] + limit + ["setpriv", f"--reuid={USER}", f"--regid={GROUP}",
            "--init-groups", f"--inh-caps={capset}", f"--ambient-caps={capset}",
            f"--bounding-set={capset}", "--no-new-privs", "--",
            sys.executable, os.path.abspath(__file__), "--probe"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd="/")
    if r.returncode != 0:
        raise RuntimeError(f"probe failed to run: {r.stderr}")
    return json.loads(r.stdout)


def main():
    if os.geteuid() != 0:
        print("SKIP: needs root (network namespaces)", file=sys.stderr)
        return SKIP
    for tool in ("ip", "setpriv"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode:
            print(f"SKIP: {tool} missing", file=sys.stderr)
            return SKIP
    ns = f"hbc{os.getpid()}-caps"
    failures = []
    t0 = time.monotonic()
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1")
        sh("ip", "-n", ns, "addr", "add", f"{NODE_ADDR}/24", "dev", "veth0")
        sh("ip", "-n", ns, "addr", "add", "10.99.0.2/24", "dev", "veth1")
        for i in ("veth0", "veth1"):
            sh("ip", "-n", ns, "link", "set", i, "up")

        rt = subprocess.run(["prlimit", "--rtprio=1:1", "true"], capture_output=True).returncode == 0
        granted = run_probe(ns, CAPS, rtprio=rt)
        print(f"nobody + {' '.join(CAPS)}{' + LimitRTPRIO=1' if rt else ''}: {granted}")
        if granted["uid"] == 0:
            failures.append("the probe ran as root")
        for op in CAP_OPS + (["rt_fifo1"] if rt else []):
            if granted[op] != "ok":
                failures.append(f"{op} fails with the unit's capabilities: {granted[op]}")
        if not rt:
            print("rt_fifo1: not measurable here (root cannot raise RLIMIT_RTPRIO: no CAP_SYS_RESOURCE)")

        none = run_probe(ns, [])
        print(f"nobody, no capabilities, no LimitRTPRIO: {none}")
        for op in OPS:
            if none[op] not in ("EPERM", "EACCES"):
                failures.append(f"{op} did not fail without capabilities: {none[op]}")
        if rt:
            rt_only = run_probe(ns, [], rtprio=True)
            print(f"nobody, no capabilities, LimitRTPRIO=1: {rt_only}")
            if rt_only["rt_fifo1"] != "ok":
                failures.append(f"rt_fifo1 needs more than RLIMIT_RTPRIO: {rt_only['rt_fifo1']}")

        for cap in CAPS:
            rest = [c for c in CAPS if c != cap]
            partial = run_probe(ns, rest, rtprio=rt)
            print(f"nobody without {cap}: {partial}")
            for op, needed in NEEDS.items():
                want_fail = needed == cap
                if want_fail and partial[op] not in ("EPERM", "EACCES"):
                    failures.append(f"{op} worked without {cap}: {partial[op]}")
                if not want_fail and partial[op] != "ok":
                    failures.append(f"{op} failed without {cap} (it should need {needed} only): {partial[op]}")
    finally:
        sh("ip", "netns", "del", ns, check=False)
    left = ns in sh("ip", "netns", "list").stdout
    if left:
        failures.append(f"namespace {ns} left behind")
    print(f"caps_probe: {len(failures)} failure(s) in {time.monotonic() - t0:.2f}s")
    for f in failures:
        print(f"FAIL: {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--probe"]:
        sys.exit(probe())
    sys.exit(main())
