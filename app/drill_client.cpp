// The network side of `halb drill`: Boost.Asio on one thread, C++20 coroutines. Every HTTP
// user and every long-lived TCP connection is a tracked coroutine (the io_context returns when
// all of them have finished); every connect, write and read runs under a deadline that closes
// the socket when it passes. Measurements only read the steady clock at the moment an event
// completes, and nothing on this thread blocks, so the figures are the network's, not ours.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <memory>

#include "app/drill.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24  // linux/in.h: pick the port at connect, per 4-tuple
#endif

namespace halb::app::drill {

namespace asio = boost::asio;
using asio::awaitable;
using asio::ip::tcp;
using boost::system::error_code;
constexpr auto kTok = asio::as_tuple(asio::use_awaitable);

namespace {

TimePoint now() {
  return SteadyClock::now();
}

// Closes `sock` if `at` passes before the guard is destroyed. A generation number makes a
// late-running handler (the timer fired just as the operation completed) harmless.
class DeadlineGuard {
 public:
  DeadlineGuard(asio::steady_timer& timer, tcp::socket& sock, uint64_t& gen, bool& fired,
                TimePoint at)
      : timer_(timer), gen_(gen) {
    fired = false;
    uint64_t mine = ++gen_;
    timer_.expires_at(at);
    timer_.async_wait([&sock, &gen, &fired, mine](error_code ec) {
      if (ec || gen != mine) return;
      fired = true;
      error_code ignored;
      sock.close(ignored);
    });
  }
  ~DeadlineGuard() {
    ++gen_;
    timer_.cancel();
  }
  DeadlineGuard(const DeadlineGuard&) = delete;
  DeadlineGuard& operator=(const DeadlineGuard&) = delete;

 private:
  asio::steady_timer& timer_;
  uint64_t& gen_;
};

Outcome outcomeOf(const error_code& ec, bool timedOut, bool connecting) {
  if (timedOut) return Outcome::Timeout;
  if (ec == asio::error::eof) return Outcome::Closed;
  if (ec == asio::error::connection_reset || ec == asio::error::broken_pipe) return Outcome::Reset;
  if (connecting &&
      (ec == asio::error::connection_refused || ec == asio::error::network_unreachable ||
       ec == asio::error::host_unreachable || ec == asio::error::timed_out))
    return Outcome::ConnectFailed;
  return Outcome::Error;
}

// FNV-1a: the checksum carried by each long-lived connection's message.
uint32_t fnv1a(const uint8_t* p, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 16777619u;
  return h;
}

struct HttpUser {
  HttpUser(asio::io_context& io, uint32_t i, HttpMode m)
      : id(i), mode(m), sock(io), deadline(io), pace(io) {}
  uint32_t id;
  HttpMode mode;
  std::optional<IpAddress> source;
  std::map<std::string, std::string> cookies;
  tcp::socket sock;
  asio::steady_timer deadline;
  asio::steady_timer pace;
  uint64_t gen = 0;
  bool timedOut = false;
  ResponseParser parser;
  std::string request;
  std::array<char, 16 * 1024> rbuf;
};

struct TcpConn {
  TcpConn(asio::io_context& io, uint32_t i) : id(i), sock(io), deadline(io), pace(io) {}
  uint32_t id;
  std::optional<IpAddress> source;
  tcp::socket sock;
  asio::steady_timer deadline;
  asio::steady_timer pace;
  uint64_t gen = 0;
  bool timedOut = false;
  std::vector<uint8_t> out, in;
};

class Runner {
 public:
  Runner(const Options& opt, std::optional<tcp::endpoint> http, std::optional<tcp::endpoint> echo)
      : opt_(opt),
        io_(1),
        http_(http),
        echo_(echo),
        start_(now()),
        rec_(start_,
             std::chrono::duration_cast<milliseconds>(
                 std::chrono::system_clock::now().time_since_epoch())
                 .count(),
             opt.retryOnce),
        stopTimer_(io_),
        signals_(io_, SIGINT, SIGTERM) {}

  Result<Report> run() {
    std::vector<std::optional<IpAddress>> sources;
    for (const auto& s : opt_.sources) sources.emplace_back(s);
    if (sources.empty()) sources.emplace_back(std::nullopt);

    if (http_) {
      for (HttpMode mode : {HttpMode::NewConnection, HttpMode::KeepAlive}) {
        if ((mode == HttpMode::NewConnection && !opt_.newConnection) ||
            (mode == HttpMode::KeepAlive && !opt_.keepAlive))
          continue;
        for (const auto& src : sources) {
          for (uint32_t k = 0; k < opt_.usersPerSource; ++k) {
            std::string name = src ? src->toString() : std::string("default");
            if (opt_.usersPerSource > 1) name += "#" + std::to_string(k + 1);
            name += std::string("/") + toString(mode);
            uint32_t id = rec_.addUser(name, mode);
            users_.push_back(std::make_unique<HttpUser>(io_, id, mode));
            users_.back()->source = src;
            users_.back()->parser = ResponseParser(opt_.idHeader);
          }
        }
      }
    }
    if (echo_) {
      for (uint32_t i = 0; i < opt_.tcpConnections; ++i) {
        const auto& src = sources[i % sources.size()];
        uint32_t id = rec_.addTcpConn(src ? src->toString() : std::string("default"));
        conns_.push_back(std::make_unique<TcpConn>(io_, id));
        conns_.back()->source = src;
      }
    }

    signals_.async_wait([this](error_code ec, int sig) {
      if (!ec) requestStop(sig == SIGINT ? "SIGINT" : "SIGTERM");
    });
    spawn(stopWatch());
    // Spread the users over one pacing interval so the load is smooth from the start.
    Duration interval = userInterval();
    for (size_t i = 0; i < users_.size(); ++i)
      spawn(userLoop(*users_[i], start_ + interval * static_cast<int64_t>(i) /
                                              static_cast<int64_t>(users_.size())));
    for (size_t i = 0; i < conns_.size(); ++i)
      spawn(tcpLoop(*conns_[i], start_ + opt_.tcpInterval * static_cast<int64_t>(i) /
                                             static_cast<int64_t>(conns_.size())));
    io_.run();
    if (!failure_.empty()) return Error{failure_};

    Report r = rec_.report(stopAt_);
    if (http_) r.httpTarget = opt_.httpHost + ":" + std::to_string(opt_.httpPort);
    if (echo_) r.tcpTarget = opt_.tcpHost + ":" + std::to_string(opt_.tcpPort);
    r.rate = opt_.rate;
    r.stoppedEarly = stopReason_ != "duration";
    r.stopReason = stopReason_;
    return r;
  }

 private:
  Duration userInterval() const {
    if (users_.empty()) return 1s;
    auto ns = static_cast<double>(users_.size()) / opt_.rate * 1e9;
    return Duration(static_cast<int64_t>(ns));
  }

  template <class Task>
  void spawn(Task&& task) {
    asio::co_spawn(io_, std::forward<Task>(task), [this](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        failure_ = std::string("internal error: ") + ex.what();
      }
      requestStop("error");
    });
  }

  void requestStop(const std::string& reason) {
    if (stopping_) return;
    stopping_ = true;
    stopAt_ = now();
    stopReason_ = reason;
    error_code ignored;
    stopTimer_.cancel();
    signals_.cancel(ignored);
    for (auto& u : users_) {
      u->pace.cancel();
      u->sock.close(ignored);
    }
    for (auto& c : conns_) {
      c->pace.cancel();
      c->sock.close(ignored);
    }
  }

  awaitable<void> stopWatch() {
    TimePoint end = start_ + opt_.duration;
    while (!stopping_) {
      TimePoint wake = end;
      // A file cannot be awaited portably; a stat every 20 ms is cheap and bounds the delay.
      if (!opt_.untilFile.empty()) wake = std::min(wake, now() + 20ms);
      stopTimer_.expires_at(wake);
      co_await stopTimer_.async_wait(kTok);
      if (stopping_) break;
      struct stat st;
      if (!opt_.untilFile.empty() && ::stat(opt_.untilFile.c_str(), &st) == 0)
        requestStop("until-file");
      else if (now() >= end)
        requestStop("duration");
    }
  }

  void checkReady() {
    if (ready_ || opt_.readyFile.empty()) return;
    for (const auto& u : users_)
      if (!rec_.userSucceeded(u->id)) return;
    for (const auto& c : conns_)
      if (!rec_.tcpEstablished(c->id)) return;
    ready_ = true;
    if (FILE* f = std::fopen(opt_.readyFile.c_str(), "w")) {
      std::fprintf(f, "%lld\n", static_cast<long long>(toMillis(now() - start_)));
      std::fclose(f);
    }
  }

  // Opens, binds (source address, port chosen at connect) and connects `sock`.
  static awaitable<error_code> connect(tcp::socket& sock, const tcp::endpoint& to,
                                       const std::optional<IpAddress>& source) {
    error_code ec;
    sock.open(to.protocol(), ec);
    if (ec) co_return ec;
    int one = 1;
    ::setsockopt(sock.native_handle(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (source) {
      // Without this, bind() reserves a port per source address for every connection and a
      // busy drill runs out of them; with it the kernel picks the port per 4-tuple at connect.
      ::setsockopt(sock.native_handle(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
      sockaddr_storage ss;
      socklen_t len = SocketAddress{*source, 0}.toSockaddr(ss);
      if (::bind(sock.native_handle(), reinterpret_cast<sockaddr*>(&ss), len) != 0)
        co_return error_code(errno, boost::system::system_category());
    }
    auto [cec] = co_await sock.async_connect(to, kTok);
    co_return cec;
  }

  void buildRequest(HttpUser& u) {
    std::string& r = u.request;
    r.clear();
    r += "GET " + opt_.path + " HTTP/1.1\r\nHost: " + opt_.hostHeader +
         "\r\nUser-Agent: halb-drill\r\n";
    if (!u.cookies.empty()) {
      r += "Cookie: ";
      bool first = true;
      for (const auto& [k, v] : u.cookies) {
        r += (first ? "" : "; ") + k + "=" + v;
        first = false;
      }
      r += "\r\n";
    }
    if (u.mode == HttpMode::NewConnection) r += "Connection: close\r\n";
    r += "\r\n";
  }

  // One request; `fresh` forces a new connection (new-conn mode, and retries).
  awaitable<Outcome> attempt(HttpUser& u, bool fresh, std::string& backend) {
    backend.clear();
    error_code ignored;
    DeadlineGuard guard(u.deadline, u.sock, u.gen, u.timedOut, now() + opt_.requestTimeout);
    if (fresh && u.sock.is_open()) u.sock.close(ignored);
    if (!u.sock.is_open()) {
      error_code ec = co_await connect(u.sock, *http_, u.source);
      if (ec) {
        u.sock.close(ignored);
        co_return outcomeOf(ec, u.timedOut, true);
      }
    }
    buildRequest(u);
    auto [wec, wn] = co_await asio::async_write(u.sock, asio::buffer(u.request), kTok);
    if (wec) {
      u.sock.close(ignored);
      co_return outcomeOf(wec, u.timedOut, false);
    }
    u.parser.reset();
    while (!u.parser.done() && !u.parser.failed()) {
      auto [rec, n] = co_await u.sock.async_read_some(asio::buffer(u.rbuf), kTok);
      if (n > 0) u.parser.feed(std::string_view(u.rbuf.data(), n));
      if (rec == asio::error::eof) {
        u.parser.onEof();
        if (u.parser.done()) break;
        u.sock.close(ignored);
        co_return u.parser.status() ? Outcome::Closed : outcomeOf(rec, u.timedOut, false);
      }
      if (rec) {
        u.sock.close(ignored);
        co_return outcomeOf(rec, u.timedOut, false);
      }
    }
    if (u.parser.failed()) {
      u.sock.close(ignored);
      co_return Outcome::BadResponse;
    }
    if (opt_.cookies)
      for (const auto& [k, v] : u.parser.cookies()) u.cookies[k] = v;
    backend = u.parser.backend();
    if (!u.parser.keepAlive() || u.mode == HttpMode::NewConnection) u.sock.close(ignored);
    co_return u.parser.status() >= 500 ? Outcome::BadStatus : Outcome::Ok;
  }

  awaitable<void> userLoop(HttpUser& u, TimePoint next) {
    const Duration interval = userInterval();
    std::string backend;
    while (!stopping_) {
      u.pace.expires_at(next);
      co_await u.pace.async_wait(kTok);
      if (stopping_) break;
      if (opt_.maxRequests && rec_.requests() >= opt_.maxRequests) {
        requestStop("max-requests");
        break;
      }
      TimePoint sent = now();
      Outcome o = co_await attempt(u, u.mode == HttpMode::NewConnection, backend);
      if (stopping_) break;  // cut short by the stop: not a measurement
      rec_.onAttempt(u.id, false, sent, now(), o, backend);
      if (o != Outcome::Ok && opt_.retryOnce) {
        sent = now();
        o = co_await attempt(u, true, backend);
        if (stopping_) break;
        rec_.onAttempt(u.id, true, sent, now(), o, backend);
      }
      if (o == Outcome::Ok) checkReady();
      // Closed loop with a fixed schedule; a late request delays the next one, no catch-up burst.
      next += interval;
      if (TimePoint t = now(); next < t) next = t;
    }
  }

  void fillMessage(TcpConn& c, uint64_t seq) {
    // [conn id:4][seq:8][size:4][payload...][fnv1a of everything before:4]
    size_t size = opt_.tcpMessageSize;
    c.out.resize(size);
    uint8_t* p = c.out.data();
    auto put32 = [](uint8_t* d, uint32_t v) {
      for (int i = 0; i < 4; ++i) d[i] = static_cast<uint8_t>(v >> (24 - 8 * i));
    };
    put32(p, c.id);
    put32(p + 4, static_cast<uint32_t>(seq >> 32));
    put32(p + 8, static_cast<uint32_t>(seq));
    put32(p + 12, static_cast<uint32_t>(size));
    uint32_t x = static_cast<uint32_t>(seq * 2654435761u + c.id);
    for (size_t i = 16; i + 4 < size; ++i) {
      x = x * 1103515245u + 12345u;
      p[i] = static_cast<uint8_t>(x >> 16);
    }
    put32(p + size - 4, fnv1a(p, size - 4));
  }

  awaitable<void> tcpLoop(TcpConn& c, TimePoint next) {
    error_code ignored;
    {
      DeadlineGuard guard(c.deadline, c.sock, c.gen, c.timedOut, now() + opt_.requestTimeout);
      error_code ec = co_await connect(c.sock, *echo_, c.source);
      if (stopping_) {
        rec_.onTcpEnd(c.id, TcpState::ConnectFailed, now(), "drill stopped while connecting");
        co_return;
      }
      if (ec) {
        rec_.onTcpEnd(c.id, TcpState::ConnectFailed, now(),
                      c.timedOut ? "connect timeout" : ec.message());
        c.sock.close(ignored);
        co_return;
      }
    }
    c.in.resize(opt_.tcpMessageSize);
    for (uint64_t seq = 0; !stopping_; ++seq) {
      c.pace.expires_at(next);
      co_await c.pace.async_wait(kTok);
      if (stopping_) break;
      fillMessage(c, seq);
      TimePoint sent = now();
      DeadlineGuard guard(c.deadline, c.sock, c.gen, c.timedOut, sent + opt_.tcpTimeout);
      auto [wec, wn] = co_await asio::async_write(c.sock, asio::buffer(c.out), kTok);
      error_code ec = wec;
      if (!ec) {
        auto [rec, rn] = co_await asio::async_read(c.sock, asio::buffer(c.in), kTok);
        ec = rec;
      }
      if (stopping_) break;
      TimePoint got = now();
      if (ec) {
        TcpState s = c.timedOut ? TcpState::Hung
                     : (ec == asio::error::connection_reset || ec == asio::error::broken_pipe)
                         ? TcpState::Reset
                         : TcpState::Lost;
        rec_.onTcpEnd(c.id, s, got,
                      c.timedOut
                          ? "no echo within " + std::to_string(toMillis(opt_.tcpTimeout)) + " ms"
                          : ec.message());
        c.sock.close(ignored);
        co_return;
      }
      if (c.in != c.out) {
        rec_.onTcpEnd(c.id, TcpState::Corrupt, got,
                      "echo of message " + std::to_string(seq) + " differs");
        c.sock.close(ignored);
        co_return;
      }
      rec_.onTcpEcho(c.id, sent, got);
      checkReady();
      next += opt_.tcpInterval;
      if (next < got) next = got;
    }
    rec_.onTcpEnd(c.id, TcpState::Intact, stopAt_);
    c.sock.close(ignored);
  }

  const Options& opt_;
  asio::io_context io_;
  std::optional<tcp::endpoint> http_, echo_;
  TimePoint start_;
  Recorder rec_;
  asio::steady_timer stopTimer_;
  asio::signal_set signals_;
  std::vector<std::unique_ptr<HttpUser>> users_;
  std::vector<std::unique_ptr<TcpConn>> conns_;
  bool stopping_ = false;
  bool ready_ = false;
  TimePoint stopAt_{};
  std::string stopReason_ = "duration";
  std::string failure_;
};

Result<tcp::endpoint> resolve(const std::string& host, uint16_t port,
                              const std::vector<IpAddress>& sources) {
  asio::io_context io;
  tcp::resolver resolver(io);
  error_code ec;
  auto results = resolver.resolve(host, std::to_string(port), ec);
  if (ec) return Error{"cannot resolve " + host + ": " + ec.message()};
  // Prefer the family of the source addresses, so binding them works.
  bool wantV6 = !sources.empty() && sources.front().isV6();
  std::optional<tcp::endpoint> any;
  for (const auto& r : results) {
    if (!any) any = r.endpoint();
    if (r.endpoint().address().is_v6() == wantV6) return r.endpoint();
  }
  if (any && sources.empty()) return *any;
  return Error{"no address of " + host + " matches the family of --source"};
}

}  // namespace

Result<Report> runDrill(const Options& opt) {
  for (const auto& s : opt.sources) {
    if (s.family() != opt.sources.front().family())
      return Error{"--source addresses must all be IPv4 or all IPv6"};
    // A source that is not local here would fail every request; say so once, up front.
    int fd = ::socket(s.af(), SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    sockaddr_storage ss;
    socklen_t len = SocketAddress{s, 0}.toSockaddr(ss);
    int rc = fd < 0 ? -1 : ::bind(fd, reinterpret_cast<sockaddr*>(&ss), len);
    int err = errno;
    if (fd >= 0) ::close(fd);
    if (rc != 0)
      return Error{"cannot bind source address " + s.toString() + ": " + std::strerror(err)};
  }
  std::optional<tcp::endpoint> http, echo;
  if (!opt.httpHost.empty()) {
    auto ep = resolve(opt.httpHost, opt.httpPort, opt.sources);
    if (!ep.ok()) return Error{ep.error()};
    http = *ep;
  }
  if (!opt.tcpHost.empty() && opt.tcpConnections > 0) {
    auto ep = resolve(opt.tcpHost, opt.tcpPort, opt.sources);
    if (!ep.ok()) return Error{ep.error()};
    echo = *ep;
  }
  Runner runner(opt, http, echo);
  return runner.run();
}

}  // namespace halb::app::drill
