#include "balancer/health_checker.h"

#include <gtest/gtest.h>

#include <thread>

#include "balancer/pool_manager.h"
#include "balancer/pool_service.h"
#include "config/loader.h"

namespace halb::balancer {
namespace {

using namespace std::chrono_literals;
using Verdict = HttpCheckResponse::Verdict;

// ------------------------------------------------------------------------ pure parser

Verdict feedAll(HttpCheckResponse& r, std::string_view data, size_t step) {
  Verdict v = Verdict::NeedMore;
  for (size_t i = 0; i < data.size() && v == Verdict::NeedMore; i += step)
    v = r.feed(data.substr(i, step));
  return v;
}

TEST(HttpCheckResponse, StatusRange) {
  HttpCheckResponse ok(200, 399, "");
  EXPECT_EQ(ok.feed("HTTP/1.1 302 Found\r\nLocation: /x\r\n\r\n"), Verdict::Pass);
  HttpCheckResponse bad(200, 399, "");
  EXPECT_EQ(bad.feed("HTTP/1.1 503 Service Unavailable\r\n\r\n"), Verdict::Fail);
  EXPECT_EQ(bad.detail(), "status 503");
  HttpCheckResponse junk(200, 399, "");
  EXPECT_EQ(junk.feed("SSH-2.0-OpenSSH\r\n\r\n"), Verdict::Fail);
  HttpCheckResponse big(200, 399, "");
  EXPECT_EQ(big.feed("HTTP/1.1 200 OK\r\nX: " + std::string(20000, 'a')), Verdict::Fail);
  HttpCheckResponse closed(200, 399, "");
  EXPECT_EQ(closed.feed("HTTP/1.1 200"), Verdict::NeedMore);
  EXPECT_EQ(closed.onEof(), Verdict::Fail);
}

TEST(HttpCheckResponse, BodyWithEveryFramingAndSplit) {
  const std::string bodies[] = {
      "HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\nstatus: healthy\r\n",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7;ext=1\r\nstatus:\r\n9\r\n "
      "healthy\n\r\n0\r\n\r\n",
      "HTTP/1.0 200 OK\r\n\r\nstatus: healthy\n",
  };
  for (const auto& resp : bodies) {
    for (size_t step : {1u, 3u, 1000u}) {
      HttpCheckResponse r(200, 200, "healthy");
      Verdict v = feedAll(r, resp, step);
      if (v == Verdict::NeedMore) v = r.onEof();
      EXPECT_EQ(v, Verdict::Pass) << resp << " step " << step << ": " << r.detail();
    }
    HttpCheckResponse r(200, 200, "ready");
    Verdict v = feedAll(r, resp, 5);
    if (v == Verdict::NeedMore) v = r.onEof();
    EXPECT_EQ(v, Verdict::Fail) << resp;
  }
  // The substring split across two chunks is still found (the body is decoded first).
  HttpCheckResponse r(200, 200, "healthy");
  EXPECT_EQ(
      feedAll(
          r,
          "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nheal\r\n3\r\nthy\r\n0\r\n\r\n",
          2),
      Verdict::Pass);
  HttpCheckResponse bad(200, 200, "x");
  EXPECT_EQ(bad.feed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"), Verdict::Fail);
}

// ------------------------------------------------------------------------ against real sockets

// A loopback server on the test's loop: answers every request with `response` (or nothing
// when it is empty) and remembers the last request.
class FakeServer {
 public:
  explicit FakeServer(uv::Loop& loop)
      : loop_(loop), listener_(std::make_unique<uv::TcpListener>(loop)) {
    int rc =
        listener_->listen(SocketAddress{IpAddress::fromV4(0x7f000001), 0},
                          [this](std::unique_ptr<uv::TcpStream> s) { onAccept(std::move(s)); });
    EXPECT_EQ(rc, 0);
    address_ = listener_->local();
  }
  void stop() {
    listener_.reset();
    conns_.clear();
  }
  void restart() {
    listener_ = std::make_unique<uv::TcpListener>(loop_);
    int rc = listener_->listen(
        address_, [this](std::unique_ptr<uv::TcpStream> s) { onAccept(std::move(s)); });
    ASSERT_EQ(rc, 0);
  }
  SocketAddress address() const { return address_; }
  std::string response;
  std::string lastRequest;
  int accepted = 0;

 private:
  void onAccept(std::unique_ptr<uv::TcpStream> s) {
    ++accepted;
    uv::TcpStream* raw = s.get();
    conns_.push_back(std::move(s));
    auto buf = std::make_shared<std::string>();
    raw->startRead(
        [this, raw, buf](std::span<const char> d) {
          buf->append(d.data(), d.size());
          if (buf->find("\r\n\r\n") == std::string::npos) return;
          lastRequest = *buf;
          if (!response.empty()) {
            raw->write(response);
            raw->shutdown();
          }
        },
        [](int) {});
  }
  uv::Loop& loop_;
  std::unique_ptr<uv::TcpListener> listener_;
  std::vector<std::unique_ptr<uv::TcpStream>> conns_;
  SocketAddress address_;
};

config::ConfigPtr configFor(const SocketAddress& a, const std::string& health) {
  std::string yaml =
      "frontends:\n  - {name: f, bind: 127.0.0.1:8080, default_backend: web}\n"
      "backends:\n  - name: web\n    health: " +
      health +
      "\n"
      "    servers: [{name: s1, address: '" +
      a.toString() + "'}]\n";
  auto r = config::loadConfigString(yaml, "t.yaml", {.node = "", .checkFiles = false});
  for (const auto& e : r.errors) ADD_FAILURE() << e.toString();
  return r.config;
}

class CheckerTest : public ::testing::Test {
 protected:
  // Runs checks until `n` results arrived (bounded).
  void runFor(size_t n) {
    ASSERT_TRUE(loop.runUntil([&] { return results.size() >= n; }, 5s)) << "no check result";
  }
  uv::Loop loop;
  std::vector<CheckResult> results;
  HealthChecker checker{loop, [this](uint64_t, const CheckResult& r) { results.push_back(r); }, 1};
};

TEST_F(CheckerTest, TcpConnectAndRefused) {
  FakeServer server(loop);
  auto cfg = configFor(server.address(), "{type: tcp, interval: 50ms, timeout: 40ms}");
  checker.configure(*cfg);
  runFor(2);
  EXPECT_TRUE(results[0].ok) << results[0].detail;
  EXPECT_EQ(results[0].detail, "connected");
  server.stop();
  results.clear();
  runFor(1);
  EXPECT_FALSE(results[0].ok);
  EXPECT_NE(results[0].detail.find("connect:"), std::string::npos) << results[0].detail;
}

TEST_F(CheckerTest, HttpStatusBodyAndHost) {
  FakeServer server(loop);
  server.response = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
  auto cfg = configFor(server.address(),
                       "{type: http, path: /healthz, host: app.internal, interval: 50ms, timeout: "
                       "40ms, expect_body: ok}");
  checker.configure(*cfg);
  runFor(1);
  EXPECT_TRUE(results[0].ok) << results[0].detail;
  EXPECT_NE(server.lastRequest.find("GET /healthz HTTP/1.1\r\n"), std::string::npos)
      << server.lastRequest;
  EXPECT_NE(server.lastRequest.find("\r\nHost: app.internal\r\n"), std::string::npos)
      << server.lastRequest;
  server.response = "HTTP/1.1 500 Oops\r\nContent-Length: 2\r\n\r\nok";
  results.clear();
  runFor(1);
  EXPECT_FALSE(results[0].ok);
  EXPECT_EQ(results[0].detail, "status 500");
  server.response = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbusy";
  results.clear();
  runFor(1);
  EXPECT_FALSE(results[0].ok);
  EXPECT_NE(results[0].detail.find("body does not contain"), std::string::npos);
}

TEST_F(CheckerTest, DefaultHostIsTheServerAddress) {
  FakeServer server(loop);
  server.response = "HTTP/1.1 204 No Content\r\n\r\n";
  auto cfg = configFor(server.address(), "{type: http, interval: 50ms, timeout: 40ms}");
  checker.configure(*cfg);
  runFor(1);
  EXPECT_TRUE(results[0].ok) << results[0].detail;
  EXPECT_NE(server.lastRequest.find("\r\nHost: " + server.address().toString() + "\r\n"),
            std::string::npos);
}

TEST_F(CheckerTest, TimeoutWhenTheServerNeverAnswers) {
  FakeServer server(loop);  // accepts, reads, never replies
  auto cfg = configFor(server.address(), "{type: http, interval: 100ms, timeout: 30ms}");
  checker.configure(*cfg);
  runFor(1);
  EXPECT_FALSE(results[0].ok);
  EXPECT_NE(results[0].detail.find("timeout"), std::string::npos) << results[0].detail;
  EXPECT_GE(results[0].latency, 25ms);  // libuv timers count from the loop's cached ms clock
  EXPECT_LT(results[0].latency, 1s);
}

TEST_F(CheckerTest, ReconfigureKeepsOrStopsChecks) {
  FakeServer server(loop);
  auto cfg = configFor(server.address(), "{type: tcp, interval: 50ms, timeout: 40ms}");
  checker.configure(*cfg);
  EXPECT_EQ(checker.checks(), 1u);
  checker.configure(*cfg);
  EXPECT_EQ(checker.checks(), 1u);
  auto none = configFor(server.address(), "{type: none}");
  checker.configure(*none);
  EXPECT_EQ(checker.checks(), 0u);
  loop.runUntil([] { return false; }, 150ms);
  EXPECT_TRUE(results.empty());
}

TEST(HealthEndToEnd, ServerDiesAndReturns) {
  // Checker -> PoolManager -> published snapshots, against a real server that goes away.
  uv::Loop loop;
  FakeServer server(loop);
  auto cfg =
      configFor(server.address(), "{type: tcp, interval: 20ms, timeout: 15ms, rise: 2, fall: 2}");
  std::vector<PoolSnapshotPtr> published;
  PoolManager::Options opts;
  opts.publish = [&](PoolSnapshotPtr s) { published.push_back(s); };
  PoolManager pm(opts, cfg, loop.now());
  HealthChecker checker(
      loop, [&](uint64_t id, const CheckResult& r) { pm.onCheckResult(id, r, loop.now()); }, 2);
  checker.configure(*cfg);
  auto status = [&] { return pm.snapshot()->backends[0].servers[0].healthy; };
  ASSERT_TRUE(loop.runUntil([&] { return server.accepted >= 1; }, 5s));
  EXPECT_TRUE(status());
  server.stop();
  TimePoint stopped = loop.now();
  ASSERT_TRUE(loop.runUntil([&] { return !status(); }, 5s));
  // Two failures at a 20 ms interval (±10%) plus at most one interval already under way.
  EXPECT_LT(loop.now() - stopped, 200ms);
  EXPECT_FALSE(pm.backendHasHealthyServer("web"));
  server.restart();
  ASSERT_TRUE(loop.runUntil([&] { return status(); }, 5s));
  EXPECT_TRUE(pm.backendHasHealthyServer("web"));
}

}  // namespace
}  // namespace halb::balancer

namespace halb::balancer {
namespace {

TEST(PoolServiceTest, WorkerFailuresEjectAndTheServerReturns) {
  uv::Loop loop;
  FakeServer server(loop);
  std::string yaml =
      "frontends:\n  - {name: f, bind: 127.0.0.1:8080, default_backend: web}\n"
      "backends:\n  - name: web\n    health: {type: none}\n"
      "    outlier: {consecutive_failures: 3, base_ejection: 50ms, max_ejection: 1s}\n"
      "    servers:\n      - {name: s1, address: '" +
      server.address().toString() +
      "'}\n"
      "      - {name: s2, address: 127.0.0.1:1}\n";
  auto r = config::loadConfigString(yaml, "t.yaml", {.node = "", .checkFiles = false});
  ASSERT_TRUE(r.ok());
  std::vector<PoolSnapshotPtr> published;
  PoolManager::Options o;
  o.workers = 2;
  o.publish = [&](PoolSnapshotPtr s) { published.push_back(std::move(s)); };
  PoolService svc(loop, o, r.config, 3);
  ASSERT_EQ(published.size(), 1u);
  // A worker thread reports three connect failures against s2.
  std::thread worker([&, snap = published.back()] {
    for (int i = 0; i < 3; ++i)
      svc.manager().reporter(1).report(snap->backends[0], snap->backends[0].servers[1],
                                       Outcome::ConnectFailure);
  });
  worker.join();
  auto s2 = [&] { return published.back()->backends[0].servers[1].healthy; };
  ASSERT_TRUE(loop.runUntil([&] { return !s2(); }, 5s));  // woken through uv_async
  TimePoint ejected = loop.now();
  ASSERT_TRUE(loop.runUntil([&] { return s2(); }, 5s));  // and back by the service's timer
  EXPECT_GE(loop.now() - ejected, 40ms);
}

}  // namespace
}  // namespace halb::balancer
