// Operator commands that talk to a running node through its admin endpoint.
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "app/cli.h"
#include "common/net.h"
#include "config/loader.h"

namespace halb::app {
namespace {

struct Reply {
  int status = 0;
  std::string body;
  std::string error;
};

// One blocking request with a 5 s deadline; the admin server closes after each response.
Reply adminRequest(const SocketAddress& addr, const std::string& method, const std::string& path) {
  Reply r;
  int fd = ::socket(addr.ip.af(), SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    r.error = std::strerror(errno);
    return r;
  }
  sockaddr_storage ss;
  socklen_t len = addr.toSockaddr(ss);
  auto waitFor = [&](short ev) {
    pollfd p{fd, ev, 0};
    return ::poll(&p, 1, 5000) == 1;
  };
  if (::connect(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 && errno != EINPROGRESS) {
    r.error = std::strerror(errno);
  } else if (!waitFor(POLLOUT)) {
    r.error = "connect timed out";
  } else {
    int err = 0;
    socklen_t el = sizeof err;
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
    if (err != 0) r.error = std::strerror(err);
  }
  if (r.error.empty()) {
    std::string req = method + " " + path + " HTTP/1.1\r\nHost: halb\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) r.error = "send failed";
  }
  std::string resp;
  while (r.error.empty()) {
    if (!waitFor(POLLIN)) {
      r.error = "no response within 5s";
      break;
    }
    char buf[16384];
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    resp.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  if (!r.error.empty()) return r;
  size_t sp = resp.find(' ');
  size_t head = resp.find("\r\n\r\n");
  if (resp.rfind("HTTP/1.", 0) != 0 || sp == std::string::npos || head == std::string::npos) {
    r.error = "malformed response";
    return r;
  }
  r.status = std::atoi(resp.c_str() + sp + 1);
  r.body = resp.substr(head + 4);
  return r;
}

// The admin address: --admin ADDR, else the one in -c FILE for --node, else the default.
bool resolveAdmin(const Args& args, const char* cmd, SocketAddress& out, std::vector<std::string>* rest) {
  std::string admin, file, node;
  ArgParser p(args);
  while (!p.done()) {
    if (p.option("--admin", "-a", admin) || p.option("--config", "-c", file) || p.option("--node", "-n", node)) {
      if (!p.error.empty()) break;
      continue;
    }
    if (rest) {
      rest->push_back(p.current());
      ++p.pos;
      continue;
    }
    p.error = "unknown argument '" + p.current() + "'";
    break;
  }
  if (!p.error.empty()) {
    std::fprintf(stderr, "halb %s: %s\n", cmd, p.error.c_str());
    return false;
  }
  out = config::Admin{}.listen;
  if (!admin.empty()) {
    auto a = SocketAddress::parse(admin);
    if (!a) {
      std::fprintf(stderr, "halb %s: --admin: %s\n", cmd, a.error().c_str());
      return false;
    }
    out = *a;
  } else if (!file.empty()) {
    config::LoadOptions opt;
    opt.node = node;
    opt.checkFiles = false;
    auto res = config::loadConfigFile(file, opt);
    if (!res.ok()) {
      for (const auto& e : res.errors) std::fprintf(stderr, "%s\n", e.toString().c_str());
      return false;
    }
    out = res.config->admin.listen;
  }
  return true;
}

int simpleCall(const Args& args, const char* cmd, const char* method, const std::string& path) {
  SocketAddress addr;
  if (!resolveAdmin(args, cmd, addr, nullptr)) return 2;
  Reply r = adminRequest(addr, method, path);
  if (!r.error.empty()) {
    std::fprintf(stderr, "halb %s: %s: %s\n", cmd, addr.toString().c_str(), r.error.c_str());
    return 1;
  }
  std::fwrite(r.body.data(), 1, r.body.size(), r.status < 300 ? stdout : stderr);
  if (!r.body.empty() && r.body.back() != '\n') std::fputc('\n', r.status < 300 ? stdout : stderr);
  return r.status < 300 ? 0 : 1;
}

}  // namespace

int cmdStatus(const Args& args) { return simpleCall(args, "status", "GET", "/status"); }
int cmdMetrics(const Args& args) { return simpleCall(args, "metrics", "GET", "/metrics"); }
int cmdHandover(const Args& args) { return simpleCall(args, "handover", "POST", "/handover"); }
int cmdReload(const Args& args) { return simpleCall(args, "reload", "POST", "/reload"); }

}  // namespace halb::app
