// The outbound pipeline's two pieces on their own: coalescing rules and the resend log.
#include "statesync/outbound.h"

#include <gtest/gtest.h>

#include "tests/statesync/fake_tables.h"

namespace halb::statesync {
namespace {

using namespace std::chrono_literals;
using repl::ChangeKind;

TEST(Coalescer, KeepsTheNewestChangePerKeyInArrivalOrder) {
  test::FakeTables t;
  ManualClock clock;
  Coalescer c;
  c.offer(t.upsert(1, "a", 1, 60s, clock.now()));
  c.offer(t.upsert(1, "b", 1, 60s, clock.now()));
  c.offer(t.upsert(1, "a", 2, 60s, clock.now()));
  c.offer(t.upsert(2, "a", 3, 60s, clock.now()));  // another backend: another key
  std::vector<repl::Change> out;
  c.drain(out);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].stick.key, "a");
  EXPECT_EQ(out[0].stick.serverId, 2u);
  EXPECT_EQ(out[1].stick.key, "b");
  EXPECT_EQ(out[2].stick.backendId, 2u);
  EXPECT_EQ(c.stats().merged, 1u);
  EXPECT_TRUE(c.empty());
}

TEST(Coalescer, AnOlderVersionNeverReplacesANewerOne) {
  test::FakeTables t;
  ManualClock clock;
  Coalescer c;
  repl::Change older = t.upsert(1, "a", 1, 60s, clock.now());
  repl::Change newer = t.upsert(1, "a", 2, 60s, clock.now());
  c.offer(newer);  // workers drain in any order
  c.offer(older);
  std::vector<repl::Change> out;
  c.drain(out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].stick.serverId, 2u);
}

TEST(Coalescer, MergesKindsSoThePeerStillLearnsTheEntryExists) {
  test::FakeTables t;
  ManualClock clock;
  Coalescer c(1);  // a one-slot touch cache: every touch of a new key is forwarded
  c.offer(t.openConn(1, clock.now()));
  c.offer(t.openConn(1, clock.now(), ChangeKind::ConnUpdate));
  c.offer(t.upsert(1, "a", 1, 60s, clock.now()));
  clock.advance(30s);
  c.offer(t.touch(1, "a", 60s, clock.now()));
  c.offer(t.openConn(2, clock.now(), ChangeKind::ConnUpdate));
  c.offer(t.closeConn(2, clock.now()));
  std::vector<repl::Change> out;
  c.drain(out);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].kind, ChangeKind::ConnOpen);     // open + update = open
  EXPECT_EQ(out[0].conn.bytesIn, 200u);             // with the latest data
  EXPECT_EQ(out[1].kind, ChangeKind::StickUpsert);  // upsert + touch = upsert
  EXPECT_EQ(out[2].kind, ChangeKind::ConnClose);    // update + close = close (the peer knew it)
  // The batch's age is the oldest change's: lag is never under-reported.
  EXPECT_EQ(out[1].at, clock.now() - 30s);
}

TEST(Coalescer, OpenThenCloseInOneWindowVanishes) {
  test::FakeTables t;
  ManualClock clock;
  Coalescer c;
  c.offer(t.openConn(1, clock.now()));
  c.offer(t.closeConn(1, clock.now()));
  EXPECT_TRUE(c.empty());
  EXPECT_EQ(c.stats().cancelled, 1u);
  std::vector<repl::Change> out;
  c.drain(out);
  EXPECT_TRUE(out.empty());
}

TEST(Coalescer, TouchesAreForwardedOnlyWhenThePeerCopyWouldAgeTooFar) {
  test::FakeTables t;
  ManualClock clock;
  Coalescer c(1024, 0.25);
  c.offer(t.upsert(1, "a", 1, 40s, clock.now()));
  std::vector<repl::Change> out;
  c.drain(out);
  int forwarded = 0;
  for (int s = 1; s <= 40; ++s) {
    clock.advance(1s);
    c.offer(t.touch(1, "a", 40s, clock.now()));
    forwarded += static_cast<int>(c.size());
    c.drain(out);
  }
  // Forwarded when the extension exceeds 10 s: at 11 s, 22 s and 33 s.
  EXPECT_EQ(forwarded, 3);
  EXPECT_EQ(c.stats().touchesSuppressed, 37u);
  // A delete forgets the key: the next touch (of a re-created entry) is forwarded.
  c.offer(t.erase(1, "a", clock.now()));
  t.upsert(1, "a", 1, 40s, clock.now());
  c.drain(out);
  c.offer(t.touch(1, "a", 40s, clock.now()));
  EXPECT_EQ(c.size(), 1u);
}

TEST(OutboundLog, NumbersAcknowledgesAndBounds) {
  OutboundLog log(3, 1000);
  TimePoint t{};
  EXPECT_EQ(log.nextSeq(), 1u);
  ASSERT_TRUE(log.append(ChangeKind::StickUpsert, t, "a"));
  ASSERT_TRUE(log.append(ChangeKind::StickUpsert, t, "b"));
  ASSERT_TRUE(log.append(ChangeKind::StickUpsert, t, "c"));
  EXPECT_FALSE(log.append(ChangeKind::StickUpsert, t, "d"));  // full by count
  EXPECT_EQ(log.find(2)->body, "b");
  EXPECT_EQ(log.find(4), nullptr);
  log.ack(2);
  EXPECT_EQ(log.firstSeq(), 3u);
  EXPECT_EQ(log.find(1), nullptr);
  EXPECT_TRUE(log.append(ChangeKind::StickUpsert, t, "d"));
  EXPECT_FALSE(log.append(ChangeKind::StickUpsert, t, std::string(1000, 'x')));  // full by bytes
  EXPECT_EQ(log.bytes(), 2u);
}

TEST(OutboundLog, ResumeOnlyWhenEverythingAfterThePointIsHeld) {
  OutboundLog log(100, 1 << 20);
  TimePoint t{};
  EXPECT_TRUE(log.canResumeFrom(0));  // nothing logged yet: a peer at 0 is complete
  for (int i = 0; i < 10; ++i) log.append(ChangeKind::StickUpsert, t, "x");  // seq 1..10
  EXPECT_TRUE(log.canResumeFrom(0));
  EXPECT_TRUE(log.canResumeFrom(10));
  EXPECT_FALSE(log.canResumeFrom(11));  // the peer claims more than was sent
  log.ack(5);
  EXPECT_FALSE(log.canResumeFrom(4));  // 5 was trimmed
  EXPECT_TRUE(log.canResumeFrom(5));
  log.breakStream();
  EXPECT_FALSE(log.canResumeFrom(10));  // what was lost in the break is nowhere
  EXPECT_EQ(log.nextSeq(), 12u);
  EXPECT_TRUE(log.canResumeFrom(11));  // a peer that got the post-break snapshot
}

}  // namespace
}  // namespace halb::statesync
