// L4 bulk-throughput helper for bench/run.sh.
//   tcp_bulk sink PORT                 accepts connections, reads and discards until EOF,
//                                      then closes; runs until killed
//   tcp_bulk push PORT BYTES           connects to 127.0.0.1:PORT, sends BYTES, half-closes,
//                                      waits for the peer's close; prints "seconds bytes"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace {

constexpr size_t kBuf = 256 * 1024;

sockaddr_in loopback(int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  return a;
}

int sink(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a = loopback(port);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 128) != 0) {
    std::perror("sink: bind");
    return 1;
  }
  for (;;) {
    int c = ::accept(fd, nullptr, nullptr);
    if (c < 0) continue;
    std::thread([c] {
      std::vector<char> buf(kBuf);
      while (::recv(c, buf.data(), buf.size(), 0) > 0) {
      }
      ::close(c);
    }).detach();  // a benchmark helper process: its threads end with their connection
  }
}

int push(int port, long long bytes) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a = loopback(port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    std::perror("push: connect");
    return 1;
  }
  std::vector<char> buf(kBuf, 'x');
  auto t0 = std::chrono::steady_clock::now();
  long long left = bytes;
  while (left > 0) {
    ssize_t n = ::send(fd, buf.data(), static_cast<size_t>(std::min<long long>(left, kBuf)), 0);
    if (n <= 0) {
      std::perror("push: send");
      return 1;
    }
    left -= n;
  }
  ::shutdown(fd, SHUT_WR);
  char tmp[64];
  while (::recv(fd, tmp, sizeof tmp, 0) > 0) {
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%.6f %lld\n", secs, bytes);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 3 && !std::strcmp(argv[1], "sink")) return sink(std::atoi(argv[2]));
  if (argc >= 4 && !std::strcmp(argv[1], "push"))
    return push(std::atoi(argv[2]), std::atoll(argv[3]));
  std::fputs("usage: tcp_bulk sink PORT | tcp_bulk push PORT BYTES\n", stderr);
  return 2;
}
