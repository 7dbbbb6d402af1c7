#include "balancer/health.h"

#include <gtest/gtest.h>

namespace halb::balancer {
namespace {

using namespace std::chrono_literals;

TEST(HealthTracker, FirstResultDecidesThenRiseFall) {
  HealthTracker t(2, 3, true);
  EXPECT_EQ(t.status(), HealthStatus::Unknown);
  EXPECT_TRUE(t.up());  // boot: optimistic until the first check
  EXPECT_TRUE(t.onResult(false));
  EXPECT_EQ(t.status(), HealthStatus::Down);
  EXPECT_FALSE(t.onResult(true));   // rise 2: one success is not enough
  EXPECT_FALSE(t.onResult(false));  // and a failure resets the streak
  EXPECT_FALSE(t.onResult(true));
  EXPECT_TRUE(t.onResult(true));
  EXPECT_EQ(t.status(), HealthStatus::Up);
  EXPECT_FALSE(t.onResult(false));
  EXPECT_FALSE(t.onResult(false));
  EXPECT_FALSE(t.onResult(true));  // fall 3: the streak restarts
  EXPECT_FALSE(t.onResult(false));
  EXPECT_FALSE(t.onResult(false));
  EXPECT_TRUE(t.onResult(false));
  EXPECT_EQ(t.status(), HealthStatus::Down);
  EXPECT_FALSE(t.up());
}

TEST(HealthTracker, AddedByReloadMustPassFirst) {
  HealthTracker t(5, 5, false);
  EXPECT_FALSE(t.up());
  EXPECT_TRUE(t.onResult(true));  // one success, not `rise`
  EXPECT_TRUE(t.up());
}

TEST(Outlier, BackoffDoublesUpToMaxAndDecays) {
  config::OutlierDetection cfg;
  cfg.baseEjection = 10s;
  cfg.maxEjection = 60s;
  OutlierTracker o;
  ManualClock clock;
  std::vector<Duration> got;
  for (int i = 0; i < 5; ++i) {
    got.push_back(o.eject(clock.now(), cfg));
    EXPECT_TRUE(o.ejected(clock.now()));
    clock.advance(got.back());
    EXPECT_FALSE(o.ejected(clock.now()));
    clock.advance(1s);  // fails again soon after it returns
  }
  EXPECT_EQ(got, (std::vector<Duration>{10s, 20s, 40s, 60s, 60s}));
  EXPECT_EQ(o.ejections(), 5u);
  clock.advance(60s);  // a quiet max_ejection: back to base
  EXPECT_EQ(o.eject(clock.now(), cfg), 10s);
}

TEST(Outlier, MaxEjected) {
  EXPECT_EQ(maxEjected(10, 50), 5u);
  EXPECT_EQ(maxEjected(3, 10), 1u);  // at least one of two or more
  EXPECT_EQ(maxEjected(1, 50), 0u);  // never the only server
  EXPECT_EQ(maxEjected(10, 0), 0u);
  EXPECT_EQ(maxEjected(4, 100), 4u);
}

TEST(SlowStart, LinearRamp) {
  ManualClock c;
  TimePoint since = c.now();
  EXPECT_EQ(slowStartWeight(100, since, since, 10s), 1u);
  EXPECT_EQ(slowStartWeight(100, since, since + 1s, 10s), 10u);
  EXPECT_EQ(slowStartWeight(100, since, since + 5s, 10s), 50u);
  EXPECT_EQ(slowStartWeight(100, since, since + 9999ms, 10s), 100u);  // rounded up
  EXPECT_EQ(slowStartWeight(100, since, since + 10s, 10s), 100u);
  EXPECT_EQ(slowStartWeight(3, since, since + 1ms, 10s), 1u);  // never 0 (= drain)
  EXPECT_EQ(slowStartWeight(0, since, since + 1s, 10s), 0u);
  EXPECT_EQ(slowStartWeight(100, since, since + 1s, 0s), 100u);
}

}  // namespace
}  // namespace halb::balancer
