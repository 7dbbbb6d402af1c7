// Two statesync::Services over real loopback TCP on one libuv loop, with fake tables: the
// whole path from a worker's change queue to the peer's table.
#include "statesync/service.h"

#include <gtest/gtest.h>

#include <mutex>

#include "common/log.h"
#include "tests/statesync/fake_tables.h"

namespace halb::statesync {
namespace {

using namespace std::chrono_literals;
using test::FakeTables;

const std::string kKey = "service-test-shared-key-0123456789";

struct Node {
  Node(uv::Loop& loop, const std::string& name, std::optional<SocketAddress> peer,
       const std::string& key = kKey)
      : queue(4096) {
    cfg.self.name = name;
    cfg.statesync.enabled = true;
    cfg.statesync.listen = *SocketAddress::parse("127.0.0.1:0");
    cfg.statesync.peer = peer;
    cfg.statesync.heartbeat = 50ms;
    cfg.statesync.peerTimeout = 2s;
    cfg.statesync.reconnectMin = 10ms;
    cfg.statesync.reconnectMax = 200ms;
    Hooks hooks;
    hooks.onPeerUp = [this] { ++peerUp; };
    hooks.onPeerLost = [this](std::string_view why) {
      ++peerLost;
      lostAt = SteadyClock::now();
      lossReason = std::string(why);
    };
    hooks.onSyncComplete = [this] { ++syncComplete; };
    ServiceOptions opt;
    opt.key = std::vector<uint8_t>(key.begin(), key.end());
    service = std::make_unique<Service>(loop, cfg, tables, tables,
                                        std::vector<repl::ChangeQueue*>{&queue}, hooks, opt);
  }
  void start() {
    std::string err;
    ASSERT_TRUE(service->start(err)) << err;
  }
  // What a worker does: change its table and queue the change.
  void write(repl::Change c) { ASSERT_TRUE(queue.push(std::move(c))); }

  config::Config cfg;
  FakeTables tables;
  repl::ChangeQueue queue;
  std::unique_ptr<Service> service;
  int peerUp = 0, peerLost = 0, syncComplete = 0;
  TimePoint lostAt{};
  std::string lossReason;
};

class ServiceTest : public ::testing::Test {
 protected:
  // lb1 listens first; lb2 knows lb1's port; then lb1 learns lb2's.
  void startPair(const std::string& keyB = kKey) {
    a = std::make_unique<Node>(loop, "lb1", std::nullopt);
    a->start();
    b = std::make_unique<Node>(loop, "lb2", a->service->listenAddress(), keyB);
    b->start();
    a->service->setPeer(b->service->listenAddress());
  }
  bool until(const std::function<bool()>& done, Duration limit = 5s) {
    return loop.runUntil(done, limit);
  }
  TimePoint now() const { return SteadyClock::now(); }

  uv::Loop loop;
  std::unique_ptr<Node> a, b;
};

TEST_F(ServiceTest, FullTablesReplicateBothWaysOverLoopback) {
  a = std::make_unique<Node>(loop, "lb1", std::nullopt);
  for (int i = 0; i < 20000; ++i)
    a->tables.upsert(1, "user" + std::to_string(i), 100 + i % 3, 600s, now());
  for (uint64_t id = 1; id <= 50; ++id) a->tables.openConn(id, now());
  a->start();
  b = std::make_unique<Node>(loop, "lb2", a->service->listenAddress());
  b->tables.upsert(2, "b-user", 7, 600s, now());
  b->start();
  a->service->setPeer(b->service->listenAddress());
  ASSERT_TRUE(until([&] { return a->service->inSync() && b->service->inSync(); }));
  EXPECT_EQ(b->tables.sticks.size(), 20001u);
  EXPECT_EQ(a->tables.sticks.size(), 20001u);
  EXPECT_EQ(b->tables.stick(1, "user12345")->serverId, 100u + 12345 % 3);
  EXPECT_EQ(b->service->replicaSize(), 50u);
  EXPECT_EQ(a->peerUp, 1);
  EXPECT_EQ(b->peerUp, 1);
  EXPECT_EQ(b->syncComplete, 1);
  EXPECT_EQ(b->service->state(), PeerState::InSync);
  // Connection entries are held for takeover, not pushed into the tables.
  auto conns = b->service->takeConnections();
  EXPECT_EQ(conns.size(), 50u);
  EXPECT_EQ(b->service->replicaSize(), 0u);
}

TEST_F(ServiceTest, ChangesFlowFromTheWorkerQueueToThePeer) {
  startPair();
  ASSERT_TRUE(until([&] { return a->service->inSync() && b->service->inSync(); }));
  for (int i = 0; i < 1000; ++i)
    a->write(a->tables.upsert(1, "k" + std::to_string(i), 5, 60s, now()));
  a->write(a->tables.openConn(9, now()));
  ASSERT_TRUE(
      until([&] { return b->tables.sticks.size() == 1000 && b->service->replicaSize() == 1; }));
  // Bidirectional: lb2, master of a later epoch, overrides lb1's entry...
  b->tables.epoch = 2;
  b->write(b->tables.upsert(1, "k7", 6, 60s, now()));
  ASSERT_TRUE(until([&] { return a->tables.stick(1, "k7")->serverId == 6; }));
  // ...and lb1's older-epoch write loses on both nodes.
  a->write(a->tables.upsert(1, "k7", 5, 60s, now()));
  ASSERT_TRUE(until([&] { return b->service->session().metrics().entriesStale > 0; }));
  EXPECT_EQ(b->tables.stick(1, "k7")->serverId, 6u);
  // The lag histogram saw every entry.
  std::vector<uint64_t> counts;
  double sum = 0;
  b->service->session().lagHistogram().addTo(counts, sum);
  uint64_t n = 0;
  for (auto c : counts) n += c;
  EXPECT_EQ(n, 1002u);
}

TEST_F(ServiceTest, BackupStartedLaterReceivesTheFullTable) {
  a = std::make_unique<Node>(loop, "lb1", std::nullopt);
  a->start();
  // lb1 serves alone for a while: users arrive, some leave.
  for (int round = 0; round < 20; ++round) {
    for (int i = 0; i < 100; ++i)
      a->write(a->tables.upsert(1, std::to_string(round * 100 + i), 3, 600s, now()));
    a->write(a->tables.erase(1, std::to_string(round * 100), now()));
    loop.runUntil([] { return false; }, 2ms);
  }
  ASSERT_EQ(a->tables.sticks.size(), 1980u);
  b = std::make_unique<Node>(loop, "lb2", a->service->listenAddress());
  b->start();
  ASSERT_TRUE(until([&] { return b->service->inSync(); }));
  EXPECT_EQ(b->tables.sticks.size(), 1980u);
  EXPECT_EQ(b->syncComplete, 1);
}

TEST_F(ServiceTest, WrongKeyPeerIsRefusedAndNothingItSendsIsApplied) {
  std::mutex mu;
  std::vector<std::string> lines;
  log::setSink([&](log::Level, std::string_view, std::string_view msg) {
    std::lock_guard lock(mu);
    lines.emplace_back(msg);
  });
  a = std::make_unique<Node>(loop, "lb1", std::nullopt);
  a->start();
  b = std::make_unique<Node>(loop, "lb2", a->service->listenAddress(),
                             "an-impostor-with-the-wrong-key");
  for (int i = 0; i < 100; ++i) b->tables.upsert(1, "evil" + std::to_string(i), 666, 600s, now());
  b->start();
  a->service->setPeer(b->service->listenAddress());
  b->write(b->tables.upsert(1, "evil-live", 666, 600s, now()));
  ASSERT_TRUE(until([&] {
    return a->service->session().metrics().authFailures >= 2 &&
           b->service->session().metrics().authFailures >= 2;
  }));
  loop.runUntil([] { return false; }, 200ms);
  log::setSink(nullptr);
  EXPECT_EQ(a->peerUp + b->peerUp, 0);
  EXPECT_EQ(a->tables.sticks.size(), 0u);
  EXPECT_EQ(a->tables.applied, 0u);
  EXPECT_EQ(b->tables.applied, 0u);
  EXPECT_FALSE(a->service->peerConnected());
  bool logged = false;
  for (const auto& l : lines) logged |= l.find("failed authentication") != std::string::npos;
  EXPECT_TRUE(logged) << "the refusal is logged";
  // Rate-limited: dozens of attempts, a handful of lines.
  EXPECT_LT(lines.size(), 20u);
}

TEST_F(ServiceTest, PeerProcessDeathIsReportedAtOnce) {
  startPair();
  ASSERT_TRUE(until([&] { return a->service->inSync() && b->service->inSync(); }));
  // lb2's process dies: its sockets close without a goodbye (the kernel sends FIN/RST).
  TimePoint died = now();
  b.reset();
  ASSERT_TRUE(until([&] { return a->peerLost > 0; }, 2s));
  // Far below peer_timeout (2 s here): the kernel closed the connection, no timeout ran.
  // (Typically under a millisecond; the bound leaves room for a loaded machine.)
  EXPECT_LT(a->lostAt - died, 500ms);
  EXPECT_NE(a->lossReason.find("closed"), std::string::npos) << a->lossReason;
}

TEST_F(ServiceTest, CleanStopIsAGoodbye) {
  startPair();
  ASSERT_TRUE(until([&] { return a->service->inSync() && b->service->inSync(); }));
  b->service->stop();
  ASSERT_TRUE(until([&] { return a->peerLost > 0; }, 2s));
  EXPECT_NE(a->lossReason.find("shutdown"), std::string::npos) << a->lossReason;
  EXPECT_EQ(b->peerLost, 0);
}

TEST_F(ServiceTest, TransferIsAcknowledged) {
  startPair();
  ASSERT_TRUE(until([&] { return a->service->inSync() && b->service->inSync(); }));
  repl::ConnEntry e;
  e.id = 0xabc;
  e.phase = repl::ConnPhase::Idle;
  e.clientTcp = repl::TcpRepairState{};
  e.clientTcp->sndSeq = 42;
  e.version = {1, 1000};
  std::optional<bool> acked;
  ASSERT_TRUE(a->service->transfer({e}, [&](bool ok) { acked = ok; }));
  ASSERT_TRUE(until([&] { return acked.has_value(); }, 2s));
  EXPECT_TRUE(*acked);
  auto conns = b->service->takeConnections();
  ASSERT_EQ(conns.size(), 1u);
  EXPECT_EQ(conns[0].clientTcp->sndSeq, 42u);
}

TEST_F(ServiceTest, MetricsAndStatus) {
  startPair();
  ASSERT_TRUE(until([&] { return a->service->inSync() && b->service->inSync(); }));
  a->write(a->tables.upsert(1, "m", 1, 60s, now()));
  ASSERT_TRUE(until([&] { return b->tables.stick(1, "m") != nullptr; }));
  loop.runUntil([] { return false; }, 120ms);  // a heartbeat round trip for the RTT
  PromWriter w;
  b->service->writeMetrics(w);
  const std::string& text = w.text();
  for (const char* name :
       {"halb_statesync_peer_state{state=\"in_sync\"} 1", "halb_statesync_in_sync 1",
        "halb_statesync_entries_received_total 1", "halb_statesync_lag_seconds_bucket",
        "halb_statesync_snapshots_received_total 1", "halb_statesync_dropped_total 0",
        "halb_statesync_snapshot_duration_seconds_count 1", "halb_statesync_auth_failures_total 0"})
    EXPECT_NE(text.find(name), std::string::npos) << name << "\n" << text;
  std::string status = b->service->statusJson();
  for (const char* field : {"\"state\":\"in_sync\"", "\"peer_name\":\"lb1\"", "\"in_sync\":true",
                            "\"lag_p99_ms\":", "\"rtt_ms\":"})
    EXPECT_NE(status.find(field), std::string::npos) << field << "\n" << status;
  EXPECT_EQ(status.find("\"rtt_ms\":null"), std::string::npos) << status;
}

TEST(Epoch, NextEpochMovesPastEverythingSeen) {
  EXPECT_EQ(nextEpoch(0, 0, 1'700'000'000), 1'700'000'000u);
  EXPECT_EQ(nextEpoch(1'700'000'000, 1'700'000'005, 1'700'000'001), 1'700'000'006u);
  EXPECT_EQ(nextEpoch(7, 3, 0), 8u);
  EXPECT_EQ(nextEpoch(UINT32_MAX, 0, 0), UINT32_MAX);
}

}  // namespace
}  // namespace halb::statesync
