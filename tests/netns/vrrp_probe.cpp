// A client's view of a failover, for the network-namespace tests.
//
//   vrrp_probe serve PORT NAME
//       Answers every UDP datagram on PORT with NAME (run one per node; whoever holds the
//       VIP answers the client).
//   vrrp_probe probe ADDRESS PORT INTERVAL_MS DURATION_MS
//       Sends a datagram to ADDRESS:PORT every INTERVAL_MS for DURATION_MS and prints, in
//       wall-clock milliseconds, each change of the node that answers:
//         CHANGE <ms> <name>
//       and at the end: SUMMARY sent=N replies=N maxgap_ms=N
// Bounded in time and rate by construction; it only talks to the address it is given.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

long long wallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int serve(int port, const std::string& name) {
  int fd = ::socket(AF_INET6, SOCK_DGRAM, 0);
  int off = 0;
  ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);  // IPv4 and IPv6 VIPs
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_port = htons(static_cast<uint16_t>(port));
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    std::perror("bind");
    return 1;
  }
  for (;;) {
    char buf[256];
    sockaddr_storage from{};
    socklen_t flen = sizeof from;
    ssize_t n = ::recvfrom(fd, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &flen);
    if (n < 0) continue;
    ::sendto(fd, name.data(), name.size(), 0, reinterpret_cast<sockaddr*>(&from), flen);
  }
}

int probe(const char* address, int port, int intervalMs, int durationMs) {
  sockaddr_storage to{};
  socklen_t tlen;
  int family;
  auto* a4 = reinterpret_cast<sockaddr_in*>(&to);
  auto* a6 = reinterpret_cast<sockaddr_in6*>(&to);
  if (::inet_pton(AF_INET, address, &a4->sin_addr) == 1) {
    a4->sin_family = family = AF_INET;
    a4->sin_port = htons(static_cast<uint16_t>(port));
    tlen = sizeof *a4;
  } else if (::inet_pton(AF_INET6, address, &a6->sin6_addr) == 1) {
    a6->sin6_family = family = AF_INET6;
    a6->sin6_port = htons(static_cast<uint16_t>(port));
    tlen = sizeof *a6;
  } else {
    std::fprintf(stderr, "bad address %s\n", address);
    return 2;
  }
  int fd = ::socket(family, SOCK_DGRAM, 0);
  // Unconnected on purpose: a node bound to the wildcard may answer from its own address.
  long long start = wallMs(), end = start + durationMs, nextSend = start;
  long long lastReply = 0, maxGap = 0;
  unsigned sent = 0, replies = 0;
  std::string current;
  while (wallMs() < end) {
    long long now = wallMs();
    if (now >= nextSend) {
      ::sendto(fd, "?", 1, 0, reinterpret_cast<sockaddr*>(&to), tlen);
      ++sent;
      nextSend += intervalMs;
    }
    pollfd p{fd, POLLIN, 0};
    int wait = static_cast<int>(std::max(0LL, std::min(nextSend, end) - wallMs()));
    if (::poll(&p, 1, wait) <= 0) continue;
    char buf[256];
    ssize_t n = ::recv(fd, buf, sizeof buf - 1, MSG_DONTWAIT);
    if (n <= 0) continue;
    buf[n] = 0;
    now = wallMs();
    ++replies;
    if (lastReply && now - lastReply > maxGap) maxGap = now - lastReply;
    lastReply = now;
    if (current != buf) {
      current = buf;
      std::printf("CHANGE %lld %s\n", now, buf);
      std::fflush(stdout);
    }
  }
  std::printf("SUMMARY sent=%u replies=%u maxgap_ms=%lld\n", sent, replies, maxGap);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 4 && std::strcmp(argv[1], "serve") == 0) return serve(std::atoi(argv[2]), argv[3]);
  if (argc == 6 && std::strcmp(argv[1], "probe") == 0)
    return probe(argv[2], std::atoi(argv[3]), std::atoi(argv[4]), std::atoi(argv[5]));
  std::fprintf(stderr,
               "usage: vrrp_probe serve PORT NAME | probe ADDRESS PORT INTERVAL_MS DURATION_MS\n");
  return 2;
}
