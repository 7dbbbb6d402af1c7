#include "balancer/pool_manager.h"

#include <gtest/gtest.h>

#include "config/loader.h"

namespace halb::balancer {
namespace {

using namespace std::chrono_literals;

config::ConfigPtr load(const std::string& backends) {
  std::string yaml =
      "frontends:\n  - {name: f, bind: 127.0.0.1:8080, default_backend: web}\n"
      "backends:\n" +
      backends;
  auto r = config::loadConfigString(yaml, "test.yaml", {.node = "", .checkFiles = false});
  for (const auto& e : r.errors) ADD_FAILURE() << e.toString();
  return r.config;
}

const std::string kWeb =
    "  - name: web\n"
    "    algorithm: maglev\n"
    "    slow_start: 10s\n"
    "    health: {type: tcp, interval: 1s, timeout: 500ms, rise: 2, fall: 2}\n"
    "    outlier: {consecutive_failures: 3, base_ejection: 10s, max_ejection: 40s, "
    "max_ejected_percent: 50}\n"
    "    servers:\n"
    "      - {name: a, address: 10.0.0.1:80}\n"
    "      - {name: b, address: 10.0.0.2:80}\n"
    "      - {name: c, address: 10.0.0.3:80, weight: 50}\n"
    "      - {name: d, address: 10.0.0.4:80}\n";

class PoolManagerTest : public ::testing::Test {
 protected:
  PoolManagerTest() {
    cfg = load(kWeb);
    PoolManager::Options o;
    o.workers = 2;
    o.publish = [this](PoolSnapshotPtr s) { published.push_back(std::move(s)); };
    o.wake = [this] { ++wakes; };
    o.onBackendHealth = [this](const std::string& b, bool h) { healthEvents.emplace_back(b, h); };
    pm = std::make_unique<PoolManager>(o, cfg, clock.now());
  }
  const BackendView& web() { return pm->snapshot()->backends.at(0); }
  const ServerView& server(const char* name) {
    for (const auto& s : web().servers)
      if (s.config->name == name) return s;
    throw std::runtime_error("no server");
  }
  uint64_t id(const char* name) { return *pm->findServer("web", name); }
  void check(const char* name, bool ok) {
    pm->onCheckResult(id(name), {ok, ok ? "connected" : "refused", 1ms}, clock.now());
  }
  void fail(const char* name, int times, size_t worker = 0, Outcome o = Outcome::ConnectFailure) {
    for (int i = 0; i < times; ++i) {
      auto snap = pm->snapshot();
      pm->reporter(worker).report(snap->backends[0], server(name), o);
    }
  }

  ManualClock clock;
  config::ConfigPtr cfg;
  std::vector<PoolSnapshotPtr> published;
  std::vector<std::pair<std::string, bool>> healthEvents;
  int wakes = 0;
  std::unique_ptr<PoolManager> pm;
};

TEST_F(PoolManagerTest, BootSnapshotServesAtOnce) {
  ASSERT_EQ(published.size(), 1u);
  EXPECT_EQ(web().usableCount(), 4u);        // Unknown counts as up at boot
  EXPECT_EQ(server("c").weight, 50u);        // no slow start at boot
  EXPECT_NE(web().algorithmState, nullptr);  // maglev table built here
  EXPECT_EQ(healthEvents, (std::vector<std::pair<std::string, bool>>{{"web", true}}));
  EXPECT_TRUE(pm->backendHasHealthyServer("web"));
  // Stats are shared by id across snapshots.
  auto stats = server("a").stats;
  check("a", true);  // Unknown -> Up: a transition, so a new snapshot
  EXPECT_EQ(published.size(), 2u);
  EXPECT_EQ(server("a").stats, stats);
}

TEST_F(PoolManagerTest, RiseFallAndBackendHealth) {
  for (const char* s : {"a", "b", "c", "d"}) check(s, true);
  size_t n = published.size();
  check("a", false);
  EXPECT_EQ(published.size(), n);  // fall 2: nothing yet
  check("a", false);
  EXPECT_FALSE(server("a").healthy);
  for (const char* s : {"b", "c", "d"}) check(s, false), check(s, false);
  EXPECT_FALSE(pm->backendHasHealthyServer("web"));
  EXPECT_EQ(healthEvents.back(), (std::pair<std::string, bool>{"web", false}));
  EXPECT_EQ(web().usableCount(), 0u);
  check("b", true);
  check("b", true);
  EXPECT_TRUE(pm->backendHasHealthyServer("web"));
  EXPECT_EQ(healthEvents.back(), (std::pair<std::string, bool>{"web", true}));
}

TEST_F(PoolManagerTest, SlowStartAfterRecovery) {
  check("a", false);  // first result: down at once
  EXPECT_FALSE(server("a").healthy);
  check("a", true);
  check("a", true);  // rise 2: up, ramping
  EXPECT_TRUE(server("a").healthy);
  EXPECT_EQ(server("a").weight, 1u);
  ASSERT_TRUE(pm->nextDeadline());
  EXPECT_EQ(*pm->nextDeadline(), clock.now() + 500ms);  // 10s / 20 steps
  clock.advance(5s);
  pm->poll(clock.now());
  EXPECT_EQ(server("a").weight, 50u);
  clock.advance(5s);
  pm->poll(clock.now());
  EXPECT_EQ(server("a").weight, 100u);
  EXPECT_FALSE(pm->nextDeadline());
  // A runtime weight override is ramped too, and restored.
  pm->setWeight(id("a"), 200, clock.now());
  EXPECT_EQ(server("a").weight, 200u);
  pm->setWeight(id("a"), std::nullopt, clock.now());
  EXPECT_EQ(server("a").weight, 100u);
}

TEST_F(PoolManagerTest, OutlierEjectionAndReturn) {
  fail("a", 2);
  pm->poll(clock.now());
  EXPECT_TRUE(server("a").healthy);
  EXPECT_EQ(wakes, 0);
  // A success in between breaks the streak (on any worker).
  pm->reporter(1).report(web(), server("a"), Outcome::Success);
  fail("a", 2, 1);
  pm->poll(clock.now());
  EXPECT_TRUE(server("a").healthy);
  fail("a", 1, 1, Outcome::Response5xx);  // third in a row: eject
  EXPECT_EQ(wakes, 1);
  pm->poll(clock.now());
  EXPECT_FALSE(server("a").healthy);
  EXPECT_EQ(*pm->nextDeadline(), clock.now() + 10s);
  EXPECT_EQ(server("a").stats->consecutiveFailures.load(), 0u);
  clock.advance(10s);
  pm->poll(clock.now());
  EXPECT_TRUE(server("a").healthy);
  EXPECT_EQ(server("a").weight, 1u);  // slow start after an ejection too
  // Fails again: twice as long.
  fail("a", 3);
  pm->poll(clock.now());
  EXPECT_EQ(*pm->nextDeadline(), clock.now() + 20s);
}

TEST_F(PoolManagerTest, NeverEjectsMoreThanMaxPercent) {
  fail("a", 3);
  fail("b", 3);
  fail("c", 3);  // 50% of 4 = 2 may be ejected
  pm->poll(clock.now());
  EXPECT_FALSE(server("a").healthy);
  EXPECT_FALSE(server("b").healthy);
  EXPECT_TRUE(server("c").healthy);
  // c keeps failing: it is asked again every `consecutive_failures`, and ejected once a slot
  // frees up.
  clock.advance(10s);
  pm->poll(clock.now());  // a and b return
  fail("c", 3);
  pm->poll(clock.now());
  EXPECT_FALSE(server("c").healthy);
  PromWriter w;
  pm->writeMetrics(w, clock.now());
  EXPECT_NE(w.text().find("halb_outlier_ejections_refused_total 1"), std::string::npos) << w.text();
}

TEST_F(PoolManagerTest, AdminStates) {
  pm->setAdmin(id("b"), AdminState::Drain, clock.now());
  EXPECT_FALSE(server("b").acceptsNew());
  EXPECT_TRUE(server("b").acceptsSticky());
  pm->setAdmin(id("b"), AdminState::Maint, clock.now());
  EXPECT_FALSE(server("b").acceptsSticky());
  pm->setAdmin(id("b"), AdminState::Ready, clock.now());
  EXPECT_TRUE(server("b").acceptsNew());
  EXPECT_EQ(server("b").weight, 1u);  // back from maintenance: slow start
  EXPECT_FALSE(pm->setAdmin(12345, AdminState::Drain, clock.now()));
  EXPECT_FALSE(pm->findServer("web", "zz"));
}

TEST_F(PoolManagerTest, ReloadKeepsStateOfRemainingServers) {
  check("a", false);
  pm->setAdmin(id("b"), AdminState::Drain, clock.now());
  auto statsB = server("b").stats;
  std::string next = kWeb;
  next.replace(next.find("      - {name: d"), std::string::npos,
               "      - {name: e, address: 10.0.0.5:80}\n");
  pm->applyConfig(load(next), clock.now());
  EXPECT_FALSE(server("a").healthy);                // kept: down
  EXPECT_EQ(server("b").admin, AdminState::Drain);  // kept: drained
  EXPECT_EQ(server("b").stats, statsB);             // counters continue
  EXPECT_FALSE(server("e").healthy);                // new by reload: must pass a check first
  EXPECT_EQ(web().servers.size(), 4u);
  check("e", true);
  EXPECT_TRUE(server("e").healthy);
}

TEST_F(PoolManagerTest, MetricsAndStatus) {
  check("a", false);
  PromWriter w;
  pm->writeMetrics(w, clock.now());
  const std::string& t = w.text();
  EXPECT_NE(t.find("halb_server_healthy{backend=\"web\",server=\"a\"} 0"), std::string::npos) << t;
  EXPECT_NE(t.find("halb_server_healthy{backend=\"web\",server=\"b\"} 1"), std::string::npos);
  EXPECT_NE(t.find("halb_backend_no_healthy_server{backend=\"web\"} 0"), std::string::npos);
  EXPECT_NE(t.find("halb_server_admin_state{backend=\"web\",server=\"a\",state=\"ready\"} 1"),
            std::string::npos);
  std::string j = pm->statusJson(clock.now());
  EXPECT_NE(j.find("\"name\":\"a\""), std::string::npos) << j;
  EXPECT_NE(j.find("\"health\":\"down\""), std::string::npos) << j;
  EXPECT_NE(j.find("\"detail\":\"refused\""), std::string::npos) << j;
  EXPECT_EQ(std::count(j.begin(), j.end(), '{'), std::count(j.begin(), j.end(), '}'));
}

}  // namespace
}  // namespace halb::balancer
