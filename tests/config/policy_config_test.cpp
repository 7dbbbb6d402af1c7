// Traffic policies in the configuration: splits, pinning, mirrors, retries, per-route
// timeouts, per-server connection limits with a queue, retry budgets.
#include <gtest/gtest.h>

#include "config/loader.h"

namespace halb::config {
namespace {

using namespace std::chrono_literals;

LoadResult load(const std::string& yaml) {
  LoadOptions opt;
  opt.node = "lb1";
  opt.checkFiles = false;
  return loadConfigString(yaml, "t.yaml", opt);
}

std::string errors(const LoadResult& r) {
  std::string s;
  for (const auto& e : r.errors) s += e.toString() + "\n";
  return s;
}

const char* kBackends = R"(
backends:
  - name: stable
    servers: [{ name: a, address: 10.0.0.1:80 }]
  - name: canary
    servers: [{ name: a, address: 10.0.0.2:80 }]
  - name: shadow
    servers: [{ name: a, address: 10.0.0.3:80 }]
)";

TEST(PolicyConfig, SplitPinMirrorRetryTimeouts) {
  auto r = load(std::string(R"(
frontends:
  - name: web
    bind: ":80"
    routes:
      - name: api
        match: { path_prefix: /api }
        split:
          - { backend: stable, weight: 95 }
          - { backend: canary, weight: 5 }
        pin: { cookie: HALB_SIDE }
        mirror: { backend: shadow, percent: 12.5, max_in_flight: 8 }
        retry: { attempts: 2, on: [connect_failure, reset, 503, 5xx] }
        timeouts: { connect: 500ms, server_response: 2s }
      - name: rest
        backend: stable
)") + kBackends);
  ASSERT_TRUE(r.ok()) << errors(r);
  const Route& api = r.config->frontends[0].routes[0];
  ASSERT_EQ(api.split.size(), 2u);
  EXPECT_EQ(api.split[0].backend, "stable");
  EXPECT_EQ(api.split[1].weight, 5u);
  EXPECT_EQ(api.backend, "stable");  // the first target, for code that ignores splits
  EXPECT_EQ(api.pin.kind, PinKind::Cookie);
  EXPECT_EQ(api.pin.name, "HALB_SIDE");
  ASSERT_TRUE(api.mirror);
  EXPECT_EQ(api.mirror->backend, "shadow");
  EXPECT_EQ(api.mirror->perMillion, 125000u);
  EXPECT_EQ(api.mirror->maxInFlight, 8u);
  EXPECT_EQ(api.retry.attempts, 2u);
  EXPECT_TRUE(api.retry.onConnectFailure);
  EXPECT_TRUE(api.retry.onReset);
  EXPECT_FALSE(api.retry.onTimeout);
  EXPECT_EQ(api.retry.statuses.size(), 100u);  // 5xx, with 503 once
  EXPECT_EQ(api.timeouts.connect, 500ms);
  EXPECT_EQ(api.timeouts.serverResponse, 2s);
  const Route& rest = r.config->frontends[0].routes[1];
  EXPECT_TRUE(rest.split.empty());
  EXPECT_EQ(rest.retry.attempts, 2u);  // limits.connect_retries
  EXPECT_TRUE(rest.retry.onConnectFailure);
  EXPECT_TRUE(rest.retry.statuses.empty());
  EXPECT_FALSE(rest.timeouts.connect);
}

TEST(PolicyConfig, HeaderPinIsLowerCase) {
  auto r = load(std::string(R"(
frontends:
  - name: web
    bind: ":80"
    routes:
      - backend: stable
        split: [{ backend: stable, weight: 90 }, { backend: canary, weight: 10 }]
        pin: { header: X-User-Id }
)") + kBackends);
  // backend and split together is an error; fix it and check the pin.
  ASSERT_FALSE(r.ok());
  EXPECT_NE(errors(r).find("routes[0].backend: give either backend or split"), std::string::npos)
      << errors(r);
  r = load(std::string(R"(
frontends:
  - name: web
    bind: ":80"
    routes:
      - split: [{ backend: stable, weight: 90 }, { backend: canary, weight: 10 }]
        pin: { header: X-User-Id }
)") + kBackends);
  ASSERT_TRUE(r.ok()) << errors(r);
  EXPECT_EQ(r.config->frontends[0].routes[0].pin.kind, PinKind::Header);
  EXPECT_EQ(r.config->frontends[0].routes[0].pin.name, "x-user-id");
}

TEST(PolicyConfig, PolicyErrors) {
  auto r = load(std::string(R"(
frontends:
  - name: web
    bind: ":80"
    routes:
      - name: r0
        split: [{ backend: stable, weight: 0 }, { backend: nope, weight: 0 }]
      - name: r1
        split: [{ backend: stable, weight: 5 }, { backend: stable, weight: 5 }]
      - name: r2
        backend: stable
        pin: { cookie: "a b" }
      - name: r3
        backend: stable
        mirror: { backend: stable, percent: 0 }
      - name: r4
        backend: stable
        mirror: { backend: shadow, percent: 101 }
        retry: { attempts: 9, on: [sometimes, 302] }
      - name: r5
        split: []
)") + kBackends);
  ASSERT_FALSE(r.ok());
  std::string e = errors(r);
  EXPECT_NE(e.find("routes[0].split: weights must not all be 0"), std::string::npos) << e;
  EXPECT_NE(e.find("routes[0].split[1].backend: unknown backend 'nope'"), std::string::npos) << e;
  EXPECT_NE(e.find("routes[1].split[1].backend: backend 'stable' is listed twice"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("routes[2].pin.cookie: is not a valid cookie name"), std::string::npos) << e;
  EXPECT_NE(e.find("routes[2].pin: only applies to a split"), std::string::npos) << e;
  EXPECT_NE(e.find("routes[3].mirror.percent: must be a percentage above 0"), std::string::npos)
      << e;
  EXPECT_NE(e.find("routes[3].mirror.backend: mirrors to the backend that serves the route"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("routes[4].mirror.percent: must be a percentage above 0"), std::string::npos)
      << e;
  EXPECT_NE(e.find("routes[4].retry.attempts: must be 0..5, got 9"), std::string::npos) << e;
  EXPECT_NE(
      e.find("routes[4].retry.on[0]: must be connect_failure, reset, timeout, 5xx or a status"),
      std::string::npos)
      << e;
  EXPECT_NE(e.find("routes[4].retry.on[1]: must be connect_failure"), std::string::npos) << e;
  EXPECT_NE(e.find("routes[5].split: needs at least one backend"), std::string::npos) << e;
}

TEST(PolicyConfig, RouteWithoutBackendOrSplitIsAnError) {
  auto r = load(std::string(R"(
frontends:
  - name: web
    bind: ":80"
    routes: [{ name: r, match: { path: /x } }]
)") + kBackends);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(errors(r).find("routes[0].backend: is required"), std::string::npos) << errors(r);
}

TEST(PolicyConfig, ConnectionLimitsQueueAndBudget) {
  auto r = load(R"(
frontends: [{ name: f, bind: ":80", default_backend: b }]
backends:
  - name: b
    max_connections: 100
    queue: { size: 50, timeout: 250ms }
    retry_budget: { percent: 10, window: 5s, min_retries: 3 }
    servers:
      - { name: s1, address: 10.0.0.1:80 }
      - { name: s2, address: 10.0.0.2:80, max_connections: 10 }
  - name: c
    servers: [{ name: s, address: 10.0.0.3:80 }]
)");
  ASSERT_TRUE(r.ok()) << errors(r);
  const Backend& b = r.config->backends[0];
  EXPECT_EQ(b.maxConnections, 100u);
  EXPECT_EQ(b.queue.size, 50u);
  EXPECT_EQ(b.queue.timeout, 250ms);
  EXPECT_EQ(b.retryBudget.percent, 10u);
  EXPECT_EQ(b.retryBudget.window, 5s);
  EXPECT_EQ(b.retryBudget.minRetries, 3u);
  EXPECT_EQ(b.limitOf(b.servers[0]), 100u);
  EXPECT_EQ(b.limitOf(b.servers[1]), 10u);
  const Backend& c = r.config->backends[1];
  EXPECT_EQ(c.maxConnections, 0u);
  EXPECT_EQ(c.queue.size, 0u);
  EXPECT_EQ(c.retryBudget.percent, 20u);

  r = load(R"(
frontends: [{ name: f, bind: ":80", default_backend: b }]
backends:
  - name: b
    queue: { size: 5 }
    retry_budget: { percent: 150, window: 1ms }
    servers: [{ name: s1, address: 10.0.0.1:80 }]
)");
  ASSERT_FALSE(r.ok());
  std::string e = errors(r);
  EXPECT_NE(e.find("backends[0].queue: has no use without max_connections"), std::string::npos)
      << e;
  EXPECT_NE(e.find("backends[0].retry_budget.percent: must be 0..100, got 150"), std::string::npos)
      << e;
  EXPECT_NE(e.find("backends[0].retry_budget.window: must be between 100ms and 1h"),
            std::string::npos)
      << e;
}

TEST(PolicyConfig, TlsHandshakeTimeout) {
  auto r = load(R"(
timeouts: { tls_handshake: 3s }
frontends: [{ name: f, bind: ":80", default_backend: b }]
backends: [{ name: b, servers: [{ name: s, address: 10.0.0.1:80 }] }]
)");
  ASSERT_TRUE(r.ok()) << errors(r);
  EXPECT_EQ(r.config->timeouts.tlsHandshake, 3s);
}

}  // namespace
}  // namespace halb::config
