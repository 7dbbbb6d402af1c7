// The state-sync session, driven through a simulated network with a manual clock: two real
// Sessions back to back, fake tables with last-writer-wins behaviour, and a network that
// delays, throttles, cuts and tampers.
#include "statesync/session.h"

#include <gtest/gtest.h>

#include "tests/statesync/fake_tables.h"
#include "tests/statesync/sim.h"

namespace halb::statesync {
namespace {

using namespace std::chrono_literals;
using test::FakeTables;
using test::RecordingEvents;
using test::SimNet;

const std::string kKey = "0123456789abcdef-shared-secret";

// `generation` stands for a process start: a restarted node draws other random numbers.
Settings settingsFor(const std::string& name, const std::string& key = kKey, int generation = 0) {
  Settings s;
  s.nodeName = name;
  s.fingerprint = sha256(std::string_view("replicated-config"));
  s.key.assign(key.begin(), key.end());
  s.seed = 42 + std::hash<std::string>{}(name) % 1000 + static_cast<uint64_t>(generation) * 7919;
  // Deterministic nonces and incarnations: a counter, distinct per node and process start.
  auto counter = std::make_shared<uint64_t>(std::hash<std::string>{}(name) +
                                            static_cast<uint64_t>(generation) * 1000003);
  s.random = [counter](std::span<uint8_t> out) {
    for (auto& b : out) b = static_cast<uint8_t>((*counter)++ * 131 + 7);
  };
  return s;
}

struct Node {
  Node(SimNet& net, const std::string& name, Settings s) : ep(net.endpoint(name)) {
    tables.clock = &net.clock;
    session = std::make_unique<Session>(std::move(s), ep, tables, tables, replica, events,
                                        net.clock.now());
    ep.session = session.get();
  }
  // Restart: a new process with empty tables and a new incarnation.
  void restart(SimNet& net, Settings s) {
    ep.session = nullptr;
    session.reset();
    tables = FakeTables();
    tables.clock = &net.clock;
    replica.clear();
    events = RecordingEvents();
    session = std::make_unique<Session>(std::move(s), ep, tables, tables, replica, events,
                                        net.clock.now());
    ep.session = session.get();
  }
  SimNet::Endpoint& ep;
  FakeTables tables;
  ConnReplica replica;
  RecordingEvents events;
  std::unique_ptr<Session> session;
};

class SessionTest : public ::testing::Test {
 protected:
  void pair(Settings sa = settingsFor("lb1"), Settings sb = settingsFor("lb2")) {
    a = std::make_unique<Node>(net, sa.nodeName, std::move(sa));
    b = std::make_unique<Node>(net, sb.nodeName, std::move(sb));
    a->ep.peer = &b->ep;
    b->ep.peer = &a->ep;
  }
  bool bothInSync() { return a->session->inSync() && b->session->inSync(); }
  TimePoint now() { return net.clock.now(); }

  SimNet net;
  std::unique_ptr<Node> a, b;
};

// ------------------------------------------------------------------------------ handshake

TEST_F(SessionTest, HandshakeReplicatesBothTablesAndReportsUp) {
  pair();
  for (int i = 0; i < 50; ++i) a->tables.upsert(1, "a" + std::to_string(i), 11, 60s, now());
  for (int i = 0; i < 30; ++i) b->tables.upsert(1, "b" + std::to_string(i), 12, 60s, now());
  ASSERT_TRUE(net.runUntil([&] { return bothInSync(); }, 1s));
  EXPECT_EQ(a->events.peerUp, 1);
  EXPECT_EQ(b->events.peerUp, 1);
  EXPECT_EQ(a->events.syncComplete, 1);
  EXPECT_EQ(b->events.syncComplete, 1);
  EXPECT_EQ(a->tables.sticks.size(), 80u);
  EXPECT_EQ(b->tables.sticks.size(), 80u);
  ASSERT_NE(b->tables.stick(1, "a7"), nullptr);
  EXPECT_EQ(b->tables.stick(1, "a7")->serverId, 11u);
  EXPECT_EQ(a->session->peerName(), "lb2");
  EXPECT_EQ(b->session->peerName(), "lb1");
  // Both nodes dial at start; exactly one connection survives the tie-break, and it is the
  // one the lower name (lb1) opened.
  net.run(50ms);
  EXPECT_EQ(a->ep.openConnections(), 1u);
  EXPECT_EQ(b->ep.openConnections(), 1u);
  EXPECT_EQ(a->events.peerLost, 0);
  EXPECT_EQ(b->events.peerLost, 0);
}

TEST_F(SessionTest, SnapshotTtlIsTheRemainingLifetime) {
  pair();
  b->ep.accepting = false;
  b->session->setConnectToPeer(false, now());
  a->tables.upsert(1, "k", 11, 60s, now());
  net.run(20s);  // the entry has 40 s left when lb2 comes up
  b->ep.accepting = true;
  ASSERT_TRUE(net.runUntil([&] { return bothInSync(); }, 3s));
  const auto& held = b->tables.sticks.at({1, "k"});
  EXPECT_NEAR(toMillis(held.expires - a->tables.sticks.at({1, "k"}).expires), 0, 5);
}

TEST_F(SessionTest, FingerprintMismatchIsRefusedOnBothSidesAndNothingFlows) {
  Settings sb = settingsFor("lb2");
  sb.fingerprint = sha256(std::string_view("other-config"));
  pair(settingsFor("lb1"), sb);
  a->tables.upsert(1, "a", 11, 60s, now());
  b->tables.upsert(1, "b", 12, 60s, now());
  net.run(3s);
  EXPECT_GT(a->events.refused, 0);
  EXPECT_GT(b->events.refused, 0);
  EXPECT_NE(a->events.lastRefusal.find("fingerprint"), std::string::npos) << a->events.lastRefusal;
  EXPECT_NE(b->events.lastRefusal.find("fingerprint"), std::string::npos) << b->events.lastRefusal;
  EXPECT_EQ(a->events.peerUp + b->events.peerUp, 0);
  EXPECT_EQ(a->tables.sticks.size(), 1u);
  EXPECT_EQ(b->tables.sticks.size(), 1u);
  // A refused peer is retried at reconnect_max, not hammered.
  EXPECT_LE(a->ep.connectCalls, 3u);
}

TEST_F(SessionTest, SameNodeNameIsRefused) {
  pair(settingsFor("lb1"), settingsFor("lb1"));
  net.run(500ms);
  EXPECT_GT(a->events.refused, 0);
  EXPECT_NE(a->events.lastRefusal.find("same"), std::string::npos) << a->events.lastRefusal;
  EXPECT_FALSE(a->session->peerConnected());
}

TEST_F(SessionTest, WrongKeyPeerGetsNothingAndNothingItSendsIsApplied) {
  pair(settingsFor("lb1"), settingsFor("lb2", "a-completely-different-key"));
  for (int i = 0; i < 10; ++i) a->tables.upsert(1, "a" + std::to_string(i), 11, 60s, now());
  for (int i = 0; i < 10; ++i) b->tables.upsert(1, "b" + std::to_string(i), 12, 60s, now());
  net.run(3s);
  EXPECT_GT(a->events.authFailures, 0);
  EXPECT_GT(b->events.authFailures, 0);
  EXPECT_EQ(a->events.peerUp + b->events.peerUp, 0);
  EXPECT_EQ(a->tables.applied, 0u);
  EXPECT_EQ(b->tables.applied, 0u);
  // lb1 sent nothing but CHALLENGEs (as responder) to the impostor: it refused lb2's CHALLENGE
  // before saying HELLO, and lb2's HELLOs failed lb1's check.
  for (const auto& f : a->ep.sentFrames)
    EXPECT_EQ(f[3], static_cast<char>(wire::MsgType::Challenge));
}

// ------------------------------------------------------------------------------ replay

TEST_F(SessionTest, ReplayedHelloFromAnEarlierSessionFailsAuthentication) {
  pair();
  b->session->setConnectToPeer(false, now());  // lb1 initiates: its HELLO goes on the record
  ASSERT_TRUE(net.runUntil([&] { return bothInSync(); }, 1s));
  std::string hello;
  for (const auto& f : a->ep.sentFrames)
    if (f[3] == static_cast<char>(wire::MsgType::Hello)) hello = f;
  ASSERT_FALSE(hello.empty());

  // An attacker replays it on a new connection: lb2's fresh nonce makes it worthless.
  auto& eve = net.endpoint("eve");
  eve.peer = &b->ep;
  ConnId id = eve.connect();
  net.run(5ms);
  ASSERT_FALSE(eve.received[id].empty());  // lb2's CHALLENGE
  EXPECT_EQ(eve.received[id][3], static_cast<char>(wire::MsgType::Challenge));
  size_t before = eve.received[id].size();
  int failures = b->events.authFailures;
  eve.rawSend(id, hello);
  net.run(5ms);
  EXPECT_EQ(b->events.authFailures, failures + 1);
  EXPECT_EQ(eve.received[id].size(), before);  // nothing after the challenge
  EXPECT_EQ(eve.openConnections(), 0u);        // and the connection is closed
  EXPECT_TRUE(b->session->peerConnected());    // the real session is untouched
  EXPECT_EQ(b->events.peerLost, 0);
}

TEST_F(SessionTest, ReplayedFrameInsideASessionIsRejectedByTheCounter) {
  pair();
  ASSERT_TRUE(net.runUntil([&] { return bothInSync(); }, 1s));
  // Duplicate lb1's next frame on the wire.
  bool done = false;
  a->ep.tamper = [&](ConnId, std::string& frame) {
    if (done) return;
    done = true;
    std::string copy = frame;
    a->ep.tamper = nullptr;
    a->ep.send(a->session->activeConnection(), copy);  // the original
    frame = copy;                                      // and again
  };
  a->session->offer(a->tables.upsert(1, "x", 11, 60s, now()), now());
  net.run(10ms);
  EXPECT_EQ(b->events.protocolErrors, 1);
  EXPECT_NE(b->events.lastProtocolError.find("counter"), std::string::npos)
      << b->events.lastProtocolError;
  // The link recovers by itself and the entry arrives exactly once.
  ASSERT_TRUE(net.runUntil([&] { return bothInSync(); }, 3s));
  ASSERT_NE(b->tables.stick(1, "x"), nullptr);
}

TEST_F(SessionTest, TamperedFrameFailsAuthentication) {
  pair();
  ASSERT_TRUE(net.runUntil([&] { return bothInSync(); }, 1s));
  a->ep.tamper = [&](ConnId, std::string& frame) {
    if (frame[3] == static_cast<char>(wire::MsgType::Updates)) {
      frame[frame.size() / 2] ^= 1;
      a->ep.tamper = nullptr;
    }
  };
  uint64_t applied = b->tables.applied;
  a->session->offer(a->tables.upsert(1, "x", 99, 60s, now()), now());
  net.run(10ms);
  EXPECT_EQ(b->events.authFailures, 1);
  EXPECT_EQ(b->tables.applied, applied);  // the tampered entry was not applied
}

// ------------------------------------------------------------------------------ streaming

TEST_F(SessionTest, IncrementalUpdatesArriveWithinTheBatchWindow) {
  pair();
  ASSERT_TRUE(net.runUntil([&] { return bothInSync(); }, 1s));
  a->session->offer(a->tables.upsert(2, "user", 21, 60s, now()), now());
  net.run(1ms);  // batch window (1 ms) + latency (0.1 ms) not yet over
  EXPECT_EQ(b->tables.stick(2, "user"), nullptr);
  net.run(1ms);
  ASSERT_NE(b->tables.stick(2, "user"), nullptr);
  EXPECT_EQ(b->tables.stick(2, "user")->serverId, 21u);
  // Deletes and connection entries follow the same path.
  a->session->offer(a->tables.erase(2, "user", now()), now());
  a->session->offer(a->tables.openConn(5, now()), now());
  net.run(5ms);
  EXPECT_EQ(b->tables.stick(2, "user"), nullptr);
  ASSERT_NE(b->replica.find(5), nullptr);
  EXPECT_EQ(b->replica.find(5)->serverId, a->tables.conns.at(5).serverId);
  a->session->offer(a->tables.closeConn(5, now()), now());
  net.run(5ms);
  EXPECT_EQ(b->replica.find(5), nullptr);
  EXPECT_GT(b->session->lagHistogram().bounds().size(), 0u);
}

TEST_F(SessionTest, LagIsMeasuredEndToEndEvenWithSkewedClocks) {
  net.latency = 3ms;
  pair();
  // The two hosts' monotonic clocks have nothing in common (boot-relative).
  b->ep.skew = std::chrono::hours(20);
  ASSERT_TRUE(net.runUntil([&] { return bothInSync(); }, 1s));
  net.run(500ms);  // heartbeats make round trips
  ASSERT_TRUE(b->session->clockOffset().has_value());
  EXPECT_NEAR(std::chrono::duration<double>(*b->session->clockOffset()).count(), -20 * 3600.0,
              1e-3);
  EXPECT_NEAR(std::chrono::duration<double>(*b->session->rtt()).count(), 0.006, 1e-3);
  // A change that waited 2 ms in its worker's queue (so the 1 ms batch window, which counts
  // from the change, is already over), then 3 ms on the wire: 5 ms from change to applied.
  repl::Change c = a->tables.upsert(1, "u", 1, 60s, a->ep.now() - 2ms);
  a->session->offer(c, a->ep.now());
  std::vector<uint64_t> before;
  double sumBefore = 0;
  b->session->lagHistogram().addTo(before, sumBefore);
  ASSERT_TRUE(net.runUntil([&] { return b->tables.stick(1, "u") != nullptr; }, 100ms, 100us));
  std::vector<uint64_t> after;
  double sumAfter = 0;
  b->session->lagHistogram().addTo(after, sumAfter);
  EXPECT_NEAR(sumAfter - sumBefore, 0.005, 0.0002);
}

TEST_F(SessionTest, PeerCopyExpiresWhenOursDoesDespiteQueueingDelay) {
  pair();
  ASSERT_TRUE(net.runUntil([&] { return bothInSync(); }, 1s));
  // The change waited 800 ms in a worker's queue before statesync saw it.
  repl::Change c = a->tables.upsert(1, "late", 11, 60s, now());
  net.run(800ms);
  a->session->offer(c, now());
  net.run(5ms);
  ASSERT_NE(b->tables.stick(1, "late"), nullptr);
  TimePoint ours = a->tables.sticks.at({1, "late"}).expires;
  TimePoint theirs = b->tables.sticks.at({1, "late"}).expires;
  EXPECT_LE(theirs - ours, 2ms);
  EXPECT_GE(theirs - ours, -2ms);
}

TEST_F(SessionTest, SnapshotWhileUpdatesKeepFlowing) {
  Settings sa = settingsFor("lb1");
  sa.frameBytes = 2048;          // many small chunks
  sa.highWatermark = 16 * 1024;  // and not all queued at once
  pair(sa, settingsFor("lb2"));
  a->tables = FakeTables(16);
  a->tables.clock = &net.clock;
  for (int i = 0; i < 20000; ++i)
    a->tables.upsert(1, "k" + std::to_string(i), 10 + i % 3, 600s, now());
  a->ep.bytesPerMs = 100 * 1024;  // ~0.6 MB of snapshot takes several ms
  // Keep writing while the snapshot streams: new keys and changes to keys already sent.
  int written = 0;
  uint64_t updatesBeforeSync = 0;
  bool synced = false;
  while (!synced && written < 2000) {
    a->session->offer(a->tables.upsert(1, "new" + std::to_string(written), 13, 600s, now()), now());
    a->session->offer(a->tables.upsert(1, "k" + std::to_string(written), 19, 600s, now()), now());
    ++written;
    net.run(200us);
    synced = b->session->inSync();
    if (!synced) updatesBeforeSync = b->session->metrics().entriesReceived;
  }
  ASSERT_TRUE(synced);
  EXPECT_GT(updatesBeforeSync, 0u) << "updates must flow during the snapshot";
  EXPECT_GT(a->tables.forEachCalls, 1u) << "the snapshot walks the table shard by shard";
  net.run(20ms);
  // lb2 now holds exactly lb1's table.
  ASSERT_EQ(b->tables.sticks.size(), a->tables.sticks.size());
  for (const auto& [k, s] : a->tables.sticks) {
    auto it = b->tables.sticks.find(k);
    ASSERT_NE(it, b->tables.sticks.end()) << k.second;
    EXPECT_EQ(it->second.entry.serverId, s.entry.serverId) << k.second;
  }
}

TEST_F(SessionTest, SlowPeerOverflowDropsAndResyncsInsteadOfBlocking) {
  Settings sa = settingsFor("lb1");
  sa.queueEntries = 200;
  sa.highWatermark = 4096;
  sa.frameBytes = 1024;
  pair(sa, settingsFor("lb2"));
  ASSERT_TRUE(net.runUntil([&] { return bothInSync(); }, 1s));
  // Slower than the changes come (~6 entries/ms against 10/ms), yet alive: frames, and the
  // heartbeats queued behind them, still arrive within tens of milliseconds.
  a->ep.bytesPerMs = 200;
  for (int i = 0; i < 2000; ++i) {
    a->session->offer(a->tables.upsert(1, "k" + std::to_string(i), 11, 600s, now()), now());
    if (i % 10 == 0) net.run(1ms);
  }
  EXPECT_GT(a->session->metrics().overflowDrops, 0u);
  EXPECT_GE(a->session->metrics().resyncs, 1u);
  EXPECT_GE(a->events.resyncs, 1);
  EXPECT_LE(a->session->outboundQueued(), 200u + sa.batchEntries);
  // The link recovers: a fresh snapshot brings lb2 to lb1's table.
  a->ep.bytesPerMs = 0;
  ASSERT_TRUE(net.runUntil(
      [&] { return b->tables.sticks.size() == a->tables.sticks.size() && b->session->inSync(); },
      5s));
  EXPECT_GE(a->session->metrics().snapshotsSent, 2u);
  EXPECT_EQ(a->events.peerLost, 0)
      << a->events.lastLoss << " / " << b->events.lastLoss;  // dropping is not disconnecting
}

TEST_F(SessionTest, ChangeQueueOverflowTriggersAResync) {
  pair();
  ASSERT_TRUE(net.runUntil([&] { return bothInSync(); }, 1s));
  // A change the data plane could not queue: only the table has it.
  uint64_t snapshots = a->session->metrics().snapshotsSent;
  a->tables.upsert(1, "lost", 11, 600s, now());
  a->session->requestResync("test: queue overflow", now());
  ASSERT_TRUE(net.runUntil([&] { return b->tables.stick(1, "lost") != nullptr; }, 1s));
  EXPECT_EQ(a->session->metrics().snapshotsSent, snapshots + 1);
}

// ------------------------------------------------------------------------------ coalescing

TEST_F(SessionTest, HotEntryIsSentAFewTimesPerTtlNotOnEveryTouch) {
  pair();
  ASSERT_TRUE(net.runUntil([&] { return bothInSync(); }, 1s));
  uint64_t before = a->session->metrics().entriesSent;
  constexpr Duration kTtl = 4s;
  a->session->offer(a->tables.upsert(1, "hot", 11, kTtl, now()), now());
  // 1000 touches a second for 10 s, from a table that announces every use (the balancer's
  // own touch coalescing would already send only one per TTL/4; this is the second line).
  for (int ms = 0; ms < 10000; ++ms) {
    a->session->offer(a->tables.touch(1, "hot", kTtl, now()), now());
    net.run(1ms);
  }
  uint64_t sent = a->session->metrics().entriesSent - before;
  // One refresh per TTL/5 (0.8 s) plus the upsert: about 13, never the 10000 touches.
  EXPECT_GE(sent, 11u);
  EXPECT_LE(sent, 15u);
  EXPECT_GE(a->session->coalescing().touchesSuppressed, 9900u);
  // The peer's copy never expired meanwhile, nor fell more than TTL/5 behind ours.
  ASSERT_NE(b->tables.stick(1, "hot"), nullptr);
  EXPECT_GT(b->tables.sticks.at({1, "hot"}).expires, now() + kTtl * 4 / 5 - 10ms);
}

TEST_F(SessionTest, TouchesTheStickTableAnnouncesAlwaysPass) {
  pair();
  ASSERT_TRUE(net.runUntil([&] { return bothInSync(); }, 1s));
  constexpr Duration kTtl = 4s;
  a->session->offer(a->tables.upsert(1, "hot", 11, kTtl, now()), now());
  net.run(5ms);
  uint64_t before = a->session->metrics().entriesSent;
  // The balancer announces a touch once TTL/4 has passed since the last announcement.
  for (int i = 0; i < 8; ++i) {
    net.run(kTtl / 4);
    a->session->offer(a->tables.touch(1, "hot", kTtl, now()), now());
  }
  net.run(5ms);
  EXPECT_EQ(a->session->metrics().entriesSent - before, 8u);
  EXPECT_EQ(a->session->coalescing().touchesSuppressed, 0u);
}

TEST_F(SessionTest, ChangesToOneKeyInsideABatchWindowAreSentOnce) {
  pair();
  ASSERT_TRUE(net.runUntil([&] { return bothInSync(); }, 1s));
  uint64_t before = a->session->metrics().entriesSent;
  for (int i = 0; i < 100; ++i)
    a->session->offer(a->tables.upsert(1, "k", 10 + i % 5, 60s, now()), now());
  // A connection opened and closed inside the window is never sent at all.
  a->session->offer(a->tables.openConn(9, now()), now());
  a->session->offer(a->tables.closeConn(9, now()), now());
  net.run(5ms);
  EXPECT_EQ(a->session->metrics().entriesSent - before, 1u);
  EXPECT_EQ(b->tables.stick(1, "k")->serverId, a->tables.stick(1, "k")->serverId);
  EXPECT_EQ(a->session->coalescing().cancelled, 1u);
}

// ------------------------------------------------------------------------------ conflicts

TEST_F(SessionTest, LastWriterWinsByEpochThenSequence) {
  pair();
  a->tables.epoch = 5;   // lb1 was master in epoch 5
  b->tables.epoch = 6;   // lb2 took over later
  a->tables.seq = 1000;  // a higher sequence number must not beat a higher epoch
  ASSERT_TRUE(net.runUntil([&] { return bothInSync(); }, 1s));
  b->session->offer(b->tables.upsert(1, "user", 22, 60s, now()), now());
  a->session->offer(a->tables.upsert(1, "user", 11, 60s, now()), now());
  net.run(10ms);
  EXPECT_EQ(a->tables.stick(1, "user")->serverId, 22u);
  EXPECT_EQ(b->tables.stick(1, "user")->serverId, 22u);
  EXPECT_GE(b->session->metrics().entriesStale, 1u);
  EXPECT_EQ(a->session->highestEpochSeen(), 6u);
}

// ------------------------------------------------------------------------------ failures

TEST_F(SessionTest, ConnectionResetIsReportedAtOnce) {
  pair();
  ASSERT_TRUE(net.runUntil([&] { return bothInSync(); }, 1s));
  a->ep.cutAll();
  // Reported in the same instant, without waiting for a timeout.
  EXPECT_EQ(a->events.peerLost, 1);
  EXPECT_EQ(b->events.peerLost, 1);
  EXPECT_FALSE(a->session->peerConnected());
}

TEST_F(SessionTest, SilentPeerIsDeclaredLostAfterPeerTimeout) {
  Settings sa = settingsFor("lb1");
  sa.peerTimeout = 300ms;
  pair(sa, settingsFor("lb2"));
  ASSERT_TRUE(net.runUntil([&] { return bothInSync(); }, 1s));
  // lb2 keeps its socket but stops sending anything (a hung process, a black hole).
  b->ep.tamper = [](ConnId, std::string& f) { f.clear(); };
  TimePoint start = now();
  ASSERT_TRUE(net.runUntil([&] { return a->events.peerLost > 0; }, 2s, 1ms));
  // 300 ms after the last frame, which was a heartbeat at most 100 ms before the stall.
  EXPECT_GE(now() - start, 200ms);
  EXPECT_LE(now() - start, 301ms);
  EXPECT_NE(a->events.lastLoss.find("silent"), std::string::npos) << a->events.lastLoss;
}

TEST_F(SessionTest, ShortBreakResumesFromTheResendWindowWithoutASnapshot) {
  pair();
  for (int i = 0; i < 100; ++i) a->tables.upsert(1, "k" + std::to_string(i), 11, 600s, now());
  ASSERT_TRUE(net.runUntil([&] { return bothInSync(); }, 1s));
  net.run(20ms);  // acks flow
  Metrics ma = a->session->metrics(), mb = b->session->metrics();
  int upA = a->events.peerUp, syncA = a->events.syncComplete;
  a->ep.cutAll();
  // Changes during the outage are kept for the peer.
  a->session->offer(a->tables.upsert(1, "during", 12, 600s, now()), now());
  b->session->offer(b->tables.upsert(1, "during-b", 13, 600s, now()), now());
  ASSERT_TRUE(net.runUntil([&] { return bothInSync(); }, 5s));
  net.run(10ms);
  EXPECT_EQ(a->session->metrics().snapshotsSent, ma.snapshotsSent);
  EXPECT_EQ(b->session->metrics().snapshotsSent, mb.snapshotsSent);
  EXPECT_EQ(a->session->metrics().resumes, ma.resumes + 1);
  EXPECT_EQ(b->session->metrics().resumes, mb.resumes + 1);
  EXPECT_NE(b->tables.stick(1, "during"), nullptr);
  EXPECT_NE(a->tables.stick(1, "during-b"), nullptr);
  EXPECT_EQ(a->events.peerUp, upA + 1);
  EXPECT_EQ(a->events.syncComplete, syncA + 1);  // the resumed stream counts as in sync again
}

TEST_F(SessionTest, RestartedPeerGetsAFullSnapshotAndStaleConnectionsAreSwept) {
  pair();
  a->session->offer(a->tables.openConn(1, now()), now());
  ASSERT_TRUE(net.runUntil([&] { return bothInSync(); }, 1s));
  a->session->offer(a->tables.openConn(2, now()), now());
  net.run(5ms);
  ASSERT_EQ(b->replica.size(), 2u);
  // lb1 restarts with an empty connection table: lb2 must forget lb1's old connections.
  a->ep.cutAll();
  a->restart(net, settingsFor("lb1", kKey, 1));
  a->ep.peer = &b->ep;
  ASSERT_TRUE(net.runUntil([&] { return bothInSync(); }, 5s));
  EXPECT_EQ(b->replica.size(), 0u);
  EXPECT_EQ(a->session->metrics().resumes + b->session->metrics().resumes, 0u);
  // ...and lb1 got lb2's tables back (bidirectional).
  EXPECT_EQ(a->events.syncComplete, 1);
}

TEST_F(SessionTest, ReconnectBackOffIsRandomisedAndBounded) {
  Settings sa = settingsFor("lb1");
  sa.reconnectMin = 50ms;
  sa.reconnectMax = 2s;
  pair(sa, settingsFor("lb2"));
  b->ep.accepting = false;  // the peer is down: every connect fails
  b->session->setConnectToPeer(false, now());
  net.run(20s);
  const auto& t = a->ep.connectTimes;
  ASSERT_GT(t.size(), 8u);
  for (size_t i = 1; i < t.size(); ++i) {
    Duration gap = t[i] - t[i - 1] - net.latency;  // the failure is seen one latency later
    int failures = static_cast<int>(i);            // attempt i follows i failures
    Duration ceiling = std::min<Duration>(2s, 50ms * (int64_t{2} << std::min(failures, 20)));
    EXPECT_GE(gap, 50ms) << i;
    EXPECT_LE(gap, ceiling) << i;
  }
  // Capped at reconnect_max: after the ramp, attempts keep coming.
  EXPECT_LE(t.back() - t[t.size() - 2], 2s + net.latency);
  // Deterministic for a given seed.
  SimNet net2;
  Node c(net2, "lb1", sa);
  auto& dead = net2.endpoint("lb2");
  dead.accepting = false;
  c.ep.peer = &dead;
  net2.run(20s);
  ASSERT_EQ(c.ep.connectTimes.size(), t.size());
  for (size_t i = 0; i < t.size(); ++i)
    EXPECT_EQ(c.ep.connectTimes[i] - net2.clock.now(), t[i] - now()) << i;
}

TEST_F(SessionTest, SimultaneousConnectsSettleOnOneConnectionWithoutALoss) {
  net.latency = 5ms;  // handshakes overlap: each node accepts while its own dial is in flight
  Settings sa = settingsFor("lb1"), sb = settingsFor("lb2");
  sb.seed = sa.seed;  // identical jitter: every attempt collides
  pair(sa, sb);
  ASSERT_TRUE(net.runUntil([&] { return bothInSync(); }, 2s));
  net.run(100ms);
  EXPECT_EQ(a->ep.openConnections(), 1u);
  EXPECT_EQ(b->ep.openConnections(), 1u);
  EXPECT_EQ(a->events.peerUp, 1);
  EXPECT_EQ(b->events.peerUp, 1);
  EXPECT_EQ(a->events.peerLost + b->events.peerLost, 0);
  EXPECT_EQ(a->events.protocolErrors + b->events.protocolErrors, 0);
  // And after a reset, the same collision resolves the same way.
  a->ep.cutAll();
  ASSERT_TRUE(net.runUntil([&] { return bothInSync(); }, 3s));
  net.run(100ms);
  EXPECT_EQ(a->ep.openConnections(), 1u);
  EXPECT_EQ(a->events.peerLost, 1);
  EXPECT_EQ(a->events.peerUp, 2);
  EXPECT_EQ(a->events.protocolErrors + b->events.protocolErrors, 0);
}

// ------------------------------------------------------------------------------ transfer

TEST_F(SessionTest, TransferIsAcknowledgedAfterThePeerStoredIt) {
  pair();
  ASSERT_TRUE(net.runUntil([&] { return bothInSync(); }, 1s));
  repl::ConnEntry e;
  e.id = 77;
  e.phase = repl::ConnPhase::Idle;
  e.clientTcp = repl::TcpRepairState{.sndSeq = 1000, .rcvSeq = 2000, .mss = 1460};
  e.serverTcp = repl::TcpRepairState{.sndSeq = 3000, .rcvSeq = 4000, .mss = 1460};
  e.version = {1, 99};
  uint64_t id = a->session->transfer({e}, now());
  ASSERT_NE(id, 0u);
  net.run(1ms);
  ASSERT_TRUE(a->events.transfers.count(id));
  EXPECT_TRUE(a->events.transfers[id]);
  ASSERT_NE(b->replica.find(77), nullptr);
  EXPECT_EQ(b->replica.find(77)->clientTcp->sndSeq, 1000u);
  EXPECT_EQ(b->events.transfersReceived.size(), 1u);
}

TEST_F(SessionTest, TransferFailsWhenTheLinkBreaksFirst) {
  pair();
  ASSERT_TRUE(net.runUntil([&] { return bothInSync(); }, 1s));
  repl::ConnEntry e;
  e.id = 78;
  uint64_t id = a->session->transfer({e}, now());
  a->ep.cutAll();
  ASSERT_TRUE(a->events.transfers.count(id));
  EXPECT_FALSE(a->events.transfers[id]);
  a->ep.cutAll();
  EXPECT_EQ(a->session->transfer({e}, now()), 0u);  // no peer: refused at once
}

TEST_F(SessionTest, ShutdownSaysGoodbyeAndStopsReconnecting) {
  pair();
  ASSERT_TRUE(net.runUntil([&] { return bothInSync(); }, 1s));
  a->session->shutdown(now());
  net.run(10ms);
  EXPECT_EQ(a->events.peerLost, 0);
  EXPECT_EQ(b->events.peerLost, 1);
  EXPECT_NE(b->events.lastLoss.find("shutdown"), std::string::npos) << b->events.lastLoss;
  size_t calls = a->ep.connectCalls;
  net.run(5s);
  EXPECT_EQ(a->ep.connectCalls, calls);
}

}  // namespace
}  // namespace halb::statesync
