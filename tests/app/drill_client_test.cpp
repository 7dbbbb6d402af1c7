// `halb drill` against loopback servers whose behaviour is scripted by request number (so
// every run is the same): healthy, a server that changes identity, resets, stalls, refuses;
// an echo service that resets or stalls long-lived connections.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include "app/drill.h"

namespace halb::app::drill {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
constexpr auto kTok = asio::as_tuple(asio::use_awaitable);

enum class Act { Respond, Reset, Stall, StopDrill };

// One thread serving HTTP (identity header, keep-alive) and TCP echo on 127.0.0.1.
class Servers {
 public:
  // n: 0-based number of the request (HTTP) or message (echo) received so far, all connections.
  std::function<Act(uint64_t n)> http = [](uint64_t) { return Act::Respond; };
  std::function<std::string(uint64_t n)> name = [](uint64_t) { return std::string("b1"); };
  std::function<Act(uint64_t n)> echo = [](uint64_t) { return Act::Respond; };
  std::string stopFile;

  Servers()
      : httpAcc_(io_, {asio::ip::make_address("127.0.0.1"), 0}),
        echoAcc_(io_, {asio::ip::make_address("127.0.0.1"), 0}) {}
  ~Servers() {
    io_.stop();
    if (thread_.joinable()) thread_.join();
  }
  void start() {
    asio::co_spawn(io_, acceptLoop(httpAcc_, true), asio::detached);
    asio::co_spawn(io_, acceptLoop(echoAcc_, false), asio::detached);
    thread_ = std::thread([this] { io_.run(); });
  }
  uint16_t httpPort() const { return httpAcc_.local_endpoint().port(); }
  uint16_t echoPort() const { return echoAcc_.local_endpoint().port(); }
  uint64_t requests() const { return httpCount_; }

 private:
  static void reset(tcp::socket& s) {
    linger l{1, 0};  // close with RST
    ::setsockopt(s.native_handle(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
    boost::system::error_code ec;
    s.close(ec);
  }

  asio::awaitable<void> acceptLoop(tcp::acceptor& acc, bool isHttp) {
    for (;;) {
      auto [ec, sock] = co_await acc.async_accept(kTok);
      if (ec) co_return;
      if (isHttp)
        asio::co_spawn(io_, httpSession(std::move(sock)), asio::detached);
      else
        asio::co_spawn(io_, echoSession(std::move(sock)), asio::detached);
    }
  }

  asio::awaitable<void> httpSession(tcp::socket s) {
    std::string buf;
    for (;;) {
      auto [ec, n] =
          co_await asio::async_read_until(s, asio::dynamic_buffer(buf), "\r\n\r\n", kTok);
      if (ec) co_return;
      std::string head = buf.substr(0, n);
      buf.erase(0, n);
      uint64_t num = httpCount_++;
      Act a = http(num);
      if (a == Act::StopDrill) std::ofstream(stopFile) << "stop\n";
      if (a == Act::Reset) co_return reset(s);
      if (a == Act::Stall) {
        asio::steady_timer t(io_, std::chrono::seconds(30));
        co_await t.async_wait(kTok);
        co_return;
      }
      bool close = head.find("Connection: close") != std::string::npos;
      std::string body = name(num) + "\n";
      std::string resp = "HTTP/1.1 200 OK\r\nX-Backend: " + name(num) +
                         "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" +
                         (close ? "Connection: close\r\n" : "") + "\r\n" + body;
      auto [wec, wn] = co_await asio::async_write(s, asio::buffer(resp), kTok);
      if (wec || close) co_return;
    }
  }

  asio::awaitable<void> echoSession(tcp::socket s) {
    std::array<char, 4096> buf;
    for (;;) {
      auto [ec, n] = co_await s.async_read_some(asio::buffer(buf), kTok);
      if (ec) co_return;
      Act a = echo(echoCount_++);
      if (a == Act::Reset) co_return reset(s);
      if (a == Act::Stall) {
        asio::steady_timer t(io_, std::chrono::seconds(30));
        co_await t.async_wait(kTok);
        co_return;
      }
      auto [wec, wn] = co_await asio::async_write(s, asio::buffer(buf.data(), n), kTok);
      if (wec) co_return;
    }
  }

  asio::io_context io_;
  tcp::acceptor httpAcc_, echoAcc_;
  std::thread thread_;
  std::atomic<uint64_t> httpCount_{0}, echoCount_{0};
};

class DrillClient : public ::testing::Test {
 protected:
  Servers srv;
  Options opt;
  std::string dir = ::testing::TempDir();

  void SetUp() override {
    opt.httpHost = "127.0.0.1";
    opt.hostHeader = "test";
    opt.rate = 400;
    opt.duration = 2s;
    opt.requestTimeout = 500ms;
  }
  Report run() {
    srv.start();
    opt.httpPort = srv.httpPort();
    auto r = runDrill(opt);
    EXPECT_TRUE(r.ok()) << r.error();
    return r.ok() ? *r : Report{};
  }
};

TEST_F(DrillClient, HealthyPairNothingLost) {
  opt.sources = {*IpAddress::parse("127.0.0.1"), *IpAddress::parse("127.0.0.2")};
  opt.duration = 500ms;
  opt.tcpHost = "127.0.0.1";
  opt.tcpConnections = 4;
  opt.tcpInterval = 20ms;
  opt.readyFile = dir + "/drill-ready-" + std::to_string(::getpid());
  std::filesystem::remove(opt.readyFile);
  srv.start();
  opt.httpPort = srv.httpPort();
  opt.tcpPort = srv.echoPort();
  auto rr = runDrill(opt);
  ASSERT_TRUE(rr.ok()) << rr.error();
  const Report& r = *rr;
  EXPECT_EQ(r.users.size(), 4u);  // 2 sources x 2 modes
  EXPECT_EQ(r.failedRaw, 0u);
  EXPECT_EQ(r.ok, r.requests);
  EXPECT_GE(r.requests, 150u);  // 400/s for 0.5 s, paced
  EXPECT_LE(r.requests, 210u);
  EXPECT_EQ(r.usersMoved, 0u);
  EXPECT_EQ(r.usersWithoutResponse, 0u);
  EXPECT_EQ(r.responsesByBackend.at("b1"), r.ok);
  EXPECT_LT(r.outage.length, 100ms);
  EXPECT_EQ(r.tcpCounts[int(TcpState::Intact)], 4u);
  for (const auto& c : r.tcp) EXPECT_GE(c.messages, 15u);
  EXPECT_GE(r.elapsed, 500ms);
  EXPECT_LT(r.elapsed, 700ms);
  EXPECT_FALSE(r.stoppedEarly);
  EXPECT_TRUE(std::filesystem::exists(opt.readyFile));
  std::filesystem::remove(opt.readyFile);
  std::string text = formatText(r);
  EXPECT_NE(text.find("4 users"), std::string::npos) << text;
  EXPECT_NE(text.find("intact 4"), std::string::npos) << text;
}

TEST_F(DrillClient, ServerChangeMovesEveryUser) {
  opt.sources = {*IpAddress::parse("127.0.0.1"), *IpAddress::parse("127.0.0.3")};
  opt.maxRequests = 80;
  srv.name = [](uint64_t n) { return std::string(n < 40 ? "b1" : "b2"); };
  Report r = run();
  EXPECT_EQ(r.usersMoved, 4u);
  for (const auto& u : r.users) {
    EXPECT_EQ(u.changedFrom, "b1");
    EXPECT_EQ(u.changedTo, "b2");
    EXPECT_EQ(u.changes, 1u);
  }
  EXPECT_EQ(r.stopReason, "max-requests");
}

TEST_F(DrillClient, RetryOnceHidesSingleResets) {
  opt.keepAlive = true;
  opt.newConnection = false;  // one user: requests arrive in a known order
  opt.retryOnce = true;
  opt.maxRequests = 60;
  srv.http = [](uint64_t n) { return n >= 20 && n < 40 && n % 2 == 0 ? Act::Reset : Act::Respond; };
  Report r = run();
  EXPECT_EQ(r.requests, 60u);
  EXPECT_EQ(r.failedRaw, 10u);
  EXPECT_EQ(r.failedAfterRetry, 0u);
  EXPECT_EQ(r.retried, 10u);
  EXPECT_EQ(r.retriesOk, 10u);
  EXPECT_EQ(r.failuresByOutcome.at("reset"), 10u);
}

TEST_F(DrillClient, WithoutRetryResetsAreFailures) {
  opt.newConnection = false;
  opt.maxRequests = 60;
  srv.http = [](uint64_t n) { return n >= 20 && n < 40 && n % 2 == 0 ? Act::Reset : Act::Respond; };
  Report r = run();
  EXPECT_EQ(r.failedRaw, 10u);
  EXPECT_EQ(r.failedAfterRetry, 10u);
}

TEST_F(DrillClient, StalledServerTimesOutAndShowsAsOutage) {
  opt.newConnection = false;
  opt.rate = 100;
  opt.requestTimeout = 100ms;
  opt.duration = 600ms;
  srv.http = [](uint64_t n) { return n < 10 ? Act::Respond : Act::Stall; };
  Report r = run();
  EXPECT_EQ(r.ok, 10u);
  EXPECT_GE(r.failuresByOutcome["timeout"], 3u);
  // the last success was around 100 ms; nothing after: the outage runs to the end
  EXPECT_GE(r.outage.length, 400ms);
  EXPECT_EQ(r.latencyAfter.count, 0u);
  EXPECT_LT(r.elapsed, 800ms);  // a pending request does not hold the drill past its end
}

TEST_F(DrillClient, RefusedConnections) {
  // a port with nothing listening: bind, learn it, close
  {
    asio::io_context io;
    tcp::acceptor a(io, {asio::ip::make_address("127.0.0.1"), 0});
    opt.httpPort = a.local_endpoint().port();
  }
  opt.duration = 200ms;
  opt.rate = 100;
  auto rr = runDrill(opt);
  ASSERT_TRUE(rr.ok());
  EXPECT_EQ(rr->ok, 0u);
  EXPECT_GT(rr->failuresByOutcome.at("connect_failed"), 5u);
  EXPECT_EQ(rr->usersWithoutResponse, 2u);
  EXPECT_EQ(rr->outage.length, rr->elapsed);
}

TEST_F(DrillClient, LongLivedConnectionsResetAndHung) {
  opt.httpHost.clear();
  opt.tcpHost = "127.0.0.1";
  opt.tcpConnections = 6;
  opt.tcpInterval = 10ms;
  opt.tcpTimeout = 100ms;
  opt.duration = 600ms;
  // after 60 messages, the next two are reset, the next two stall; the rest go on
  srv.echo = [](uint64_t n) {
    return n < 60 ? Act::Respond : n < 62 ? Act::Reset : n < 64 ? Act::Stall : Act::Respond;
  };
  srv.start();
  opt.tcpPort = srv.echoPort();
  auto rr = runDrill(opt);
  ASSERT_TRUE(rr.ok()) << rr.error();
  const Report& r = *rr;
  EXPECT_EQ(r.tcpCounts[int(TcpState::Reset)], 2u);
  EXPECT_EQ(r.tcpCounts[int(TcpState::Hung)], 2u);
  EXPECT_EQ(r.tcpCounts[int(TcpState::Intact)], 2u);
  for (const auto& c : r.tcp) {
    if (c.state == TcpState::Hung) {
      EXPECT_GE(c.sinceLastEcho, 100ms);
      EXPECT_LT(c.sinceLastEcho, 200ms);
    }
  }
  EXPECT_TRUE(r.users.empty());
  EXPECT_FALSE(r.outage.found);
}

TEST_F(DrillClient, UntilFileStopsEarly) {
  opt.duration = 10s;
  srv.stopFile = dir + "/drill-stop-" + std::to_string(::getpid());
  std::filesystem::remove(srv.stopFile);
  opt.untilFile = srv.stopFile;
  srv.http = [](uint64_t n) { return n == 30 ? Act::StopDrill : Act::Respond; };
  Report r = run();
  EXPECT_TRUE(r.stoppedEarly);
  EXPECT_EQ(r.stopReason, "until-file");
  EXPECT_LT(r.elapsed, 1s);
  std::filesystem::remove(srv.stopFile);
}

TEST(DrillClientSetup, SourceThatIsNotLocalIsRefusedUpFront) {
  Options o;
  o.httpHost = "127.0.0.1";
  o.httpPort = 1;
  o.sources = {*IpAddress::parse("192.0.2.77")};
  auto r = runDrill(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().find("192.0.2.77"), std::string::npos);
}

}  // namespace
}  // namespace halb::app::drill
