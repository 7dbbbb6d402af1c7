#include "balancer/stick_table.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <thread>

namespace halb::balancer {
namespace {

using namespace std::chrono_literals;
constexpr uint64_t kB = 7;    // backend id of the small table
constexpr uint64_t kBig = 8;  // a table large enough to spread over every shard

struct Recorder {
  std::vector<repl::Change> changes;
  StickTables::Emit emit() {
    return [this](repl::Change&& c) { changes.push_back(std::move(c)); };
  }
  size_t count(repl::ChangeKind k) const {
    size_t n = 0;
    for (const auto& c : changes) n += c.kind == k;
    return n;
  }
};

class StickTableTest : public ::testing::Test {
 protected:
  ManualClock clock;
  Recorder rec;
  std::unique_ptr<StickTables> t = makeStickTables(
      {{kB, 60s, 100}, {kBig, 60s, 100000}},
      StickTables::Options{.touchFraction = 0.25, .clock = [this] { return clock.now(); }});
};

TEST_F(StickTableTest, RecordLookupAndUnknownTable) {
  EXPECT_FALSE(t->lookup(kB, "alice", clock.now(), rec.emit()));
  t->record(kB, "alice", 11, clock.now(), rec.emit());
  EXPECT_EQ(t->lookup(kB, "alice", clock.now(), rec.emit()), 11u);
  t->record(kB, "alice", 12, clock.now(), rec.emit());  // re-stuck to another server
  EXPECT_EQ(t->lookup(kB, "alice", clock.now(), rec.emit()), 12u);
  t->record(99, "alice", 1, clock.now(), rec.emit());  // no such table: ignored
  EXPECT_FALSE(t->lookup(99, "alice", clock.now(), rec.emit()));
  EXPECT_EQ(rec.count(repl::ChangeKind::StickUpsert), 2u);
  t->erase(kB, "alice", rec.emit());
  EXPECT_FALSE(t->lookup(kB, "alice", clock.now(), rec.emit()));
  ASSERT_EQ(rec.count(repl::ChangeKind::StickDelete), 1u);
  EXPECT_GT(rec.changes.back().stick.version, rec.changes.front().stick.version);
}

TEST_F(StickTableTest, TtlCountsFromLastUse) {
  t->record(kB, "alice", 11, clock.now(), rec.emit());
  t->record(kB, "bob", 12, clock.now(), rec.emit());
  clock.advance(50s);
  EXPECT_EQ(t->lookup(kB, "alice", clock.now(), rec.emit()), 11u);  // refreshes alice only
  clock.advance(20s);  // bob: 70s since use; alice: 20s
  EXPECT_FALSE(t->lookup(kB, "bob", clock.now(), rec.emit()));
  EXPECT_EQ(t->lookup(kB, "alice", clock.now(), rec.emit()), 11u);
  clock.advance(60s);
  EXPECT_EQ(t->expire(clock.now()), 1u);  // alice expired exactly now
  EXPECT_EQ(t->size(), 0u);
}

TEST_F(StickTableTest, ExpireDropsOnlyExpired) {
  for (int i = 0; i < 10; ++i) {
    t->record(kB, "k" + std::to_string(i), 1, clock.now(), rec.emit());
    clock.advance(1s);
  }
  clock.advance(54s);  // now = 64s: k0..k4 (recorded at 0..4s) are 60s+ old
  EXPECT_EQ(t->expire(clock.now()), 5u);
  EXPECT_EQ(t->size(kB), 5u);
}

TEST_F(StickTableTest, LruBoundPerBackend) {
  for (int i = 0; i < 150; ++i) {
    t->record(kB, "k" + std::to_string(i), 1, clock.now(), rec.emit());
    if (i == 99) {
      clock.advance(10s);  // LRU is approximate within ttl/16: a hit moves k0 after that
      t->lookup(kB, "k0", clock.now(), rec.emit());  // k0 stays recently used
    }
  }
  EXPECT_EQ(t->size(kB), 100u);
  EXPECT_TRUE(t->lookup(kB, "k0", clock.now(), rec.emit()));
  EXPECT_FALSE(t->lookup(kB, "k1", clock.now(), rec.emit()));  // least recently used: gone
  EXPECT_TRUE(t->lookup(kB, "k149", clock.now(), rec.emit()));
  // The big table is bounded too (per-shard shares that add up to the bound).
  auto big = makeStickTables({{kBig, 60s, 2000}});
  for (int i = 0; i < 10000; ++i) big->record(kBig, "k" + std::to_string(i), 1, clock.now(), {});
  EXPECT_EQ(big->size(kBig), 2000u);
  EXPECT_TRUE(big->lookup(kBig, "k9999", clock.now(), {}));
}

TEST_F(StickTableTest, TouchesAreCoalesced) {
  t->record(kB, "alice", 11, clock.now(), rec.emit());
  // Used 1000 times a second for two TTLs: a touch every quarter TTL, not 120000.
  for (int i = 0; i < 120000; ++i) {
    clock.advance(1ms);
    ASSERT_EQ(t->lookup(kB, "alice", clock.now(), rec.emit()), 11u);
  }
  EXPECT_EQ(rec.count(repl::ChangeKind::StickUpsert), 1u);
  EXPECT_EQ(rec.count(repl::ChangeKind::StickTouch), 8u);
  // Each touch tells the full TTL and a newer version.
  for (size_t i = 1; i < rec.changes.size(); ++i) {
    EXPECT_EQ(rec.changes[i].stick.ttlLeft, 60s);
    EXPECT_GT(rec.changes[i].stick.version, rec.changes[i - 1].stick.version);
  }
  // Recording the same server again is a touch too, and coalesced the same way.
  size_t before = rec.changes.size();
  t->record(kB, "alice", 11, clock.now(), rec.emit());
  EXPECT_EQ(rec.changes.size(), before);
  // A different server is always sent at once.
  t->record(kB, "alice", 12, clock.now(), rec.emit());
  EXPECT_EQ(rec.changes.back().kind, repl::ChangeKind::StickUpsert);
}

TEST_F(StickTableTest, PeerEntriesLastWriterWins) {
  repl::StickEntry e{kB, "alice", 21, 30s, {2, 5}};
  EXPECT_TRUE(t->applyStick(e, clock.now()));
  EXPECT_EQ(t->lookup(kB, "alice", clock.now(), {}), 21u);
  EXPECT_EQ(t->maxEpochSeen(), 2u);
  // Older (same epoch, lower seq; or lower epoch): rejected.
  EXPECT_FALSE(t->applyStick({kB, "alice", 22, 30s, {2, 4}}, clock.now()));
  EXPECT_FALSE(t->applyStick({kB, "alice", 22, 30s, {1, 900}}, clock.now()));
  EXPECT_FALSE(t->applyStick({kB, "alice", 22, 30s, {2, 5}}, clock.now()));  // equal
  EXPECT_EQ(t->lookup(kB, "alice", clock.now(), {}), 21u);
  EXPECT_TRUE(t->applyStick({kB, "alice", 23, 30s, {3, 1}}, clock.now()));
  EXPECT_EQ(t->lookup(kB, "alice", clock.now(), {}), 23u);
  // The peer's ttlLeft sets the expiry (not our full TTL).
  EXPECT_TRUE(t->applyStick({kB, "bob", 24, 10s, {3, 2}}, clock.now()));
  clock.advance(11s);
  EXPECT_FALSE(t->lookup(kB, "bob", clock.now(), {}));
  // Deletes obey versions too.
  EXPECT_FALSE(t->removeStick(kB, "alice", {2, 9}));
  EXPECT_TRUE(t->removeStick(kB, "alice", {3, 2}));
  EXPECT_FALSE(t->lookup(kB, "alice", clock.now(), {}));
  EXPECT_FALSE(t->applyStick({99, "x", 1, 10s, {9, 9}}, clock.now()));  // unknown table
}

TEST_F(StickTableTest, LocalWritesSupersedeWhatIsHeld) {
  // The peer's entry came from a higher epoch than ours; a local change must still win on
  // both sides, so its version goes above the held one.
  ASSERT_TRUE(t->applyStick({kB, "alice", 21, 30s, {5, 100}}, clock.now()));
  t->setEpoch(2);
  t->record(kB, "alice", 22, clock.now(), rec.emit());
  ASSERT_EQ(rec.changes.size(), 1u);
  EXPECT_GT(rec.changes[0].stick.version, (repl::Version{5, 100}));
  // A node that became master with a raised epoch outranks everything before.
  t->setEpoch(t->maxEpochSeen() + 1);
  t->record(kB, "bob", 1, clock.now(), rec.emit());
  EXPECT_EQ(rec.changes.back().stick.version.epoch, 6u);
}

TEST_F(StickTableTest, SnapshotForPeer) {
  t->record(kB, "alice", 11, clock.now(), {});
  t->record(kBig, "bob", 12, clock.now(), {});
  clock.advance(20s);
  std::map<std::string, repl::StickEntry> seen;
  t->forEachStick([&](const repl::StickEntry& e) { seen[e.key] = e; });
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen["alice"].backendId, kB);
  EXPECT_EQ(seen["alice"].serverId, 11u);
  EXPECT_EQ(seen["alice"].ttlLeft, 40s);
  EXPECT_EQ(seen["bob"].backendId, kBig);
  // A second table set applies it: a full resync round trip.
  auto peer = makeStickTables({{kB, 60s, 100}, {kBig, 60s, 100000}});
  for (const auto& [k, e] : seen) EXPECT_TRUE(peer->applyStick(e, clock.now()));
  EXPECT_EQ(peer->lookup(kB, "alice", clock.now(), {}), 11u);
  EXPECT_EQ(peer->lookup(kBig, "bob", clock.now(), {}), 12u);
}

TEST_F(StickTableTest, ReconfigureKeepsEntriesOfRemainingTables) {
  for (int i = 0; i < 100; ++i) t->record(kB, "k" + std::to_string(i), 1, clock.now(), {});
  t->record(kBig, "x", 2, clock.now(), {});
  // kB shrinks to 10 (the 10 most recent stay), kBig goes, a new table appears.
  t->configure({{kB, 60s, 10}, {42, 60s, 5000}});
  EXPECT_EQ(t->size(kB), 10u);
  EXPECT_TRUE(t->lookup(kB, "k99", clock.now(), {}));
  EXPECT_FALSE(t->lookup(kB, "k89", clock.now(), {}));
  EXPECT_EQ(t->size(kBig), 0u);
  t->record(42, "y", 3, clock.now(), {});
  EXPECT_EQ(t->lookup(42, "y", clock.now(), {}), 3u);
  // Growing past the spread threshold moves the entries across shards, keeping them.
  t->configure({{kB, 60s, 50000}});
  EXPECT_EQ(t->size(kB), 10u);
  EXPECT_TRUE(t->lookup(kB, "k99", clock.now(), {}));
}

TEST(StickTableConcurrency, WorkersAndControlThreadTogether) {
  // Four workers look up and record while the control thread expires, snapshots, applies
  // peer entries and reconfigures. Bounded in count and time; meant to run under ASan/TSan.
  std::atomic<int64_t> nowNs{0};
  auto now = [&] { return TimePoint{} + std::chrono::nanoseconds(nowNs.load()); };
  auto t = makeStickTables({{1, 1s, 5000}, {2, 1s, 100}},
                           StickTables::Options{.touchFraction = 0.25, .clock = now});
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> emitted{0}, hits{0}, ops{0};
  std::vector<std::thread> workers;
  for (int w = 0; w < 4; ++w) {
    workers.emplace_back([&, w] {
      StickTables::Emit emit = [&](repl::Change&&) { emitted++; };
      for (int i = 0; i < 40000 && !stop; ++i) {
        uint64_t backend = 1 + (i & 1);
        std::string key = "u" + std::to_string((i * 7 + w) % 3000);
        if (auto s = t->lookup(backend, key, now(), emit)) {
          hits++;
          if (*s != 5 && *s != 6 && *s != 9) std::abort();
        } else {
          t->record(backend, key, (i % 3 == 0) ? 5 : 6, now(), emit);
        }
        if (i % 1000 == 0) t->erase(backend, key, emit);
        ops++;
      }
    });
  }
  auto deadline = std::chrono::steady_clock::now() + 10s;
  for (int round = 0; round < 200 && std::chrono::steady_clock::now() < deadline; ++round) {
    nowNs += 20'000'000;  // 20 ms per round
    t->expire(now());
    size_t n = 0;
    t->forEachStick([&](const repl::StickEntry&) { ++n; });
    t->applyStick({1, "u" + std::to_string(round), 9, 1s, {7, static_cast<uint64_t>(round + 1)}},
                  now());
    if (round % 50 == 25) t->configure({{1, 1s, round % 100 == 25 ? 800u : 5000u}, {2, 1s, 100}});
  }
  // The rounds above can finish before the workers got going (Release, loaded machine): let
  // them do a fair share of work alongside the control thread before stopping them.
  while (ops.load() < 20000 && std::chrono::steady_clock::now() < deadline) {
    nowNs += 1'000'000;
    t->expire(now());
    std::this_thread::yield();
  }
  stop = true;
  for (auto& th : workers) th.join();
  EXPECT_LE(t->size(2), 100u);
  EXPECT_LE(t->size(1), 5000u);
  EXPECT_GT(hits.load(), 0u);
  EXPECT_GT(emitted.load(), 0u);
}

}  // namespace
}  // namespace halb::balancer
