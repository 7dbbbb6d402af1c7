#include "tests/balancer/test_backends.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>

namespace halb::testing {

namespace {

int listenLoopback(uint16_t& port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 512) != 0)
    throw std::runtime_error("test backend: bind/listen failed");
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  port = ntohs(a.sin_port);
  return fd;
}

std::string lowerStr(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Header value (first), case-insensitive; "" when absent.
std::string headerOf(const std::string& head, const std::string& name) {
  std::string lh = lowerStr(head);
  std::string key = "\r\n" + lowerStr(name) + ":";
  size_t p = lh.find(key);
  if (p == std::string::npos) return "";
  p += key.size();
  size_t e = head.find("\r\n", p);
  std::string v = head.substr(p, e - p);
  while (!v.empty() && v.front() == ' ') v.erase(0, 1);
  return v;
}

bool sendAll(int fd, std::string_view d) {
  while (!d.empty()) {
    ssize_t n = ::send(fd, d.data(), d.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    d.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// Reads until `buf` holds `want` bytes or more; false on EOF/error.
bool readAtLeast(int fd, std::string& buf, size_t want) {
  char tmp[16384];
  while (buf.size() < want) {
    ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
    if (n <= 0) return false;
    buf.append(tmp, static_cast<size_t>(n));
  }
  return true;
}

bool readUntil(int fd, std::string& buf, std::string_view marker, size_t from = 0) {
  char tmp[16384];
  while (buf.find(marker, from) == std::string::npos) {
    ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
    if (n <= 0) return false;
    buf.append(tmp, static_cast<size_t>(n));
  }
  return true;
}

int queryInt(const std::string& path, const std::string& key, int def) {
  size_t p = path.find(key + "=");
  if (p == std::string::npos) return def;
  return std::atoi(path.c_str() + p + key.size() + 1);
}

}  // namespace

// ---------------------------------------------------------------------------------------

HttpBackend::HttpBackend(std::string name) : name_(std::move(name)) {
  listenFd_ = listenLoopback(port_);
  acceptThread_ = std::thread([this] { acceptLoop(); });
}

HttpBackend::~HttpBackend() {
  kill();
  if (acceptThread_.joinable()) acceptThread_.join();
  std::vector<std::thread> ts;
  {
    std::lock_guard l(mu_);
    ts.swap(threads_);
  }
  for (auto& t : ts) t.join();
}

void HttpBackend::kill() {
  if (dead_.exchange(true)) return;
  ::shutdown(listenFd_, SHUT_RDWR);
  std::lock_guard l(mu_);
  for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
}

std::string HttpBackend::lastRequestHead() const {
  std::lock_guard l(mu_);
  return lastHead_;
}

void HttpBackend::acceptLoop() {
  for (;;) {
    int fd = ::accept4(listenFd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (dead_) break;
      continue;
    }
    if (dead_) {
      ::close(fd);
      break;
    }
    ++accepted_;
    std::lock_guard l(mu_);
    fds_.push_back(fd);
    threads_.emplace_back([this, fd] { serve(fd); });
  }
  ::close(listenFd_);
}

void HttpBackend::serve(int fd) {
  std::string buf;
  for (;;) {
    if (!readUntil(fd, buf, "\r\n\r\n")) break;
    size_t headEnd = buf.find("\r\n\r\n") + 4;
    std::string head = buf.substr(0, headEnd);
    buf.erase(0, headEnd);
    {
      std::lock_guard l(mu_);
      lastHead_ = head;
    }
    std::string path = head.substr(head.find(' ') + 1);
    path = path.substr(0, path.find(' '));
    // Request body.
    std::string body;
    std::string cl = headerOf(head, "content-length");
    if (!cl.empty()) {
      size_t n = std::stoul(cl);
      if (!readAtLeast(fd, buf, n)) break;
      body = buf.substr(0, n);
      buf.erase(0, n);
    } else if (lowerStr(headerOf(head, "transfer-encoding")) == "chunked") {
      for (;;) {
        if (!readUntil(fd, buf, "\r\n")) return;
        size_t le = buf.find("\r\n");
        size_t n = std::stoul(buf.substr(0, le), nullptr, 16);
        buf.erase(0, le + 2);
        if (n == 0) {
          if (!readUntil(fd, buf, "\r\n")) return;  // no trailers in these tests
          buf.erase(0, buf.find("\r\n") + 2);
          break;
        }
        if (!readAtLeast(fd, buf, n + 2)) return;
        body += buf.substr(0, n);
        buf.erase(0, n + 2);
      }
    }
    ++served_;
    if (path == "/hang") {
      while (!dead_) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      break;
    }
    if (path == "/reset") break;
    if (path.rfind("/slow", 0) == 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(queryInt(path, "ms", 100)));
    if (path == "/ws") {
      sendAll(
          fd,
          "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
      char tmp[4096];
      for (;;) {
        ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
        if (n <= 0) break;
        if (!sendAll(fd, std::string_view(tmp, static_cast<size_t>(n)))) break;
      }
      ::shutdown(fd, SHUT_WR);
      break;
    }
    std::string respBody;
    std::string extra;
    bool chunked = false, close = false;
    if (path == "/echo") {
      respBody = body;
    } else if (path == "/chunked") {
      chunked = true;
    } else if (path.rfind("/big", 0) == 0) {
      respBody.assign(static_cast<size_t>(queryInt(path, "n", 1000)), 'x');
    } else {
      respBody = "server=" + name_ + " path=" + path + " xff=" + headerOf(head, "x-forwarded-for") +
                 " fwd=" + headerOf(head, "forwarded") +
                 " proto=" + headerOf(head, "x-forwarded-proto") +
                 " conn=" + headerOf(head, "connection") + " te=" + headerOf(head, "te");
    }
    if (path == "/close") close = true;
    std::string resp = "HTTP/1.1 200 OK\r\nX-Server: " + name_ + "\r\nKeep-Alive: timeout=5\r\n";
    if (close) resp += "Connection: close\r\n";
    if (chunked) {
      resp +=
          "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\n\r\n";
    } else {
      resp += "Content-Length: " + std::to_string(respBody.size()) + "\r\n\r\n" + respBody;
    }
    bool isHead = head.rfind("HEAD ", 0) == 0;
    if (isHead) resp = resp.substr(0, resp.find("\r\n\r\n") + 4);
    if (!sendAll(fd, resp) || close) break;
  }
  ::shutdown(fd, SHUT_RDWR);
  std::lock_guard l(mu_);
  std::erase(fds_, fd);
  ::close(fd);
}

// ---------------------------------------------------------------------------------------

EchoBackend::EchoBackend(std::string name, bool greet) : name_(std::move(name)), greet_(greet) {
  listenFd_ = listenLoopback(port_);
  acceptThread_ = std::thread([this] { acceptLoop(); });
}

EchoBackend::~EchoBackend() {
  kill();
  if (acceptThread_.joinable()) acceptThread_.join();
  std::vector<std::thread> ts;
  {
    std::lock_guard l(mu_);
    ts.swap(threads_);
  }
  for (auto& t : ts) t.join();
}

void EchoBackend::kill() {
  if (dead_.exchange(true)) return;
  ::shutdown(listenFd_, SHUT_RDWR);
  std::lock_guard l(mu_);
  for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
}

std::string EchoBackend::firstBytes() const {
  std::lock_guard l(mu_);
  return first_;
}

void EchoBackend::acceptLoop() {
  for (;;) {
    int fd = ::accept4(listenFd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (dead_) break;
      continue;
    }
    if (dead_) {
      ::close(fd);
      break;
    }
    ++accepted_;
    std::lock_guard l(mu_);
    fds_.push_back(fd);
    threads_.emplace_back([this, fd] { serve(fd); });
  }
  ::close(listenFd_);
}

void EchoBackend::serve(int fd) {
  if (greet_) sendAll(fd, name_ + "\n");
  char tmp[65536];
  bool first = true;
  for (;;) {
    ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
    if (n <= 0) break;
    if (first) {
      std::lock_guard l(mu_);
      first_.assign(tmp, static_cast<size_t>(std::min<ssize_t>(n, 64)));
      first = false;
    }
    if (!sendAll(fd, std::string_view(tmp, static_cast<size_t>(n)))) break;
  }
  ::shutdown(fd, SHUT_WR);  // half-close: our FIN after theirs
  std::lock_guard l(mu_);
  std::erase(fds_, fd);
  ::close(fd);
}

// ---------------------------------------------------------------------------------------

Client::Client(uint16_t port, std::chrono::milliseconds timeout) {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval tv{};
  tv.tv_sec = timeout.count() / 1000;
  tv.tv_usec = (timeout.count() % 1000) * 1000;
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

Client::~Client() {
  if (fd_ >= 0) ::close(fd_);
}

bool Client::send(std::string_view data) {
  return fd_ >= 0 && sendAll(fd_, data);
}

void Client::shutdownWrite() {
  ::shutdown(fd_, SHUT_WR);
}

bool Client::fill() {
  if (eof_) return false;
  char tmp[65536];
  ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
  if (n == 0) eof_ = true;
  if (n <= 0) return false;
  buf_.append(tmp, static_cast<size_t>(n));
  return true;
}

bool Client::readResponse(Response& r) {
  r = Response{};
  while (buf_.find("\r\n\r\n") == std::string::npos)
    if (!fill()) return false;
  size_t headEnd = buf_.find("\r\n\r\n") + 4;
  r.head = buf_.substr(0, headEnd);
  buf_.erase(0, headEnd);
  r.status = std::atoi(r.head.c_str() + 9);
  std::string cl = headerOf(r.head, "content-length");
  if (r.status == 101 || r.status == 204 || r.status == 304 || r.status < 200) return true;
  if (!cl.empty()) {
    size_t n = std::stoul(cl);
    while (buf_.size() < n)
      if (!fill()) return false;
    r.body = buf_.substr(0, n);
    buf_.erase(0, n);
  } else if (lowerStr(headerOf(r.head, "transfer-encoding")) == "chunked") {
    for (;;) {
      while (buf_.find("\r\n") == std::string::npos)
        if (!fill()) return false;
      size_t le = buf_.find("\r\n");
      size_t n = std::stoul(buf_.substr(0, le), nullptr, 16);
      buf_.erase(0, le + 2);
      if (n == 0) {
        while (buf_.find("\r\n") == std::string::npos)
          if (!fill()) return false;
        buf_.erase(0, buf_.find("\r\n") + 2);
        break;
      }
      while (buf_.size() < n + 2)
        if (!fill()) return false;
      r.body += buf_.substr(0, n);
      buf_.erase(0, n + 2);
    }
  } else {
    while (fill()) {
    }
    if (!eof_) return false;
    r.body = buf_;
    buf_.clear();
    r.closed = true;
  }
  if (lowerStr(headerOf(r.head, "connection")) == "close") {
    // Confirm the close.
    while (fill()) {
    }
    r.closed = eof_;
  }
  return true;
}

std::string Client::readN(size_t n) {
  while (buf_.size() < n)
    if (!fill()) break;
  std::string out = buf_.substr(0, std::min(n, buf_.size()));
  buf_.erase(0, out.size());
  return out;
}

bool Client::readToEof(std::string& out) {
  while (fill()) {
  }
  out += buf_;
  buf_.clear();
  return eof_;
}

Client::Response get(uint16_t port, const std::string& path, const std::string& extraHeaders) {
  Client c(port);
  Client::Response r;
  if (!c.send("GET " + path + " HTTP/1.1\r\nHost: test\r\n" + extraHeaders + "\r\n")) return r;
  c.readResponse(r);
  return r;
}

}  // namespace halb::testing
