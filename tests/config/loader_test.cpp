#include "config/loader.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>

namespace halb::config {
namespace {

using namespace std::chrono_literals;

LoadResult load(const std::string& yaml, const std::string& node = "lb1") {
  LoadOptions opt;
  opt.node = node;
  opt.checkFiles = false;
  return loadConfigString(yaml, "t.yaml", opt);
}

// All error lines, "line:col: path: message", for readable assertions.
std::string errors(const LoadResult& r) {
  std::string s;
  for (const auto& e : r.errors) s += e.toString() + "\n";
  return s;
}

bool hasError(const LoadResult& r, int line, int col, const std::string& path, const std::string& fragment) {
  for (const auto& e : r.errors)
    if (e.line == line && e.column == col && e.path == path && e.message.find(fragment) != std::string::npos)
      return true;
  return false;
}

const char* kMinimal = R"(
frontends:
  - name: web
    bind: 127.0.0.1:8080
    default_backend: app
backends:
  - name: app
    servers:
      - { name: a1, address: 127.0.0.1:9001 }
)";

TEST(Loader, ExamplePairIsValidForBothNodes) {
  for (const char* node : {"lb1", "lb2"}) {
    LoadOptions opt;
    opt.node = node;
    auto r = loadConfigFile(std::string(HALB_SOURCE_DIR) + "/examples/pair.yaml", opt);
    ASSERT_TRUE(r.ok()) << errors(r);
    const Config& c = *r.config;
    EXPECT_EQ(c.self.name, node);
    ASSERT_EQ(c.peers.size(), 1u);
    EXPECT_EQ(c.vrrp.priority, std::string(node) == "lb1" ? 150u : 100u);
    EXPECT_EQ(c.vrrp.advertInterval, 100ms);
    EXPECT_TRUE(c.statesync.enabled);
    EXPECT_EQ(c.statesync.listen.ip, *c.self.address);
    EXPECT_EQ(c.statesync.peer->ip, *c.peers[0].address);
    EXPECT_EQ(c.vips.at(0).interface, "eth0");
    EXPECT_EQ(c.frontends.size(), 2u);
  }
}

TEST(Loader, MinimalStandaloneGetsDefaults) {
  auto r = load(kMinimal);
  ASSERT_TRUE(r.ok()) << errors(r);
  const Config& c = *r.config;
  EXPECT_EQ(c.self.name, "lb1");
  EXPECT_FALSE(c.vrrp.enabled);
  EXPECT_FALSE(c.statesync.enabled);
  EXPECT_EQ(c.workers, 0u);
  EXPECT_EQ(c.admin.listen.toString(), "127.0.0.1:9100");
  const Backend& b = c.backends[0];
  EXPECT_EQ(b.algorithm, Algorithm::RoundRobin);
  EXPECT_EQ(b.servers[0].weight, 100u);
  EXPECT_EQ(b.health.type, HealthType::Tcp);
  EXPECT_EQ(c.frontends[0].mode, Mode::Http);
  EXPECT_EQ(c.timeouts.connect, 3s);
  EXPECT_EQ(c.limits.headerBytes, 32u * 1024);
}

TEST(Loader, ServerIdsDeriveFromNamesNotPositions) {
  auto a = load(R"(
frontends: [{ name: f, bind: ":80", default_backend: b }]
backends:
  - name: b
    servers: [{ name: x, address: 10.0.0.1:80 }, { name: y, address: 10.0.0.2:80 }]
)");
  auto b = load(R"(
frontends: [{ name: f, bind: ":80", default_backend: b }]
backends:
  - name: b
    servers: [{ name: y, address: 10.0.0.2:80 }, { name: x, address: 10.0.0.9:80 }]
)");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a.config->backends[0].servers[0].id, b.config->backends[0].servers[1].id);
  EXPECT_NE(a.config->backends[0].servers[0].id, a.config->backends[0].servers[1].id);
}

TEST(Loader, PerNodeOverridesApplyOnlyToThatNode) {
  const char* yaml = R"(
nodes:
  lb1: { address: 10.0.0.1, priority: 200, admin: { listen: 10.0.0.1:9100 }, workers: 2 }
  lb2: { address: 10.0.0.2, vrrp: { unicast: true } }
vips: [10.0.0.100/24]
vrrp: { interface: eth0, virtual_router_id: 7, priority: 90 }
statesync: { port: 7400, key_file: /k }
frontends: [{ name: f, bind: "10.0.0.100:80", default_backend: b }]
backends: [{ name: b, servers: [{ name: s, address: 10.0.1.1:80 }] }]
)";
  auto r1 = load(yaml, "lb1");
  ASSERT_TRUE(r1.ok()) << errors(r1);
  EXPECT_EQ(r1.config->vrrp.priority, 200u);
  EXPECT_EQ(r1.config->admin.listen.toString(), "10.0.0.1:9100");
  EXPECT_EQ(r1.config->workers, 2u);
  EXPECT_FALSE(r1.config->vrrp.unicast);
  EXPECT_EQ(r1.config->statesync.listen.toString(), "10.0.0.1:7400");
  EXPECT_EQ(r1.config->statesync.peer->toString(), "10.0.0.2:7400");
  auto r2 = load(yaml, "lb2");
  ASSERT_TRUE(r2.ok()) << errors(r2);
  EXPECT_EQ(r2.config->vrrp.priority, 90u);
  EXPECT_TRUE(r2.config->vrrp.unicast);
  ASSERT_EQ(r2.config->vrrp.unicastPeers.size(), 1u);
  EXPECT_EQ(r2.config->vrrp.unicastPeers[0].toString(), "10.0.0.1");
  EXPECT_EQ(r2.config->vrrp.sourceAddress->toString(), "10.0.0.2");
  EXPECT_EQ(r2.config->statesync.peer->toString(), "10.0.0.1:7400");
  EXPECT_EQ(r2.config->vips[0].interface, "eth0");
}

TEST(Loader, UnknownNodeIsAnErrorNamingTheKnownOnes) {
  auto r = load("nodes: { a: {}, b: {} }\n" + std::string(kMinimal), "c");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(errors(r).find("this node 'c' is not among nodes (a, b)"), std::string::npos) << errors(r);
}

TEST(Loader, FiveMistakesGiveFiveErrorsWithPositions) {
  const char* yaml = R"(nodes:
  lb1: { address: 10.0.0.1, priority: 300 }
vips: [10.0.0.100/24]
vrrp: { interface: eth0, virtual_router_id: 51 }
frontends:
  - name: web
    bind: 10.0.0.100:80
    mode: htp
    default_backend: nope
backends:
  - name: app
    servers:
      - { name: a, address: 10.0.1.1:80, wieght: 5 }
      - { name: b, address: 10.0.1.2:80, weight: 300 }
)";
  auto r = load(yaml);
  ASSERT_EQ(r.errors.size(), 5u) << errors(r);
  EXPECT_TRUE(hasError(r, 2, 39, "nodes.lb1.priority", "must be 1..254, got 300")) << errors(r);
  EXPECT_TRUE(hasError(r, 8, 11, "frontends[0].mode", "must be one of tcp, http")) << errors(r);
  EXPECT_TRUE(hasError(r, 9, 22, "frontends[0].default_backend", "unknown backend 'nope'")) << errors(r);
  EXPECT_TRUE(hasError(r, 13, 42, "backends[0].servers[0].wieght", "did you mean 'weight'")) << errors(r);
  EXPECT_TRUE(hasError(r, 14, 50, "backends[0].servers[1].weight", "must be 0..256, got 300")) << errors(r);
  EXPECT_EQ(r.errors[0].toString(), "t.yaml:2:39: nodes.lb1.priority: must be 1..254, got 300");
}

TEST(Loader, ReportsYamlSyntaxErrorsWithPosition) {
  auto r = load("frontends: [\n  - a\n");
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_GT(r.errors[0].line, 0);
  EXPECT_NE(r.errors[0].message.find("YAML syntax error"), std::string::npos);
}

TEST(Loader, ScalarErrors) {
  auto r = load(R"(
timeouts: { connect: 5, server_response: 2 sec, keep_alive: 1h30 }
limits: { header_size: 16kb, header_count: -1, request_line: 10MiB }
workers: many
logging: { level: loud, format: xml }
frontends:
  - { name: "bad name", bind: "10.0.0.1", default_backend: app, continuity: maybe }
backends:
  - name: app
    algorithm: fastest
    servers: [{ name: s, address: "10.0.0.1:99999" }]
)");
  std::string e = errors(r);
  EXPECT_NE(e.find("timeouts.connect: duration '5' needs a unit"), std::string::npos) << e;
  EXPECT_NE(e.find("timeouts.server_response: "), std::string::npos) << e;
  EXPECT_NE(e.find("timeouts.keep_alive: duration '1h30' needs a unit"), std::string::npos) << e;
  EXPECT_NE(e.find("limits.header_size: unknown unit 'kb'"), std::string::npos) << e;
  EXPECT_NE(e.find("limits.header_count: must be an integer"), std::string::npos) << e;
  EXPECT_NE(e.find("limits.request_line: must be between 64B and 1MiB"), std::string::npos) << e;
  EXPECT_NE(e.find("workers: must be 'auto' or 1..256"), std::string::npos) << e;
  EXPECT_NE(e.find("logging.level: must be one of debug, info, warn, error"), std::string::npos) << e;
  EXPECT_NE(e.find("logging.format: must be one of text, json"), std::string::npos) << e;
  EXPECT_NE(e.find("frontends[0].name: must be 1..64 characters"), std::string::npos) << e;
  EXPECT_NE(e.find("frontends[0].bind: expected 'address:port'"), std::string::npos) << e;
  EXPECT_NE(e.find("frontends[0].continuity: must be true or false"), std::string::npos) << e;
  EXPECT_NE(e.find("backends[0].algorithm: must be one of round_robin"), std::string::npos) << e;
  EXPECT_NE(e.find("backends[0].servers[0].address: invalid port '99999'"), std::string::npos) << e;
}

TEST(Loader, ShapeErrors) {
  auto r = load(R"(
frontends: { name: web }
backends:
  - name: app
    servers: none
  - just-a-string
)");
  std::string e = errors(r);
  EXPECT_NE(e.find("frontends: must be a list, got a mapping"), std::string::npos) << e;
  EXPECT_NE(e.find("backends[0].servers: must be a list, got a scalar"), std::string::npos) << e;
  EXPECT_NE(e.find("backends[1]: must be a mapping, got a scalar"), std::string::npos) << e;
  auto root = load("- 1\n- 2\n");
  EXPECT_NE(errors(root).find("the file must be a mapping"), std::string::npos);
}

TEST(Loader, DuplicatesAreErrors) {
  auto r = load(R"(
frontends:
  - { name: web, bind: "127.0.0.1:80", default_backend: app }
  - { name: web, bind: "127.0.0.1:80", default_backend: app }
backends:
  - name: app
    servers:
      - { name: a, address: 10.0.0.1:80 }
      - { name: a, address: 10.0.0.1:80 }
  - name: app
    algorithm: random
    algorithm: maglev
    servers: [{ name: z, address: 10.0.0.3:80 }]
)");
  std::string e = errors(r);
  EXPECT_NE(e.find("duplicate frontend name 'web'"), std::string::npos) << e;
  EXPECT_NE(e.find("127.0.0.1:80 is already bound by frontends[0]"), std::string::npos) << e;
  EXPECT_NE(e.find("duplicate server name 'a'"), std::string::npos) << e;
  EXPECT_NE(e.find("is listed twice"), std::string::npos) << e;
  EXPECT_NE(e.find("duplicate backend name 'app'"), std::string::npos) << e;
  EXPECT_NE(e.find("duplicate key 'algorithm'"), std::string::npos) << e;
}

TEST(Loader, CrossFieldRules) {
  auto r = load(R"(
vips: [10.0.0.100/24, "2001:db8::1/64"]
frontends:
  - name: db
    mode: tcp
    bind: ":5432"
    routes: [{ backend: app }]
  - name: web
    bind: ":80"
    routes:
      - { name: r, backend: ghost, match: { path: nope } }
      - { name: r, backend: app, match: { path_prefix: /a, path_regex: "^/b" } }
  - name: other
    mode: tcp
    bind: ":81"
    default_backend: app
backends:
  - name: app
    servers: []
    sticky: { mode: app_cookie }
    health: { type: tcp, path: /x, timeout: 3s }
)");
  std::string e = errors(r);
  EXPECT_NE(e.find("frontends[0].routes: routes need mode: http"), std::string::npos) << e;
  EXPECT_NE(e.find("frontends[0].default_backend: is required for mode: tcp"), std::string::npos) << e;
  EXPECT_NE(e.find("unknown backend 'ghost'"), std::string::npos) << e;
  EXPECT_NE(e.find("path: must start with '/'"), std::string::npos) << e;
  EXPECT_NE(e.find("give only one of path, path_prefix, path_regex"), std::string::npos) << e;
  EXPECT_NE(e.find("duplicate route name 'r'"), std::string::npos) << e;
  EXPECT_NE(e.find("uses sticky mode app_cookie, which needs an http frontend"), std::string::npos) << e;
  EXPECT_NE(e.find("servers: needs at least one server"), std::string::npos) << e;
  EXPECT_NE(e.find("sticky.name: is required for mode app_cookie"), std::string::npos) << e;
  EXPECT_NE(e.find("health.path: only applies to type: http"), std::string::npos) << e;
  EXPECT_NE(e.find("health.timeout: must not exceed interval"), std::string::npos) << e;
  EXPECT_NE(e.find("VIPs need a vrrp section"), std::string::npos) << e;
  EXPECT_NE(e.find("all VIPs of one virtual router must be the same family"), std::string::npos) << e;
}

TEST(Loader, VrrpAndStateSyncRequirements) {
  auto r = load(R"(
nodes: { lb1: {}, lb2: {} }
vips: [10.0.0.100/24]
vrrp: { priority: 0, advert_interval: 15ms, unicast: true, auth: hmac }
statesync: { port: 7400 }
frontends: [{ name: f, bind: ":80", default_backend: b }]
backends: [{ name: b, servers: [{ name: s, address: 10.0.1.1:80 }] }]
)");
  std::string e = errors(r);
  EXPECT_NE(e.find("vrrp.interface: is required"), std::string::npos) << e;
  EXPECT_NE(e.find("vrrp.virtual_router_id: is required"), std::string::npos) << e;
  EXPECT_NE(e.find("vrrp.priority: must be 1..254, got 0"), std::string::npos) << e;
  EXPECT_NE(e.find("vrrp.advert_interval: must be a multiple of 10ms"), std::string::npos) << e;
  EXPECT_NE(e.find("vrrp.auth_key_file: is required with auth: hmac"), std::string::npos) << e;
  EXPECT_NE(e.find("vrrp.unicast_peers: unicast needs peers"), std::string::npos) << e;
  EXPECT_NE(e.find("statesync.listen: is required"), std::string::npos) << e;
  EXPECT_NE(e.find("statesync.peer: is required"), std::string::npos) << e;
  EXPECT_NE(e.find("statesync.key_file: is required"), std::string::npos) << e;
}

TEST(Loader, StateSyncTimers) {
  const char* base = R"(
nodes: { lb1: { address: 10.0.0.1 }, lb2: { address: 10.0.0.2 } }
frontends: [{ name: f, bind: ":80", default_backend: b }]
backends: [{ name: b, servers: [{ name: s, address: 10.0.1.1:80 }] }]
)";
  // peer_timeout: 1 s, or 10 heartbeats when the heartbeat is too slow for 1 s.
  auto r = load(std::string(base) + "statesync: { port: 7400, key_file: /k, heartbeat: 50ms }\n");
  ASSERT_TRUE(r.ok()) << errors(r);
  EXPECT_EQ(r.config->statesync.peerTimeout, 1s);
  r = load(std::string(base) + "statesync: { port: 7400, key_file: /k, heartbeat: 2s }\n");
  ASSERT_TRUE(r.ok()) << errors(r);
  EXPECT_EQ(r.config->statesync.peerTimeout, 20s);
  r = load(std::string(base) + "statesync: { port: 7400, key_file: /k, peer_timeout: 300ms }\n");
  ASSERT_TRUE(r.ok()) << errors(r);
  EXPECT_EQ(r.config->statesync.peerTimeout, 300ms);
  // A timeout that two heartbeats do not fit in would cut healthy links.
  r = load(std::string(base) +
           "statesync: { port: 7400, key_file: /k, heartbeat: 100ms, peer_timeout: 150ms, reconnect_min: 3s }\n");
  std::string e = errors(r);
  EXPECT_NE(e.find("statesync.peer_timeout: must be at least twice heartbeat"), std::string::npos) << e;
  EXPECT_NE(e.find("statesync.reconnect_max: must not be below reconnect_min"), std::string::npos) << e;
}

TEST(Loader, RouteMatchesAreNormalised) {
  auto r = load(R"(
frontends:
  - name: web
    bind: ":80"
    default_backend: b
    routes:
      - name: api
        backend: b
        match:
          host: [API.Example.com, "*.Example.org"]
          path_regex: "^/v[0-9]+/"
          headers: [{ name: X-Canary, value: "1" }]
          cookies: [{ name: Beta }]
          method: [get, POST]
backends: [{ name: b, servers: [{ name: s, address: 10.0.1.1:80 }] }]
)");
  ASSERT_TRUE(r.ok()) << errors(r);
  const Match& m = r.config->frontends[0].routes[0].match;
  ASSERT_EQ(m.hosts.size(), 2u);
  EXPECT_EQ(m.hosts[0].value, "api.example.com");
  EXPECT_EQ(m.hosts[1].kind, HostMatchKind::Wildcard);
  EXPECT_EQ(m.hosts[1].value, ".example.org");
  EXPECT_EQ(m.path->kind, PathMatchKind::Regex);
  EXPECT_EQ(m.headers[0].name, "x-canary");
  EXPECT_EQ(m.cookies[0].name, "Beta");
  EXPECT_EQ(m.methods, (std::vector<std::string>{"GET", "POST"}));
  auto bad = load(R"(
frontends:
  - name: web
    bind: ":80"
    default_backend: b
    routes: [{ backend: b, match: { path_regex: "([", host: "a*b", method: "G3T" } }]
backends: [{ name: b, servers: [{ name: s, address: 10.0.1.1:80 }] }]
)");
  std::string e = errors(bad);
  EXPECT_NE(e.find("invalid regular expression"), std::string::npos) << e;
  EXPECT_NE(e.find("a host is exact"), std::string::npos) << e;
  EXPECT_NE(e.find("must be an HTTP method"), std::string::npos) << e;
}

TEST(Loader, KeyFilesAreCheckedAndResolvedRelativeToTheConfig) {
  std::string dir = ::testing::TempDir() + "/halb-cfg-" + std::to_string(::getpid());
  ::mkdir(dir.c_str(), 0700);
  std::ofstream(dir + "/sync.key") << "0123456789abcdef0123456789\n";
  ::chmod((dir + "/sync.key").c_str(), 0644);
  std::ofstream(dir + "/halb.yaml") << R"(
nodes: { lb1: { address: 10.0.0.1 }, lb2: { address: 10.0.0.2 } }
statesync: { port: 7400, key_file: sync.key }
vrrp: { enabled: false, auth: hmac, auth_key_file: missing.key }
frontends: [{ name: f, bind: ":80", default_backend: b }]
backends: [{ name: b, servers: [{ name: s, address: 10.0.1.1:80 }] }]
)";
  LoadOptions opt;
  opt.node = "lb1";
  auto r = loadConfigFile(dir + "/halb.yaml", opt);
  ASSERT_EQ(r.errors.size(), 1u) << errors(r);
  EXPECT_NE(r.errors[0].message.find("missing.key"), std::string::npos);
  EXPECT_EQ(r.errors[0].line, 4);
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_NE(r.warnings[0].toString().find("warning: key file"), std::string::npos);
  ::chmod((dir + "/sync.key").c_str(), 0600);
  std::ofstream(dir + "/missing.key") << "0123456789abcdef0123456789\n";
  ::chmod((dir + "/missing.key").c_str(), 0600);
  auto ok = loadConfigFile(dir + "/halb.yaml", opt);
  ASSERT_TRUE(ok.ok()) << errors(ok);
  EXPECT_TRUE(ok.warnings.empty());
  EXPECT_EQ(ok.config->statesync.keyFile, dir + "/sync.key");
}

TEST(Loader, MissingFileIsOneClearError) {
  LoadOptions opt;
  auto r = loadConfigFile("/nonexistent/halb.yaml", opt);
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].toString(), "/nonexistent/halb.yaml: cannot open: No such file or directory");
}

TEST(Loader, DescribeShowsResolvedSettings) {
  auto r = load(kMinimal);
  ASSERT_TRUE(r.ok());
  std::string d = describe(*r.config);
  EXPECT_NE(d.find("node: lb1"), std::string::npos);
  EXPECT_NE(d.find("vrrp: off"), std::string::npos);
  EXPECT_NE(d.find("web: http on 127.0.0.1:8080 -> app"), std::string::npos) << d;
  EXPECT_NE(d.find("a1 127.0.0.1:9001 weight 100"), std::string::npos) << d;
}

}  // namespace
}  // namespace halb::config
