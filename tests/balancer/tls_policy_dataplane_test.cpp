// TLS termination and traffic policies through the real data plane on loopback: SNI,
// resumption across two engines sharing ticket keys, TLS to servers, splits, pins, mirrors,
// retries and their budget, connection limits with a queue, reloads. Every client operation
// has a deadline; certificates come from a throw-away PKI made here.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <future>
#include <map>
#include <thread>

#include "balancer/engine.h"
#include "config/loader.h"
#include "tests/balancer/test_backends.h"
#include "tests/balancer/tls_peers.h"
#include "tests/common/test_pki.h"

namespace halb::balancer {
namespace {

using namespace std::chrono_literals;
using testing::CertSpec;
using testing::Client;
using testing::HttpBackend;
using testing::RecordingBackend;
using testing::TestPki;
using testing::TlsClient;
using testing::TlsClientOptions;

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

PoolSnapshotPtr snapshotOf(const config::ConfigPtr& cfg) {
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
      sv.healthy = true;
      sv.stats = std::make_shared<ServerStats>();
      bv.servers.push_back(sv);
    }
    buildAlgorithmState(bv);
    snap->backends.push_back(std::move(bv));
  }
  return snap;
}

CertSpec named(const std::string& cn, std::vector<std::string> names) {
  CertSpec s;
  s.commonName = cn;
  s.dnsNames = std::move(names);
  return s;
}

// Replaces every "{key}" in `text`.
std::string fill(std::string text, const std::map<std::string, std::string>& vars) {
  for (const auto& [k, v] : vars) {
    std::string key = "{" + k + "}";
    for (size_t p; (p = text.find(key)) != std::string::npos;) text.replace(p, key.size(), v);
  }
  return text;
}

struct Running {
  config::ConfigPtr cfg;
  std::unique_ptr<Engine> engine;
  ~Running() {
    if (engine) engine->stop(0s);
  }
  uint16_t port(const std::string& frontend) const {
    return engine->listenAddresses(frontend).at(0).port;
  }
};

class TlsPolicyTest : public ::testing::Test {
 protected:
  // Loads `yaml` as halb would (every check, certificates included); frontends then bind
  // port 0 (the file gives each a distinct placeholder port).
  config::ConfigPtr load(const std::string& yaml) {
    config::LoadOptions opt;
    opt.node = "lb1";
    auto r = config::loadConfigString(yaml, pki_.dir() + "/halb.yaml", opt);
    std::string errs;
    for (const auto& e : r.errors) errs += e.toString() + "\n";
    EXPECT_TRUE(r.ok()) << errs;
    if (!r.ok()) return nullptr;
    auto c = std::make_shared<config::Config>(*r.config);
    for (auto& f : c->frontends)
      for (auto& b : f.bind) b.port = 0;
    return c;
  }

  std::unique_ptr<Running> start(const std::string& yaml,
                                 std::shared_ptr<TicketKeys> keys = nullptr) {
    auto run = std::make_unique<Running>();
    run->cfg = load(yaml);
    if (!run->cfg) return nullptr;
    if (!keys) {
      keys = std::make_shared<TicketKeys>(1h, 2h);
      keys->tick(SteadyClock::now());
    }
    auto tls = buildTlsContexts(*run->cfg, keys);
    EXPECT_TRUE(tls.ok()) << (tls.ok() ? "" : tls.error());
    EngineOptions o;
    o.config = run->cfg;
    o.pools = snapshotOf(run->cfg);
    o.makeSelector = defaultSelectorFactory();
    o.makeRouter = defaultRouterFactory();
    o.tls = *tls;
    auto e = Engine::start(std::move(o));
    EXPECT_TRUE(e.ok()) << (e.ok() ? "" : e.error());
    if (!e.ok()) return nullptr;
    run->engine = std::move(e).value();
    return run;
  }

  static std::string metrics(const Running& r) {
    PromWriter w;
    r.engine->writeMetrics(w);
    return w.take();
  }

  TestPki pki_;
};

const char* kHeader = R"(
workers: 2
timeouts: { connect: 500ms, server_response: 2s, keep_alive: 5s, request_headers: 2s }
)";

// ------------------------------------------------------------------ TLS termination

class TlsFrontendTest : public TlsPolicyTest {
 protected:
  void SetUp() override {
    def_ = pki_.issue("def", named("default.example.com", {"default.example.com"}));
    a_ = pki_.issue("a", named("a.example.com", {"a.example.com"}));
    wild_ = pki_.issue("wild", named("wild.b.example.com", {"*.b.example.com"}));
    web_ = std::make_unique<HttpBackend>("web1");
  }
  std::string yaml() const {
    return fill(std::string(kHeader) + R"(
frontends:
  - name: https
    bind: 127.0.0.1:1
    default_backend: web
    tls:
      certificates:
        - { cert: {def}.pem, key: {def}.key }
        - { cert: {a}.pem, key: {a}.key }
        - { cert: {wild}.pem, key: {wild}.key }
  - name: tcps
    mode: tcp
    bind: 127.0.0.1:2
    default_backend: echo
    tls: { certificates: [{ cert: {a}.pem, key: {a}.key }] }
backends:
  - name: web
    servers: [{ name: web1, address: "127.0.0.1:{web}" }]
  - name: echo
    servers: [{ name: echo1, address: "127.0.0.1:{echo}" }]
)",
                {{"def", pki_.dir() + "/def"},
                 {"a", pki_.dir() + "/a"},
                 {"wild", pki_.dir() + "/wild"},
                 {"web", std::to_string(web_->port())},
                 {"echo", std::to_string(echo_.port())}});
  }
  testing::Issued def_, a_, wild_;
  std::unique_ptr<HttpBackend> web_;
  testing::EchoBackend echo_{"echo1"};
};

TEST_F(TlsFrontendTest, SniPicksTheCertificateAndRequestsFlow) {
  auto run = start(yaml());
  ASSERT_TRUE(run);
  const uint16_t port = run->port("https");
  struct Case {
    std::string sni, cn;
  } cases[] = {{"a.example.com", "a.example.com"},
               {"x.b.example.com", "wild.b.example.com"},
               {"unknown.test", "default.example.com"},
               {"", "default.example.com"}};
  for (const auto& c : cases) {
    TlsClientOptions o;
    o.sni = c.sni;
    o.alpn = std::string("\x02h2\x08http/1.1", 12);
    TlsClient cl(port, o);
    ASSERT_TRUE(cl.ok()) << c.sni << ": " << cl.error();
    EXPECT_EQ(cl.peerCommonName(), c.cn) << c.sni;
    EXPECT_EQ(cl.alpn(), "http/1.1");
    for (int i = 0; i < 3; ++i) {  // keep-alive over TLS
      auto r = cl.request("GET /p" + std::to_string(i) + " HTTP/1.1\r\nHost: x\r\n\r\n");
      ASSERT_EQ(r.status, 200) << r.head;
      EXPECT_TRUE(contains(r.body, "path=/p" + std::to_string(i))) << r.body;
      EXPECT_TRUE(contains(r.body, "proto=https")) << r.body;  // Forwarded: ...;proto=https
    }
    cl.close();
  }
  std::string m = metrics(*run);
  EXPECT_TRUE(contains(m, "halb_tls_handshakes_total{result=\"full\"} 4")) << m;
}

TEST_F(TlsFrontendTest, OpensslSClientSeesTheCertificateItsSniSelects) {
  auto run = start(yaml());
  ASSERT_TRUE(run);
  auto subjectFor = [&](const std::string& sni) {
    std::string cmd =
        "timeout 10 openssl s_client -connect 127.0.0.1:" + std::to_string(run->port("https")) +
        " -servername " + sni + " </dev/null 2>/dev/null | openssl x509 -noout -subject 2>&1";
    std::string out;
    if (FILE* p = ::popen(cmd.c_str(), "r")) {
      char buf[512];
      while (std::fgets(buf, sizeof buf, p)) out += buf;
      ::pclose(p);
    }
    return out;
  };
  EXPECT_TRUE(contains(subjectFor("a.example.com"), "CN = a.example.com"))
      << subjectFor("a.example.com");
  EXPECT_TRUE(contains(subjectFor("z.b.example.com"), "CN = wild.b.example.com"));
  EXPECT_TRUE(contains(subjectFor("other.test"), "CN = default.example.com"));
}

TEST_F(TlsFrontendTest, OldProtocolVersionsAreRefused) {
  auto run = start(yaml());
  ASSERT_TRUE(run);
  std::string cmd = "timeout 10 openssl s_client -tls1_1 -connect 127.0.0.1:" +
                    std::to_string(run->port("https")) + " </dev/null 2>&1";
  std::string out;
  if (FILE* p = ::popen(cmd.c_str(), "r")) {
    char buf[512];
    while (std::fgets(buf, sizeof buf, p)) out += buf;
    ::pclose(p);
  }
  EXPECT_FALSE(contains(out, "Cipher is ECDHE")) << out;
  EXPECT_TRUE(contains(out, "alert") || contains(out, "no protocols available") ||
              contains(out, "error"))
      << out;
}

TEST_F(TlsFrontendTest, TcpFrontendTerminatesTls) {
  auto run = start(yaml());
  ASSERT_TRUE(run);
  TlsClientOptions o;
  o.sni = "a.example.com";
  TlsClient cl(run->port("tcps"), o);
  ASSERT_TRUE(cl.ok()) << cl.error();
  EXPECT_EQ(cl.readN(6), "echo1\n");
  ASSERT_TRUE(cl.send("hello over tls"));
  EXPECT_EQ(cl.readN(14), "hello over tls");
  EXPECT_EQ(cl.alpn(), "");  // no ALPN on tcp frontends
  // The client's close_notify reaches the plaintext server as a half-close: the server
  // (which echoes until the client's FIN) still answers, then closes, and the client reads
  // the rest and the end.
  ASSERT_TRUE(cl.send("last words"));
  cl.close();
  EXPECT_EQ(cl.readN(10), "last words");
}

TEST_F(TlsFrontendTest, SessionsResumeOnASecondEngineSharingTicketKeys) {
  // Two nodes: each made its keys; state sync would hand each the other's (merge here).
  auto keysA = std::make_shared<TicketKeys>(1h, 2h);
  auto keysB = std::make_shared<TicketKeys>(1h, 2h);
  keysA->tick(SteadyClock::now());
  keysB->tick(SteadyClock::now());
  keysB->merge(keysA->toWire(SteadyClock::now()), SteadyClock::now());
  keysA->merge(keysB->toWire(SteadyClock::now()), SteadyClock::now());
  auto a = start(yaml(), keysA);
  auto b = start(yaml(), keysB);
  ASSERT_TRUE(a && b);
  for (int version : {TLS1_2_VERSION, TLS1_3_VERSION}) {
    TlsClientOptions o;
    o.sni = "a.example.com";
    o.maxVersion = version;
    SSL_SESSION* sess = nullptr;
    {
      TlsClient c(a->port("https"), o);
      ASSERT_TRUE(c.ok()) << c.error();
      ASSERT_EQ(c.request("GET / HTTP/1.1\r\nHost: x\r\n\r\n").status, 200);  // ticket arrived
      EXPECT_FALSE(c.resumed());
      sess = c.session();
      c.close();
    }
    ASSERT_TRUE(SSL_SESSION_is_resumable(sess));
    o.session = sess;
    TlsClient c2(b->port("https"), o);  // the other node: a failover
    ASSERT_TRUE(c2.ok()) << c2.error();
    EXPECT_TRUE(c2.resumed()) << "version " << version;
    EXPECT_EQ(c2.request("GET / HTTP/1.1\r\nHost: x\r\n\r\n").status, 200);
    c2.close();
    SSL_SESSION_free(sess);
  }
  EXPECT_TRUE(contains(metrics(*b), "halb_tls_handshakes_total{result=\"resumed\"} 2"))
      << metrics(*b);
}

TEST_F(TlsFrontendTest, ReloadServesNewCertificatesAndKeepsOpenConnections) {
  auto run = start(yaml());
  ASSERT_TRUE(run);
  const uint16_t port = run->port("https");
  TlsClientOptions o;
  o.sni = "a.example.com";
  TlsClient before(port, o);
  ASSERT_TRUE(before.ok());
  EXPECT_EQ(before.peerCommonName(), "a.example.com");
  ASSERT_EQ(before.request("GET / HTTP/1.1\r\nHost: x\r\n\r\n").status, 200);

  // The certificate file is replaced and the configuration reloaded.
  auto renewed = pki_.issue("a2", named("a.example.com renewed", {"a.example.com"}));
  std::string y = yaml();
  y.replace(y.find(pki_.dir() + "/a.pem"), (pki_.dir() + "/a.pem").size(), renewed.certFile);
  y.replace(y.find(pki_.dir() + "/a.key"), (pki_.dir() + "/a.key").size(), renewed.keyFile);
  auto next = load(y);
  ASSERT_TRUE(next);
  auto keys = std::make_shared<TicketKeys>(1h, 2h);
  keys->tick(SteadyClock::now());
  auto tls = buildTlsContexts(*next, keys);
  ASSERT_TRUE(tls.ok());
  run->engine->updateTls(*tls);

  // New handshakes get the new certificate (the post reaches each worker; wait for it).
  bool seen = false;
  for (int i = 0; i < 50 && !seen; ++i) {
    TlsClient after(port, o);
    ASSERT_TRUE(after.ok());
    seen = after.peerCommonName() == "a.example.com renewed";
    if (!seen) std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(seen);
  // The connection made before the reload goes on with its certificate.
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(before.request("GET / HTTP/1.1\r\nHost: x\r\n\r\n").status, 200);
  EXPECT_EQ(before.peerCommonName(), "a.example.com");
}

// ------------------------------------------------------------------ TLS to servers

TEST_F(TlsPolicyTest, TlsToServersIsVerifiedAndPooled) {
  auto cert = pki_.issue("api", named("api.internal", {"api.internal"}));
  testing::TlsHttpBackend api("api1", cert.certFile, cert.keyFile);
  std::string y = fill(std::string(R"(
workers: 2
timeouts: { connect: 500ms, server_response: 2s, keep_alive: 5s, server_idle: 200ms }
)") + R"(
frontends:
  - { name: web, bind: 127.0.0.1:1, routes: [{ match: { path_prefix: /good }, backend: good }, { backend: bad }] }
backends:
  - name: good
    health: { type: tcp }
    tls: { ca_file: {ca}, server_name: api.internal }
    servers: [{ name: api1, address: "127.0.0.1:{port}" }]
  - name: bad
    health: { type: tcp }
    tls: { ca_file: {ca}, server_name: other.internal }
    servers: [{ name: api1, address: "127.0.0.1:{port}" }]
)",
                       {{"ca", pki_.caFile()}, {"port", std::to_string(api.port())}});
  auto run = start(y);
  ASSERT_TRUE(run);
  Client c(run->port("web"));
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(c.send("GET /good/" + std::to_string(i) + " HTTP/1.1\r\nHost: x\r\n\r\n"));
    Client::Response r;
    ASSERT_TRUE(c.readResponse(r));
    ASSERT_EQ(r.status, 200) << r.head;
    EXPECT_TRUE(contains(r.body, "server=api1 sni=api.internal path=/good/" + std::to_string(i)));
  }
  // Keep-alive to the server: one TLS connection (workers: 2, one client connection).
  EXPECT_EQ(api.handshakes(), 1);
  // The pool closes the idle connection (server_idle); the next one resumes the session.
  std::this_thread::sleep_for(700ms);
  auto again = testing::get(run->port("web"), "/good/again");
  EXPECT_EQ(again.status, 200);
  EXPECT_EQ(api.handshakes(), 2);
  EXPECT_EQ(api.resumed(), 1);
  // A server whose certificate does not carry the configured name is not used.
  auto r = testing::get(run->port("web"), "/other");
  EXPECT_EQ(r.status, 503) << r.head;
  std::string m = metrics(*run);
  EXPECT_TRUE(contains(m, "halb_backend_tls_handshakes_total{result=\"failed\"}")) << m;
  EXPECT_FALSE(contains(m, "halb_backend_tls_handshakes_total{result=\"failed\"} 0")) << m;
}

// ------------------------------------------------------------------ traffic shifting

class SplitTest : public TlsPolicyTest {
 protected:
  std::string yaml(int stable, int canary, const std::string& extra = "") {
    return fill(std::string(kHeader) + R"(
frontends:
  - name: web
    bind: 127.0.0.1:1
    routes:
      - name: api
        split:
          - { backend: stable, weight: {ws} }
          - { backend: canary, weight: {wc} }
)" + extra + R"(
backends:
  - name: stable
    servers: [{ name: s1, address: "127.0.0.1:{ps}" }]
  - name: canary
    servers: [{ name: c1, address: "127.0.0.1:{pc}" }]
  - name: shadow
    servers: [{ name: m1, address: "127.0.0.1:{pm}" }]
)",
                {{"ws", std::to_string(stable)},
                 {"wc", std::to_string(canary)},
                 {"ps", std::to_string(stable_.port())},
                 {"pc", std::to_string(canary_.port())},
                 {"pm", std::to_string(shadow_.port())}});
  }
  RecordingBackend stable_{"stable"}, canary_{"canary"}, shadow_{"shadow"};
};

TEST_F(SplitTest, NinetyFiveFiveWithinTwoPercentOverTenThousandRequests) {
  auto run = start(yaml(95, 5));
  ASSERT_TRUE(run);
  // Four keep-alive connections (spread over both workers), 2,500 requests each.
  std::vector<std::future<std::map<std::string, int>>> clients;
  for (int k = 0; k < 4; ++k)
    clients.push_back(std::async(std::launch::async, [&] {
      std::map<std::string, int> seen;
      Client c(run->port("web"));
      for (int i = 0; i < 2500; ++i) {
        if (!c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")) break;
        Client::Response r;
        if (!c.readResponse(r)) break;
        ++seen[r.body.substr(0, r.body.find(' '))];
      }
      return seen;
    }));
  int stable = 0, canary = 0;
  for (auto& f : clients) {
    auto m = f.get();
    stable += m["server=stable"];
    canary += m["server=canary"];
  }
  ASSERT_EQ(stable + canary, 10000);
  const double share = canary / 10000.0;
  EXPECT_NEAR(share, 0.05, 0.02) << canary << " canary of 10000";
  std::printf("[ measured ] 95/5 split over 10000 requests: %d stable, %d canary (%.2f%%)\n",
              stable, canary, share * 100);
}

TEST_F(SplitTest, CookiePinKeepsAUserOnTheSideTheyGot) {
  auto run = start(yaml(50, 50, "        pin: { cookie: HALB_SIDE }\n"));
  ASSERT_TRUE(run);
  std::map<std::string, int> sides;
  for (int user = 0; user < 20; ++user) {
    auto first = testing::get(run->port("web"), "/");
    ASSERT_EQ(first.status, 200);
    size_t p = first.head.find("Set-Cookie: HALB_SIDE=");
    ASSERT_NE(p, std::string::npos) << first.head;
    std::string side = first.head.substr(p + 22, first.head.find(';', p) - p - 22);
    EXPECT_TRUE(contains(first.body, "server=" + side)) << side << " " << first.body;
    ++sides[side];
    for (int i = 0; i < 5; ++i) {
      auto r = testing::get(run->port("web"), "/", "Cookie: HALB_SIDE=" + side + "\r\n");
      EXPECT_TRUE(contains(r.body, "server=" + side)) << r.body;
      EXPECT_FALSE(contains(r.head, "Set-Cookie")) << r.head;
    }
  }
  EXPECT_GT(sides["stable"], 0);
  EXPECT_GT(sides["canary"], 0);
}

TEST_F(SplitTest, ReloadChangesTheWeights) {
  auto run = start(yaml(100, 0));
  ASSERT_TRUE(run);
  EXPECT_TRUE(contains(testing::get(run->port("web"), "/").body, "server=stable"));
  auto next = load(yaml(0, 100));
  ASSERT_TRUE(next);
  run->engine->updatePools(snapshotOf(next));
  run->engine->updateRoutes(next);
  bool moved = false;
  for (int i = 0; i < 100 && !moved; ++i) {
    moved = contains(testing::get(run->port("web"), "/").body, "server=canary");
    if (!moved) std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(moved);
  for (int i = 0; i < 10; ++i)
    EXPECT_TRUE(contains(testing::get(run->port("web"), "/").body, "server=canary"));
}

TEST_F(SplitTest, MirrorCopiesAShareWithoutTouchingTheResponse) {
  auto run = start(yaml(100, 0, "        mirror: { backend: shadow, percent: 25 }\n"));
  ASSERT_TRUE(run);
  Client c(run->port("web"));
  for (int i = 0; i < 40; ++i) {
    ASSERT_TRUE(c.send("POST /m" + std::to_string(i) +
                       " HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody"));
    Client::Response r;
    ASSERT_TRUE(c.readResponse(r));
    ASSERT_EQ(r.status, 200);
    EXPECT_TRUE(contains(r.body, "server=stable")) << r.body;
  }
  // One worker served the connection: exactly 10 of its 40 requests were copied.
  for (int i = 0; i < 200 && shadow_.served() < 10; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(shadow_.served(), 10);
  EXPECT_EQ(stable_.served(), 40);
  for (const std::string& h : shadow_.heads()) {
    EXPECT_TRUE(contains(h, "X-Halb-Shadow: 1\r\n")) << h;
    EXPECT_TRUE(contains(h, "Connection: close\r\n")) << h;
    EXPECT_TRUE(h.rfind("POST /m", 0) == 0) << h;
  }
}

TEST_F(TlsPolicyTest, AStuckShadowDelaysNothingAndIsBounded) {
  HttpBackend web("web1");
  // A shadow that accepts connections (the kernel's backlog) and never answers.
  uint16_t blackholePort = 0;
  int hole = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::bind(hole, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    ASSERT_EQ(::listen(hole, 1024), 0);
    socklen_t len = sizeof a;
    ::getsockname(hole, reinterpret_cast<sockaddr*>(&a), &len);
    blackholePort = ntohs(a.sin_port);
  }
  auto run = start(fill(R"(
workers: 1
timeouts: { connect: 500ms, server_response: 5s }
frontends:
  - name: web
    bind: 127.0.0.1:1
    routes: [{ backend: web, mirror: { backend: shadow, percent: 100, max_in_flight: 4 } }]
backends:
  - { name: web, servers: [{ name: w1, address: "127.0.0.1:{w}" }] }
  - { name: shadow, servers: [{ name: h1, address: "127.0.0.1:{h}" }] }
)",
                        {{"w", std::to_string(web.port())}, {"h", std::to_string(blackholePort)}}));
  ASSERT_TRUE(run);
  Client c(run->port("web"));
  auto slowest = 0us;
  for (int i = 0; i < 30; ++i) {
    auto t0 = SteadyClock::now();
    ASSERT_TRUE(c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    Client::Response r;
    ASSERT_TRUE(c.readResponse(r));
    ASSERT_EQ(r.status, 200);
    slowest = std::max(
        slowest, std::chrono::duration_cast<std::chrono::microseconds>(SteadyClock::now() - t0));
  }
  // The copies wait on the shadow (5 s response timeout); the answers did not (the bound is
  // loose for a loaded machine: a response held by its copy would take 5 s).
  EXPECT_LT(slowest, 1s);
  // The last copy is decided just after its response went out: give it a moment.
  std::string m;
  for (int i = 0; i < 100; ++i) {
    m = metrics(*run);
    if (contains(m, "halb_mirror_total{result=\"dropped\"} 26")) break;
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(contains(m, "halb_mirror_total{result=\"dropped\"} 26")) << m;  // 4 in flight
  std::printf("[ measured ] slowest response with a stuck shadow: %lld us\n",
              static_cast<long long>(slowest.count()));
  run->engine->stop(0s);  // cuts the 4 copies still waiting
  ::close(hole);
}

// ------------------------------------------------------------------ retries

class RetryTest : public TlsPolicyTest {
 protected:
  std::string yaml(const std::string& retry, const std::string& budget = "") {
    return fill(std::string(kHeader) + R"(
frontends:
  - name: web
    bind: 127.0.0.1:1
    routes: [{ backend: app, retry: )" +
                    retry + R"( }]
backends:
  - name: app
)" + budget + R"(
    servers: [{ name: a1, address: "127.0.0.1:{p}" }]
)",
                {{"p", std::to_string(app_.port())}});
  }
  RecordingBackend app_{"app"};
};

TEST_F(RetryTest, NonIdempotentRequestsAreNeverRetried) {
  auto run = start(yaml("{ attempts: 2, on: [reset, 503] }"));
  ASSERT_TRUE(run);
  auto post = testing::get(run->port("web"), "/status?code=503", "");  // GET first: retried
  EXPECT_EQ(post.status, 503);
  EXPECT_EQ(app_.servedFor("GET"), 3);  // the first try and two retries
  Client c(run->port("web"));
  for (const char* m : {"POST", "PATCH"}) {
    ASSERT_TRUE(c.send(std::string(m) +
                       " /status?code=503 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"));
    Client::Response r;
    ASSERT_TRUE(c.readResponse(r));
    EXPECT_EQ(r.status, 503);
    EXPECT_EQ(app_.servedFor(m), 1) << m << " must go out once";
  }
  // A PUT with a body is idempotent but its body is not kept: not resent either.
  ASSERT_TRUE(c.send("PUT /status?code=503 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"));
  Client::Response r;
  ASSERT_TRUE(c.readResponse(r));
  EXPECT_EQ(app_.servedFor("PUT"), 1);
}

TEST_F(RetryTest, TheBudgetBoundsRetriesDuringAnOutage) {
  auto run = start(yaml("{ attempts: 3, on: [503] }",
                        "    retry_budget: { percent: 20, window: 10s, min_retries: 4 }\n"));
  ASSERT_TRUE(run);
  Client c(run->port("web"));
  const int requests = 200;
  for (int i = 0; i < requests; ++i) {
    ASSERT_TRUE(c.send("GET /status?code=503 HTTP/1.1\r\nHost: x\r\n\r\n"));
    Client::Response r;
    ASSERT_TRUE(c.readResponse(r));
    ASSERT_EQ(r.status, 503);
  }
  const int retries = app_.served() - requests;
  // Without a budget: 3 x 200 = 600 retries. With it: 20% of requests + the minimum (one
  // worker served this connection: its share of min_retries is 4 / 2 workers = 2).
  EXPECT_LE(retries, requests * 20 / 100 + 2);
  EXPECT_GE(retries, requests * 20 / 100 - 2);
  std::printf("[ measured ] outage, retry on 503 x3 with a 20%% budget: %d requests, %d retries\n",
              requests, retries);
  EXPECT_TRUE(contains(metrics(*run), "halb_retries_total{result=\"budget\"}"));
}

TEST_F(RetryTest, RouteTimeoutOverridesTheGlobalOne) {
  std::string y = yaml("{ attempts: 0 }");
  y.replace(y.find("retry: { attempts: 0 }"), 22, "timeouts: { server_response: 200ms }");
  auto run = start(y);
  ASSERT_TRUE(run);
  auto t0 = SteadyClock::now();
  auto r = testing::get(run->port("web"), "/slow?ms=1500");
  EXPECT_EQ(r.status, 504);
  EXPECT_LT(SteadyClock::now() - t0, 1s);  // the global server_response is 2 s
}

// ------------------------------------------------------------------ connection limits

TEST_F(TlsPolicyTest, MaxConnectionsAndTheQueueBoundHold) {
  RecordingBackend app("app");
  auto run = start(fill(R"(
workers: 2
timeouts: { connect: 500ms, server_response: 5s }
frontends: [{ name: web, bind: 127.0.0.1:1, default_backend: app }]
backends:
  - name: app
    max_connections: 1
    queue: { size: 2, timeout: 3s }
    servers: [{ name: a1, address: "127.0.0.1:{p}" }]
)",
                        {{"p", std::to_string(app.port())}}));
  ASSERT_TRUE(run);
  // Eight clients at once, each request taking 300 ms at the server: one runs, two wait
  // (across both workers), five are refused at once.
  std::vector<std::future<std::pair<int, std::chrono::milliseconds>>> clients;
  for (int k = 0; k < 8; ++k)
    clients.push_back(std::async(std::launch::async, [&] {
      auto t0 = SteadyClock::now();
      auto r = testing::get(run->port("web"), "/slow?ms=300");
      return std::make_pair(
          r.status, std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - t0));
    }));
  int ok = 0, busy = 0;
  for (auto& f : clients) {
    auto [status, took] = f.get();
    if (status == 200) ++ok;
    if (status == 503) {
      ++busy;
      EXPECT_LT(took, 250ms) << "a refusal is immediate";
    }
  }
  EXPECT_EQ(ok, 3);
  EXPECT_EQ(busy, 5);
  EXPECT_EQ(app.maxConcurrent(), 1);
  std::string m = metrics(*run);
  EXPECT_TRUE(contains(m, "halb_queue_total{result=\"full\"} 5")) << m;
  EXPECT_TRUE(contains(m, "halb_queue_total{result=\"queued\"} 2")) << m;
}

TEST_F(TlsPolicyTest, AQueuedRequestTimesOut) {
  RecordingBackend app("app");
  auto run = start(fill(R"(
workers: 1
timeouts: { connect: 500ms, server_response: 5s }
frontends: [{ name: web, bind: 127.0.0.1:1, default_backend: app }]
backends:
  - name: app
    max_connections: 1
    queue: { size: 5, timeout: 100ms }
    servers: [{ name: a1, address: "127.0.0.1:{p}" }]
)",
                        {{"p", std::to_string(app.port())}}));
  ASSERT_TRUE(run);
  auto slow = std::async(std::launch::async,
                         [&] { return testing::get(run->port("web"), "/slow?ms=600"); });
  std::this_thread::sleep_for(100ms);  // the slow request holds the only slot
  auto t0 = SteadyClock::now();
  auto r = testing::get(run->port("web"), "/");
  auto took = SteadyClock::now() - t0;
  EXPECT_EQ(r.status, 503);
  EXPECT_TRUE(contains(r.body, "connection limit")) << r.body;
  EXPECT_GE(took, 90ms);
  EXPECT_LT(took, 400ms);
  EXPECT_EQ(slow.get().status, 200);
  EXPECT_TRUE(contains(metrics(*run), "halb_queue_total{result=\"timeout\"} 1"));
}

TEST_F(TlsPolicyTest, TcpFrontendsHonourMaxConnections) {
  testing::EchoBackend echo("echo1");
  auto run = start(fill(R"(
workers: 2
frontends: [{ name: tcp, mode: tcp, bind: 127.0.0.1:1, default_backend: echo }]
backends:
  - name: echo
    max_connections: 1
    queue: { size: 1, timeout: 2s }
    servers: [{ name: e1, address: "127.0.0.1:{p}" }]
)",
                        {{"p", std::to_string(echo.port())}}));
  ASSERT_TRUE(run);
  auto first = std::make_unique<Client>(run->port("tcp"));
  EXPECT_EQ(first->readN(6), "echo1\n");
  // The second connection waits for the slot; the third finds the queue full and is closed.
  auto second = std::async(std::launch::async, [&] {
    Client c(run->port("tcp"));
    return c.readN(6);
  });
  std::this_thread::sleep_for(100ms);
  Client third(run->port("tcp"), 2000ms);
  std::string rest;
  EXPECT_TRUE(third.readToEof(rest));
  EXPECT_EQ(rest, "");
  EXPECT_EQ(echo.connectionsAccepted(), 1);
  first.reset();  // the slot frees: the waiting connection gets through
  EXPECT_EQ(second.get(), "echo1\n");
  EXPECT_EQ(echo.connectionsAccepted(), 2);
}

}  // namespace
}  // namespace halb::balancer
