// Real traffic through the engine on loopback: http and tcp frontends in front of real
// backends spawned here. Every client operation has a deadline, so a hang fails the test
// instead of blocking it.
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "balancer/engine.h"
#include "common/crypto.h"
#include "tests/balancer/test_backends.h"

namespace halb::balancer {
namespace {

using namespace std::chrono_literals;
using testing::Client;
using testing::EchoBackend;
using testing::HttpBackend;

config::Server server(const std::string& backend, const std::string& name, uint16_t port) {
  config::Server s;
  s.name = name;
  s.id = stableId(backend + "/" + name);
  s.address = SocketAddress{IpAddress::fromV4(0x7f000001), port};
  return s;
}

PoolSnapshotPtr snapshotOf(const config::ConfigPtr& cfg,
                           const std::map<std::string, bool>& down = {}) {
  auto snap = std::make_shared<PoolSnapshot>();
  snap->config = cfg;
  snap->generation = 1;
  for (const config::Backend& b : cfg->backends) {
    BackendView bv;
    bv.config = &b;
    bv.id = b.id;
    for (const config::Server& s : b.servers) {
      ServerView sv;
      sv.config = &s;
      sv.id = s.id;
      sv.address = s.address;
      sv.weight = s.weight;
      sv.healthy = !down.count(s.name);
      sv.stats = std::make_shared<ServerStats>();
      bv.servers.push_back(sv);
    }
    snap->backends.push_back(std::move(bv));
  }
  return snap;
}

class DataplaneTest : public ::testing::Test {
 protected:
  void SetUp() override {
    web1_ = std::make_unique<HttpBackend>("web1");
    web2_ = std::make_unique<HttpBackend>("web2");
    echo1_ = std::make_unique<EchoBackend>("echo1");
    echo2_ = std::make_unique<EchoBackend>("echo2");
  }
  void TearDown() override {
    if (engine_) engine_->stop(0s);
  }

  // Builds a config (tweak it with `edit`) and starts the engine.
  void start(const std::function<void(config::Config&)>& edit = {}) {
    auto c = std::make_shared<config::Config>();
    c->workers = 2;
    c->statesync.queueSize = 1024;
    c->timeouts.connect = 500ms;
    c->timeouts.requestHeaders = 500ms;
    c->timeouts.serverResponse = 1s;
    c->timeouts.keepAlive = 2s;
    c->timeouts.clientIdle = 2s;
    config::Frontend web;
    web.name = "web";
    web.mode = config::Mode::Http;
    web.bind = {SocketAddress{IpAddress::fromV4(0x7f000001), 0}};
    web.defaultBackend = "web";
    config::Frontend tcpFe;
    tcpFe.name = "tcp";
    tcpFe.mode = config::Mode::Tcp;
    tcpFe.bind = {SocketAddress{IpAddress::fromV4(0x7f000001), 0}};
    tcpFe.defaultBackend = "echo";
    c->frontends = {web, tcpFe};
    config::Backend wb;
    wb.name = "web";
    wb.id = stableId("web");
    wb.servers = {server("web", "web1", web1_->port()), server("web", "web2", web2_->port())};
    config::Backend eb;
    eb.name = "echo";
    eb.id = stableId("echo");
    eb.servers = {server("echo", "echo1", echo1_->port()), server("echo", "echo2", echo2_->port())};
    c->backends = {wb, eb};
    if (edit) edit(*c);
    cfg_ = c;
    EngineOptions o;
    o.config = cfg_;
    o.pools = snapshotOf(cfg_);
    o.makeSelector = defaultSelectorFactory();
    sticky_ = std::shared_ptr<StickTables>(makeStickTables(stickTableSpecs(*cfg_)));
    o.stickTables = sticky_;
    o.makeRouter = defaultRouterFactory();
    const std::vector<uint8_t> secret(32, 7);
    auto codecs = CookieCodecs::load(*cfg_, secret);
    ASSERT_TRUE(codecs.ok()) << codecs.error();
    o.cookies = std::make_shared<const CookieCodecs>(std::move(codecs).value());
    auto e = Engine::start(std::move(o));
    ASSERT_TRUE(e.ok()) << e.error();
    engine_ = std::move(e).value();
    httpPort_ = engine_->listenAddresses("web").at(0).port;
    tcpPort_ = engine_->listenAddresses("tcp").at(0).port;
  }

  std::unique_ptr<HttpBackend> web1_, web2_;
  std::unique_ptr<EchoBackend> echo1_, echo2_;
  std::shared_ptr<StickTables> sticky_;
  config::ConfigPtr cfg_;
  std::unique_ptr<Engine> engine_;
  uint16_t httpPort_ = 0, tcpPort_ = 0;
};

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// ---------------------------------------------------------------------------------------
// HTTP

TEST_F(DataplaneTest, KeepAliveBalancesAndReusesServerConnections) {
  start([](config::Config& c) { c.workers = 1; });
  Client c(httpPort_);
  ASSERT_TRUE(c.ok());
  int fromWeb1 = 0, fromWeb2 = 0;
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(c.send("GET /r" + std::to_string(i) + " HTTP/1.1\r\nHost: test\r\n\r\n"));
    Client::Response r;
    ASSERT_TRUE(c.readResponse(r)) << i;
    ASSERT_EQ(r.status, 200);
    EXPECT_TRUE(contains(r.body, "path=/r" + std::to_string(i)));
    fromWeb1 += contains(r.body, "server=web1");
    fromWeb2 += contains(r.body, "server=web2");
    EXPECT_FALSE(contains(r.head, "Keep-Alive:")) << "hop-by-hop header leaked: " << r.head;
  }
  EXPECT_EQ(fromWeb1, 10);
  EXPECT_EQ(fromWeb2, 10);
  // One server connection each, reused for every request.
  EXPECT_EQ(web1_->connectionsAccepted(), 1);
  EXPECT_EQ(web2_->connectionsAccepted(), 1);
}

TEST_F(DataplaneTest, ForwardedHeadersAddedHopByHopRemoved) {
  start();
  auto r = testing::get(httpPort_, "/",
                        "X-Forwarded-For: 203.0.113.9\r\nTE: trailers\r\nConnection: X-Secret\r\n"
                        "X-Secret: 1\r\nX-Forwarded-Proto: https\r\n");
  ASSERT_EQ(r.status, 200);
  EXPECT_TRUE(contains(r.body, "xff=203.0.113.9")) << r.body;  // the original line is kept...
  std::string head = web1_->requestsServed() ? web1_->lastRequestHead() : web2_->lastRequestHead();
  EXPECT_TRUE(contains(head, "X-Forwarded-For: 127.0.0.1\r\n")) << head;  // ...and ours added
  EXPECT_TRUE(contains(head, "Forwarded: for=127.0.0.1;proto=http\r\n")) << head;
  EXPECT_TRUE(contains(head, "X-Forwarded-Proto: http\r\n")) << head;
  EXPECT_FALSE(contains(head, "https")) << head;
  EXPECT_FALSE(contains(head, "X-Secret")) << head;
  EXPECT_FALSE(contains(head, "TE:")) << head;
  EXPECT_FALSE(contains(head, "Connection:")) << head;
}

TEST_F(DataplaneTest, PipelinedRequestsAnsweredInOrder) {
  start();
  Client c(httpPort_);
  std::string batch;
  for (int i = 0; i < 5; ++i)
    batch += "GET /p" + std::to_string(i) + " HTTP/1.1\r\nHost: t\r\n\r\n";
  ASSERT_TRUE(c.send(batch));
  for (int i = 0; i < 5; ++i) {
    Client::Response r;
    ASSERT_TRUE(c.readResponse(r)) << i;
    EXPECT_EQ(r.status, 200);
    EXPECT_TRUE(contains(r.body, "path=/p" + std::to_string(i))) << r.body;
  }
}

TEST_F(DataplaneTest, BodiesStreamBothWays) {
  start();
  Client c(httpPort_);
  // Chunked request body, echoed back with Content-Length.
  ASSERT_TRUE(
      c.send("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
             "3\r\nabc\r\n4;x=y\r\ndefg\r\n0\r\n\r\n"));
  Client::Response r;
  ASSERT_TRUE(c.readResponse(r));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "abcdefg");
  // Chunked response.
  ASSERT_TRUE(c.send("GET /chunked HTTP/1.1\r\nHost: t\r\n\r\n"));
  ASSERT_TRUE(c.readResponse(r));
  EXPECT_EQ(r.body, "hello world");
  // A 4 MiB body each way, larger than any buffer.
  std::string big(4 << 20, 'z');
  for (size_t i = 0; i < big.size(); i += 4096) big[i] = static_cast<char>('a' + (i / 4096) % 26);
  ASSERT_TRUE(c.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: " +
                     std::to_string(big.size()) + "\r\n\r\n"));
  std::thread sender([&] { c.send(big); });
  ASSERT_TRUE(c.readResponse(r));
  sender.join();
  EXPECT_EQ(r.body.size(), big.size());
  EXPECT_TRUE(r.body == big);
  // HEAD: no body even though Content-Length says otherwise.
  Client h(httpPort_);
  ASSERT_TRUE(h.send("HEAD / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"));
  std::string raw;
  EXPECT_TRUE(h.readToEof(raw));
  EXPECT_TRUE(contains(raw, "Content-Length: "));
  EXPECT_EQ(raw.find("\r\n\r\n") + 4, raw.size()) << raw;
}

TEST_F(DataplaneTest, SmugglingAttemptsGet400AndClose) {
  start();
  for (const char* bad : {
           "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: "
           "chunked\r\n\r\n0\r\n\r\n",
           "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcd",
           "GET / HTTP/1.1\r\nHost: t\r\nX: a\r\n b\r\n\r\n",
           "GET / HTTP/1.1\nHost: t\r\n\r\n",
           "GET / HTTP/1.1\r\nHost : t\r\n\r\n",
           "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nz\r\n",
       }) {
    Client c(httpPort_);
    ASSERT_TRUE(c.send(bad));
    Client::Response r;
    ASSERT_TRUE(c.readResponse(r)) << bad;
    EXPECT_EQ(r.status, 400) << bad;
    EXPECT_TRUE(r.closed) << bad;
  }
  // Nothing of the framing-invalid heads reached a server (the last case fails in the body,
  // after the head was forwarded, and is answered 400 all the same).
  EXPECT_LE(web1_->requestsServed() + web2_->requestsServed(), 1);
}

TEST_F(DataplaneTest, LimitsGive414And431) {
  start([](config::Config& c) {
    c.limits.requestLine = 100;
    c.limits.headerBytes = 300;
    c.limits.headerCount = 5;
  });
  auto r = testing::get(httpPort_, "/" + std::string(200, 'a'));
  EXPECT_EQ(r.status, 414);
  r = testing::get(httpPort_, "/", "X-Big: " + std::string(400, 'b') + "\r\n");
  EXPECT_EQ(r.status, 431);
  std::string many;
  for (int i = 0; i < 6; ++i) many += "X-" + std::to_string(i) + ": v\r\n";
  r = testing::get(httpPort_, "/", many);
  EXPECT_EQ(r.status, 431);
}

TEST_F(DataplaneTest, SlowlorisGets408) {
  start();
  Client c(httpPort_);
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(c.send("GET / HTTP/1.1\r\nHost: t\r\n"));  // never finishes the head
  Client::Response r;
  ASSERT_TRUE(c.readResponse(r));
  EXPECT_EQ(r.status, 408);
  EXPECT_TRUE(r.closed);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
}

TEST_F(DataplaneTest, IdleKeepAliveConnectionClosed) {
  start([](config::Config& c) { c.timeouts.keepAlive = 300ms; });
  Client c(httpPort_);
  ASSERT_TRUE(c.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n"));
  Client::Response r;
  ASSERT_TRUE(c.readResponse(r));
  std::string rest;
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(c.readToEof(rest));
  EXPECT_TRUE(rest.empty());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
}

TEST_F(DataplaneTest, ServerTimeoutGives504) {
  start();
  auto t0 = std::chrono::steady_clock::now();
  auto r = testing::get(httpPort_, "/hang");
  EXPECT_EQ(r.status, 504);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
}

TEST_F(DataplaneTest, ServerResetGives502) {
  start();
  auto r = testing::get(httpPort_, "/reset");
  EXPECT_EQ(r.status, 502);
}

TEST_F(DataplaneTest, NoServerGives503AtOnce) {
  start();
  web1_->kill();
  web2_->kill();
  auto t0 = std::chrono::steady_clock::now();
  auto r = testing::get(httpPort_, "/");
  EXPECT_EQ(r.status, 503);
  EXPECT_TRUE(contains(r.body, "no healthy server"));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  // Same when the snapshot says every server is down.
  engine_->updatePools(snapshotOf(cfg_, {{"web1", true}, {"web2", true}}));
  std::this_thread::sleep_for(50ms);  // the post reaches the workers
  r = testing::get(httpPort_, "/");
  EXPECT_EQ(r.status, 503);
  PromWriter w;
  engine_->writeMetrics(w);
  EXPECT_TRUE(contains(w.text(), "halb_no_server_total 2")) << w.text();
}

TEST_F(DataplaneTest, KilledServerTrafficMovesToHealthyOne) {
  start();
  Client ka(httpPort_);
  int served = 0;
  for (int i = 0; i < 40; ++i) {
    if (i == 10) web1_->kill();
    // Alternate keep-alive requests and fresh connections.
    Client::Response r;
    if (i % 2 == 0) {
      ASSERT_TRUE(ka.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n"));
      ASSERT_TRUE(ka.readResponse(r)) << "request " << i << " hung or failed";
    } else {
      r = testing::get(httpPort_, "/");
    }
    ASSERT_EQ(r.status, 200) << "request " << i << ": " << r.head;
    if (i > 10) {
      EXPECT_TRUE(contains(r.body, "server=web2")) << i;
    }
    ++served;
  }
  EXPECT_EQ(served, 40);
}

TEST_F(DataplaneTest, WebSocketUpgradeTunnels) {
  start();
  Client c(httpPort_);
  ASSERT_TRUE(
      c.send("GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
             "Sec-WebSocket-Version: 13\r\n\r\n"));
  Client::Response r;
  ASSERT_TRUE(c.readResponse(r));
  ASSERT_EQ(r.status, 101) << r.head;
  EXPECT_TRUE(contains(r.head, "Upgrade: websocket"));
  ASSERT_TRUE(c.send("frame-1"));
  EXPECT_EQ(c.readN(7), "frame-1");
  ASSERT_TRUE(c.send("frame-2"));
  EXPECT_EQ(c.readN(7), "frame-2");
  c.shutdownWrite();
  std::string rest;
  EXPECT_TRUE(c.readToEof(rest));
}

TEST_F(DataplaneTest, ConnectionCloseIsHonoured) {
  start();
  Client c(httpPort_);
  ASSERT_TRUE(c.send("GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"));
  Client::Response r;
  ASSERT_TRUE(c.readResponse(r));
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(contains(r.head, "Connection: close"));
  EXPECT_TRUE(r.closed);
}

TEST_F(DataplaneTest, GracefulStopFinishesInFlightRequest) {
  start();
  Client c(httpPort_);
  ASSERT_TRUE(c.send("GET /slow?ms=300 HTTP/1.1\r\nHost: t\r\n\r\n"));
  std::this_thread::sleep_for(100ms);
  std::thread stopper([&] { engine_->stop(3s); });
  Client::Response r;
  EXPECT_TRUE(c.readResponse(r));
  EXPECT_EQ(r.status, 200);
  stopper.join();
  engine_.reset();
}

// ---------------------------------------------------------------------------------------
// TCP

TEST_F(DataplaneTest, TcpEchoWithHalfClose) {
  start();
  Client c(tcpPort_);
  std::string greeting = c.readN(6);
  EXPECT_TRUE(greeting == "echo1\n" || greeting == "echo2\n") << greeting;
  std::string payload(1 << 20, 'q');
  std::thread sender([&] {
    c.send(payload);
    c.shutdownWrite();  // our FIN must reach the server, whose FIN must come back
  });
  std::string got;
  EXPECT_TRUE(c.readToEof(got));
  sender.join();
  EXPECT_EQ(got.size(), payload.size());
  EXPECT_TRUE(got == payload);
}

TEST_F(DataplaneTest, TcpRetriesOnAnotherServer) {
  start();
  echo1_->kill();
  for (int i = 0; i < 6; ++i) {
    Client c(tcpPort_);
    EXPECT_EQ(c.readN(6), "echo2\n") << i;
  }
  echo2_->kill();
  Client c(tcpPort_);
  std::string rest;
  EXPECT_TRUE(c.readToEof(rest));  // closed at once, no hang
  EXPECT_TRUE(rest.empty());
}

TEST_F(DataplaneTest, TcpProxyProtocolV2) {
  start([](config::Config& c) { c.backends[1].proxyProtocol = config::ProxyProtocol::V2; });
  Client c(tcpPort_);
  c.readN(6);
  ASSERT_TRUE(c.send("x"));
  std::string echoed = c.readN(28 + 1);  // the echo server echoes the PROXY header too
  EXPECT_EQ(echoed.substr(28), "x");
  const std::string sig("\r\n\r\n\0\r\nQUIT\n", 12);
  std::string first = echo1_->connectionsAccepted() ? echo1_->firstBytes() : echo2_->firstBytes();
  ASSERT_GE(first.size(), 28u);
  EXPECT_EQ(first.substr(0, 12), sig);
  EXPECT_EQ(static_cast<uint8_t>(first[13]), 0x11);  // TCP over IPv4
  EXPECT_EQ(first.substr(16, 4), std::string("\x7f\0\0\x01", 4));
}

TEST_F(DataplaneTest, TcpIdleTimeout) {
  start([](config::Config& c) { c.timeouts.clientIdle = 300ms; });
  Client c(tcpPort_);
  c.readN(6);
  auto t0 = std::chrono::steady_clock::now();
  std::string rest;
  c.readToEof(rest);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 100ms);  // not at once (the deadline is 300 ms)
}

TEST_F(DataplaneTest, LongConnectionsArePublishedToTheConnectionTable) {
  start([](config::Config& c) { c.workers = 1; });
  Client c(tcpPort_);
  c.readN(6);
  ASSERT_TRUE(c.send("hello"));
  c.readN(5);
  // Published after the threshold (1 s) at the next publication tick.
  std::vector<repl::ConnEntry> seen;
  for (int i = 0; i < 40 && seen.empty(); ++i) {
    std::this_thread::sleep_for(100ms);
    engine_->forEachConn([&](const repl::ConnEntry& e) { seen.push_back(e); });
  }
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].client.ip, IpAddress::fromV4(0x7f000001));
  EXPECT_EQ(seen[0].frontend.port, tcpPort_);
  EXPECT_EQ(seen[0].bytesIn, 5u);
  EXPECT_EQ(seen[0].backendId, stableId("echo"));
  EXPECT_EQ(seen[0].phase, repl::ConnPhase::Idle);  // nothing in flight inside halb
  repl::Change ch;
  ASSERT_TRUE(engine_->changeQueue(0).pop(ch));
  EXPECT_EQ(ch.kind, repl::ChangeKind::ConnOpen);
  c.shutdownWrite();
  std::string rest;
  c.readToEof(rest);
  bool closed = false;
  for (int i = 0; i < 40 && !closed; ++i) {
    while (engine_->changeQueue(0).pop(ch)) closed |= ch.kind == repl::ChangeKind::ConnClose;
    if (!closed) std::this_thread::sleep_for(50ms);
  }
  EXPECT_TRUE(closed);
}

TEST_F(DataplaneTest, MetricsAndStatus) {
  start();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(testing::get(httpPort_, "/").status, 200);
  PromWriter w;
  engine_->writeMetrics(w);
  const std::string& t = w.text();
  EXPECT_TRUE(contains(t, "halb_http_responses_total{code=\"2xx\"} 3")) << t;
  EXPECT_TRUE(contains(t, "halb_backend_response_seconds_count{backend=\"web\"} 3")) << t;
  EXPECT_TRUE(contains(t, "halb_worker_heartbeat{worker=\"1\"}")) << t;
  std::string s = engine_->statusJson();
  EXPECT_TRUE(contains(s, "\"role\":\"master\"")) << s;
  engine_->setRole(Role::Backup);
  EXPECT_TRUE(contains(engine_->statusJson(), "\"role\":\"backup\""));
  // Heartbeats grow while the loops run.
  uint64_t h0 = engine_->workerInfo(0).heartbeat;
  std::this_thread::sleep_for(600ms);
  EXPECT_GT(engine_->workerInfo(0).heartbeat, h0);
}

TEST_F(DataplaneTest, NewSnapshotsDuringInFlightRequests) {
  start();
  Client c(httpPort_);
  ASSERT_TRUE(c.send("GET /slow?ms=300 HTTP/1.1\r\nHost: t\r\n\r\n"));
  for (int i = 0; i < 5; ++i) {
    std::this_thread::sleep_for(30ms);
    engine_->updatePools(snapshotOf(cfg_));  // the old one is freed unless pinned
  }
  Client::Response r;
  ASSERT_TRUE(c.readResponse(r));
  EXPECT_EQ(r.status, 200);
  ASSERT_TRUE(c.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n"));
  ASSERT_TRUE(c.readResponse(r));
  EXPECT_EQ(r.status, 200);
}

TEST_F(DataplaneTest, TcpStickinessBySource) {
  start([](config::Config& c) { c.backends[1].sticky.mode = config::StickyMode::Source; });
  std::string first;
  for (int i = 0; i < 6; ++i) {
    Client c(tcpPort_);
    std::string g = c.readN(6);
    if (i == 0) first = g;
    EXPECT_EQ(g, first) << "connection " << i << " left its sticky server";
  }
  auto stuck = sticky_->lookup(stableId("echo"), std::string("\x7f\0\0\x01", 4), SteadyClock::now(),
                               [](repl::Change&&) {});
  ASSERT_TRUE(stuck.has_value());
  EXPECT_EQ(*stuck, stableId(first == "echo1\n" ? "echo/echo1" : "echo/echo2"));
  // The sticky server dies: the connection goes to the other one and re-sticks there.
  (first == "echo1\n" ? echo1_ : echo2_)->kill();
  Client c(tcpPort_);
  EXPECT_NE(c.readN(6), first);
}

TEST_F(DataplaneTest, HttpStickinessByHeaderAndAppCookie) {
  start([](config::Config& c) {
    c.backends[0].sticky.mode = config::StickyMode::Header;
    c.backends[0].sticky.name = "X-User";
  });
  std::string server;
  for (int i = 0; i < 6; ++i) {
    auto r = testing::get(httpPort_, "/", "X-User: alice\r\n");
    ASSERT_EQ(r.status, 200);
    std::string s = r.body.substr(0, r.body.find(' '));
    if (i == 0) server = s;
    EXPECT_EQ(s, server) << i;
  }
  EXPECT_TRUE(sticky_->lookup(stableId("web"), "alice", SteadyClock::now(), [](repl::Change&&) {})
                  .has_value());
  // The sticky mapping went to the worker's change queue for state sync.
  bool upsert = false;
  repl::Change ch;
  for (size_t w = 0; w < engine_->workerCount(); ++w)
    while (engine_->changeQueue(w).pop(ch)) upsert |= ch.kind == repl::ChangeKind::StickUpsert;
  EXPECT_TRUE(upsert);
}

TEST_F(DataplaneTest, RoutesPickTheBackend) {
  HttpBackend otherServer("other1");
  start([&](config::Config& c) {
    config::Route r;
    r.name = "other";
    r.match.hosts = {config::HostMatch{config::HostMatchKind::Exact, "example.com"}};
    r.match.path = config::PathMatch{config::PathMatchKind::Exact, "/other"};
    r.match.methods = {"GET"};
    r.backend = "other";
    c.frontends[0].routes = {r};
    config::Backend b;
    b.name = "other";
    b.id = stableId("other");
    b.servers = {server("other", "other1", otherServer.port())};
    c.backends.push_back(b);
  });
  Client c(httpPort_);
  ASSERT_TRUE(c.send("GET /other?q=1 HTTP/1.1\r\nHost: Example.COM:8080\r\n\r\n"));
  Client::Response r;
  ASSERT_TRUE(c.readResponse(r));
  EXPECT_TRUE(contains(r.body, "server=other1")) << r.body;
  ASSERT_TRUE(c.send("GET /else HTTP/1.1\r\nHost: example.com\r\n\r\n"));
  ASSERT_TRUE(c.readResponse(r));
  EXPECT_TRUE(contains(r.body, "server=web")) << r.body;
}

TEST_F(DataplaneTest, CookieStickinessInsertsAndFollowsTheCookie) {
  start([](config::Config& c) {
    c.backends[0].sticky.mode = config::StickyMode::Cookie;
    c.backends[0].sticky.name = "HALB";
  });
  auto first = testing::get(httpPort_, "/");
  ASSERT_EQ(first.status, 200);
  size_t p = first.head.find("Set-Cookie: HALB=");
  ASSERT_NE(p, std::string::npos) << first.head;
  std::string value = first.head.substr(p + 17, first.head.find(';', p) - p - 17);
  std::string server = first.body.substr(0, first.body.find(' '));
  for (int i = 0; i < 6; ++i) {
    auto r = testing::get(httpPort_, "/", "Cookie: other=1; HALB=" + value + "\r\n");
    ASSERT_EQ(r.status, 200);
    EXPECT_EQ(r.body.substr(0, r.body.find(' ')), server) << i;
    EXPECT_FALSE(contains(r.head, "Set-Cookie")) << "a valid cookie is not set again";
  }
}

TEST_F(DataplaneTest, ExpectContinue) {
  start();
  Client c(httpPort_);
  ASSERT_TRUE(c.send(
      "POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"));
  // The proxy answers the expectation itself (the test server would never send 100).
  Client::Response r;
  ASSERT_TRUE(c.readResponse(r));
  EXPECT_EQ(r.status, 100);
  ASSERT_TRUE(c.send("hello"));
  ASSERT_TRUE(c.readResponse(r));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "hello");
  EXPECT_FALSE(contains(web1_->lastRequestHead() + web2_->lastRequestHead(), "Expect"));
}

TEST_F(DataplaneTest, RequestBodyTimeout) {
  start([](config::Config& c) { c.timeouts.requestBody = 300ms; });
  Client c(httpPort_);
  ASSERT_TRUE(c.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly-part"));
  auto t0 = std::chrono::steady_clock::now();
  Client::Response r;
  ASSERT_TRUE(c.readResponse(r));
  EXPECT_EQ(r.status, 408);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
}

TEST_F(DataplaneTest, TcpServerClosesFirst) {
  // The server's FIN reaches the client while the client may still send (half-close the
  // other way round): here the sink-like server answers one line and closes.
  start();
  Client c(tcpPort_);
  c.readN(6);
  echo1_->kill();
  echo2_->kill();  // both kill() shut the live connection down from the server side
  std::string rest;
  EXPECT_TRUE(c.readToEof(rest));
}

TEST(DataplaneStart, FreebindListensOnAddressNotHeldYet) {
  auto c = std::make_shared<config::Config>();
  c->workers = 1;
  c->statesync.queueSize = 16;
  config::Frontend fe;
  fe.name = "x";
  fe.bind = {*SocketAddress::parse("[::1]:0"), *SocketAddress::parse("192.0.2.77:0")};
  c->frontends = {fe};
  EngineOptions o;
  o.config = c;
  o.pools = std::make_shared<PoolSnapshot>();
  o.makeSelector = defaultSelectorFactory();
  // 192.0.2.77 is not local: IP_FREEBIND lets the bind succeed (a backup binding the VIP).
  auto e = Engine::start(std::move(o));
  ASSERT_TRUE(e.ok()) << e.error();
  EXPECT_EQ((*e)->listenAddresses("x").size(), 2u);
  (*e)->stop(0s);
}

}  // namespace
}  // namespace halb::balancer
