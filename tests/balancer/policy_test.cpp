// Traffic policies, pure: splits and pinning, mirror sampling, retry rules and budgets,
// connection slots and the wait queue. Time is a ManualClock.
#include <gtest/gtest.h>

#include <map>
#include <thread>

#include "balancer/admission.h"
#include "balancer/retry.h"
#include "balancer/traffic.h"

namespace halb::balancer {
namespace {

using namespace std::chrono_literals;

struct Req : RequestView {
  std::map<std::string, std::string> headers, cookies;
  std::string_view method() const override { return "GET"; }
  std::string_view host() const override { return "example.com"; }
  std::string_view path() const override { return "/"; }
  std::optional<std::string_view> header(std::string_view n) const override {
    auto it = headers.find(std::string(n));
    if (it == headers.end()) return std::nullopt;
    return std::string_view(it->second);
  }
  std::optional<std::string_view> cookie(std::string_view n) const override {
    auto it = cookies.find(std::string(n));
    if (it == cookies.end()) return std::nullopt;
    return std::string_view(it->second);
  }
};

config::Route splitRoute(uint32_t stable, uint32_t canary,
                         config::PinKind pin = config::PinKind::None, std::string pinName = "") {
  config::Route r;
  r.name = "api";
  r.split = {{"stable", stable}, {"canary", canary}};
  r.backend = "stable";
  r.pin = {pin, std::move(pinName)};
  return r;
}

// ------------------------------------------------------------------ split

TEST(RouteTraffic, NinetyFiveFiveIsExactOverTenThousand) {
  auto route = splitRoute(95, 5);
  RouteTraffic t(route);
  Req req;
  std::map<std::string, int> n;
  for (int i = 0; i < 10000; ++i) ++n[*t.pick(req).backend];
  // Smooth weighted round-robin: exact, and spread (no run of 5 canaries in a row).
  EXPECT_EQ(n["stable"], 9500);
  EXPECT_EQ(n["canary"], 500);
  int run = 0, longest = 0;
  for (int i = 0; i < 200; ++i) {
    run = *t.pick(req).backend == "canary" ? run + 1 : 0;
    longest = std::max(longest, run);
  }
  EXPECT_EQ(longest, 1);
}

TEST(RouteTraffic, HeaderPinKeepsAUserOnOneSideAndSplitsUsersByWeight) {
  auto route = splitRoute(95, 5, config::PinKind::Header, "x-user");
  RouteTraffic t(route);
  int canary = 0;
  for (int u = 0; u < 10000; ++u) {
    Req req;
    req.headers["x-user"] = "user-" + std::to_string(u);
    SplitPick first = t.pick(req);
    EXPECT_TRUE(first.pinned);
    EXPECT_FALSE(first.setPinCookie);
    for (int k = 0; k < 3; ++k) ASSERT_EQ(t.pick(req).target, first.target) << u;
    canary += first.target == 1;
  }
  // 10,000 distinct users: 5% +- 2% on the canary.
  EXPECT_GE(canary, 300);
  EXPECT_LE(canary, 700);
  // Without the header the split falls back to round-robin.
  Req anon;
  EXPECT_FALSE(t.pick(anon).pinned);
}

TEST(RouteTraffic, RaisingTheCanaryOnlyMovesUsersTowardsIt) {
  auto r5 = splitRoute(95, 5, config::PinKind::Header, "x-user");
  auto r20 = splitRoute(80, 20, config::PinKind::Header, "x-user");
  RouteTraffic t5(r5), t20(r20);
  int moved = 0;
  for (int u = 0; u < 5000; ++u) {
    Req req;
    req.headers["x-user"] = std::to_string(u * 7919);
    size_t before = t5.pick(req).target, after = t20.pick(req).target;
    if (before == 1) {
      EXPECT_EQ(after, 1u) << "a canary user went back at " << u;
    }
    moved += before == 0 && after == 1;
  }
  EXPECT_GT(moved, 500);  // ~15% of 5000
}

TEST(RouteTraffic, CookiePinHonoursAValidSideElseSetsOne) {
  auto route = splitRoute(95, 5, config::PinKind::Cookie, "HALB_SIDE");
  RouteTraffic t(route);
  Req fresh;
  SplitPick p = t.pick(fresh);
  EXPECT_TRUE(p.setPinCookie);
  EXPECT_FALSE(p.pinned);
  Req back;
  back.cookies["HALB_SIDE"] = "canary";
  for (int i = 0; i < 100; ++i) {
    SplitPick q = t.pick(back);
    ASSERT_EQ(*q.backend, "canary");
    EXPECT_TRUE(q.pinned);
    EXPECT_FALSE(q.setPinCookie);
  }
  Req forged;
  forged.cookies["HALB_SIDE"] = "admin-backend";  // not a side of this split
  EXPECT_TRUE(t.pick(forged).setPinCookie);
  // Rolling the canary back to 0 sends its pinned users to the stable side.
  auto rolledBack = splitRoute(100, 0, config::PinKind::Cookie, "HALB_SIDE");
  RouteTraffic t0(rolledBack);
  SplitPick r = t0.pick(back);
  EXPECT_EQ(*r.backend, "stable");
  EXPECT_TRUE(r.setPinCookie);
  EXPECT_EQ(pinCookieHeader("HALB_SIDE", "stable", true),
            "HALB_SIDE=stable; Path=/; HttpOnly; Secure");
}

TEST(RouteTraffic, NoSplitIsTheRouteBackend) {
  config::Route r;
  r.backend = "only";
  RouteTraffic t(r);
  Req req;
  EXPECT_EQ(*t.pick(req).backend, "only");
  EXPECT_FALSE(t.sampleMirror());
}

TEST(RouteTraffic, MirrorSamplesAnExactShare) {
  config::Route r;
  r.backend = "b";
  r.mirror = config::Mirror{"shadow", 125000};  // 12.5%
  RouteTraffic t(r);
  int n = 0;
  for (int i = 0; i < 10000; ++i) n += t.sampleMirror();
  EXPECT_EQ(n, 1250);
  r.mirror->perMillion = 1'000'000;
  RouteTraffic all(r);
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(all.sampleMirror());
}

// ------------------------------------------------------------------ retries

TEST(Retry, IdempotentMethodsPerRfc9110) {
  for (const char* m : {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
    EXPECT_TRUE(isIdempotent(m)) << m;
  for (const char* m : {"POST", "PATCH", "CONNECT", "LOCK", "get", ""})
    EXPECT_FALSE(isIdempotent(m)) << m;
}

TEST(Retry, NonIdempotentRequestsAreNeverResent) {
  config::RetryPolicy p;
  p.attempts = 3;
  p.onConnectFailure = p.onReset = p.onTimeout = true;
  p.statuses = {502, 503, 504};
  for (auto f : {AttemptFailure::Reset, AttemptFailure::Timeout, AttemptFailure::Status}) {
    EXPECT_FALSE(retryAllowed(p, {f, 503, "POST", false, 0})) << toString(f);
    EXPECT_FALSE(retryAllowed(p, {f, 503, "PATCH", false, 0})) << toString(f);
    EXPECT_TRUE(retryAllowed(p, {f, 503, "GET", false, 0})) << toString(f);
    // A body is streamed, never kept: even a PUT with a body goes out once.
    EXPECT_FALSE(retryAllowed(p, {f, 503, "PUT", true, 0})) << toString(f);
  }
  // Nothing left on a failed connect: any method may go to another server.
  EXPECT_TRUE(retryAllowed(p, {AttemptFailure::ConnectFailure, 0, "POST", true, 0}));
}

TEST(Retry, PolicyDecides) {
  config::RetryPolicy p;
  p.attempts = 2;
  p.onConnectFailure = false;
  p.statuses = {503};
  EXPECT_FALSE(retryAllowed(p, {AttemptFailure::ConnectFailure, 0, "GET", false, 0}));
  EXPECT_FALSE(retryAllowed(p, {AttemptFailure::Reset, 0, "GET", false, 0}));
  EXPECT_FALSE(retryAllowed(p, {AttemptFailure::Timeout, 0, "GET", false, 0}));
  EXPECT_TRUE(retryAllowed(p, {AttemptFailure::Status, 503, "GET", false, 0}));
  EXPECT_FALSE(retryAllowed(p, {AttemptFailure::Status, 502, "GET", false, 0}));
  EXPECT_TRUE(retryAllowed(p, {AttemptFailure::Status, 503, "GET", false, 1}));
  EXPECT_FALSE(
      retryAllowed(p, {AttemptFailure::Status, 503, "GET", false, 2}));  // attempts used up
}

TEST(RetryBudget, RetriesStayWithinTheShareOverTheWindow) {
  ManualClock clock;
  RetryBudget b(config::RetryBudget{20, 10s, 5});
  // A quiet backend: the minimum only.
  int granted = 0;
  for (int i = 0; i < 20; ++i) granted += b.tryRetry(clock.now());
  EXPECT_EQ(granted, 5);
  // 100 requests: 20% of them plus the minimum, minus what was used.
  for (int i = 0; i < 100; ++i) b.onRequest(clock.now());
  granted = 0;
  for (int i = 0; i < 100; ++i) granted += b.tryRetry(clock.now());
  EXPECT_EQ(granted, 20);
  EXPECT_EQ(b.retriesInWindow(clock.now()), 25u);
  EXPECT_EQ(b.denied(), 15u + 80u);
  // An outage: every request fails and wants a retry; retries never exceed 20% + minimum.
  ManualClock c2;
  RetryBudget o(config::RetryBudget{20, 10s, 5});
  uint64_t requests = 0, retries = 0;
  for (int ms = 0; ms < 60'000; ms += 10) {  // 100 req/s for a minute
    c2.advance(10ms);
    o.onRequest(c2.now());
    ++requests;
    while (o.tryRetry(c2.now())) ++retries;  // as many as it will give
  }
  EXPECT_LE(retries, requests * 20 / 100 + 6 * 5 + 5);
  EXPECT_GE(retries, requests * 20 / 100 - 20);
  // Over any window the share holds.
  EXPECT_LE(o.retriesInWindow(c2.now()), o.requestsInWindow(c2.now()) / 5 + 5);
}

TEST(RetryBudget, TheWindowSlides) {
  ManualClock clock;
  RetryBudget b(config::RetryBudget{50, 10s, 0});
  for (int i = 0; i < 10; ++i) b.onRequest(clock.now());
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(b.tryRetry(clock.now()));
  EXPECT_FALSE(b.tryRetry(clock.now()));
  clock.advance(9s);
  EXPECT_FALSE(b.tryRetry(clock.now()));  // still in the window
  clock.advance(1s);                      // the first step left it
  EXPECT_EQ(b.requestsInWindow(clock.now()), 0u);
  EXPECT_FALSE(b.tryRetry(clock.now()));  // no requests, no minimum
  b.onRequest(clock.now());
  b.onRequest(clock.now());
  EXPECT_TRUE(b.tryRetry(clock.now()));
}

TEST(RetryBudget, MinimumIsSharedByWorkers) {
  ManualClock clock;
  RetryBudget b(config::RetryBudget{0, 10s, 10}, 4);  // ceil(10/4) = 3 per worker
  int granted = 0;
  for (int i = 0; i < 10; ++i) granted += b.tryRetry(clock.now());
  EXPECT_EQ(granted, 3);
}

// ------------------------------------------------------------------ admission

TEST(SlotCounter, NeverExceedsItsLimitUnderContention) {
  SlotCounter c;
  constexpr uint32_t kLimit = 7;
  std::atomic<uint32_t> maxSeen{0}, inside{0};
  std::atomic<uint64_t> admitted{0};
  auto worker = [&] {
    for (int i = 0; i < 20000; ++i) {
      if (!c.tryAcquire(kLimit)) continue;
      uint32_t now = inside.fetch_add(1) + 1;
      uint32_t m = maxSeen.load();
      while (now > m && !maxSeen.compare_exchange_weak(m, now)) {
      }
      inside.fetch_sub(1);
      c.release();
      admitted.fetch_add(1);
    }
  };
  std::vector<std::thread> ts;
  for (int i = 0; i < 4; ++i) ts.emplace_back(worker);
  for (auto& t : ts) t.join();
  EXPECT_LE(maxSeen.load(), kLimit);
  EXPECT_GT(admitted.load(), 0u);
  EXPECT_EQ(c.value(), 0u);
  EXPECT_TRUE(c.tryAcquire(0));  // 0 = unlimited
}

TEST(WaitQueue, FifoWithDeadlines) {
  ManualClock clock;
  WaitQueue q;
  q.push(1, clock.now() + 100ms);
  q.push(2, clock.now() + 50ms);
  q.push(3, clock.now() + 200ms);
  EXPECT_EQ(q.nextDeadline(), clock.now() + 50ms);
  EXPECT_EQ(q.popFront(), 1u);
  q.pushFront(1, clock.now() + 100ms);  // woke, lost the race: keeps its turn
  EXPECT_TRUE(q.expire(clock.now() + 49ms).empty());
  EXPECT_EQ(q.expire(clock.now() + 100ms), (std::vector<uint64_t>{1, 2}));
  EXPECT_TRUE(q.remove(3));
  EXPECT_FALSE(q.remove(3));
  EXPECT_TRUE(q.empty());
  EXPECT_FALSE(q.nextDeadline());
}

// The admission rules end to end with one worker: 2 slots, a queue of 3, ten arrivals.
TEST(Admission, LimitAndQueueBoundsHold) {
  ManualClock clock;
  SlotCounter slots, queued;
  WaitQueue waiting;
  const uint32_t limit = 2, queueSize = 3;
  int admitted = 0, rejected = 0;
  for (uint64_t id = 1; id <= 10; ++id) {
    if (slots.tryAcquire(limit)) {
      ++admitted;
    } else if (queued.tryAcquire(queueSize)) {
      waiting.push(id, clock.now() + 1s);
    } else {
      ++rejected;  // 503 at once
    }
  }
  EXPECT_EQ(admitted, 2);
  EXPECT_EQ(waiting.size(), 3u);
  EXPECT_EQ(rejected, 5);
  // One request finishes: its slot goes to the oldest waiter.
  slots.release();
  auto next = waiting.popFront();
  ASSERT_TRUE(next);
  EXPECT_EQ(*next, 3u);
  queued.release();
  EXPECT_TRUE(slots.tryAcquire(limit));
  // The others time out.
  clock.advance(1s);
  auto expired = waiting.expire(clock.now());
  EXPECT_EQ(expired, (std::vector<uint64_t>{4, 5}));
  for (size_t i = 0; i < expired.size(); ++i) queued.release();
  EXPECT_EQ(queued.value(), 0u);
  EXPECT_EQ(slots.value(), 2u);
}

}  // namespace
}  // namespace halb::balancer
