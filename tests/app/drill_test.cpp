// The pure parts of `halb drill`: gap computation, percentiles, user-moved detection, retry
// accounting, the response parser and option parsing. Time comes from a ManualClock.
#include "app/drill.h"

#include <gtest/gtest.h>

#include "common/time.h"

namespace halb::app::drill {
namespace {

TEST(GapTracker, NoEventsIsTheWholeRun) {
  ManualClock c;
  TimePoint begin = c.now();
  GapTracker g;
  Gap gap = g.finish(begin, begin + 3s);
  EXPECT_TRUE(gap.found);
  EXPECT_EQ(gap.length, 3s);
  EXPECT_EQ(gap.start, 0s);
}

TEST(GapTracker, LongestInteriorGapAndItsStart) {
  ManualClock c;
  TimePoint b = c.now();
  GapTracker g;
  for (auto t : {100ms, 110ms, 120ms, 470ms, 480ms, 490ms}) g.add(b + t);
  Gap gap = g.finish(b, b + 500ms);
  EXPECT_EQ(gap.length, 350ms);
  EXPECT_EQ(gap.start, 120ms);  // the last success before the outage
}

TEST(GapTracker, UnrecoveredOutageCountsUpToTheEnd) {
  ManualClock c;
  TimePoint b = c.now();
  GapTracker g;
  for (auto t : {10ms, 20ms, 30ms}) g.add(b + t);
  Gap gap = g.finish(b, b + 1s);
  EXPECT_EQ(gap.length, 970ms);
  EXPECT_EQ(gap.start, 30ms);
}

TEST(GapTracker, TimeBeforeTheFirstSuccessIsWarmUpNotOutage) {
  ManualClock c;
  TimePoint b = c.now();
  GapTracker g;
  for (auto t : {400ms, 410ms, 420ms}) g.add(b + t);
  EXPECT_EQ(g.finish(b, b + 425ms).length, 10ms);
}

TEST(GapTracker, OutOfOrderTimesDoNotMakeNegativeGaps) {
  ManualClock c;
  TimePoint b = c.now();
  GapTracker g;
  g.add(b + 50ms);
  g.add(b + 40ms);  // treated as 50ms
  g.add(b + 60ms);
  EXPECT_EQ(g.finish(b, b + 60ms).length, 10ms);
}

TEST(Percentiles, NearestRank) {
  std::vector<Duration> v;
  for (int i = 100; i >= 1; --i) v.push_back(milliseconds(i));
  Percentiles p = percentiles(v);
  EXPECT_EQ(p.count, 100u);
  EXPECT_EQ(p.p50, 50ms);
  EXPECT_EQ(p.p99, 99ms);
  EXPECT_EQ(p.max, 100ms);

  std::vector<Duration> one{7ms};
  p = percentiles(one);
  EXPECT_EQ(p.p50, 7ms);
  EXPECT_EQ(p.p99, 7ms);

  std::vector<Duration> ten;
  for (int i = 1; i <= 10; ++i) ten.push_back(milliseconds(i));
  p = percentiles(ten);
  EXPECT_EQ(p.p50, 5ms);
  EXPECT_EQ(p.p99, 10ms);  // ceil(9.9) = 10th

  std::vector<Duration> none;
  EXPECT_EQ(percentiles(none).count, 0u);
}

class RecorderTest : public ::testing::Test {
 protected:
  ManualClock clock;
  TimePoint t0 = clock.now();
  TimePoint at(Duration d) { return t0 + d; }
};

TEST_F(RecorderTest, UserMovedOnlyWhenTheServerChanges) {
  Recorder rec(t0, 1000, false);
  uint32_t a = rec.addUser("10.0.0.50/keep-alive", HttpMode::KeepAlive);
  uint32_t b = rec.addUser("10.0.0.51/new-conn", HttpMode::NewConnection);
  uint32_t c = rec.addUser("10.0.0.52/new-conn", HttpMode::NewConnection);
  rec.onAttempt(a, false, at(0ms), at(1ms), Outcome::Ok, "b1");
  rec.onAttempt(a, false, at(10ms), at(11ms), Outcome::Ok, "b1");
  rec.onAttempt(a, false, at(20ms), at(21ms), Outcome::Ok, "b2");  // moved
  rec.onAttempt(a, false, at(30ms), at(31ms), Outcome::Ok, "b3");  // and again
  rec.onAttempt(b, false, at(0ms), at(2ms), Outcome::Ok, "b2");
  rec.onAttempt(b, false, at(10ms), at(12ms), Outcome::Ok, "");  // no identity: ignored
  rec.onAttempt(b, false, at(20ms), at(22ms), Outcome::Ok, "b2");
  rec.onAttempt(c, false, at(0ms), at(5ms), Outcome::Timeout, "");
  Report r = rec.report(at(40ms));
  ASSERT_EQ(r.users.size(), 3u);
  EXPECT_EQ(r.usersMoved, 1u);
  EXPECT_EQ(r.usersWithoutResponse, 1u);
  const UserResult& ua = r.users[a];
  EXPECT_EQ(ua.changes, 2u);
  EXPECT_EQ(ua.firstChange, 21ms);
  EXPECT_EQ(ua.changedFrom, "b1");
  EXPECT_EQ(ua.changedTo, "b2");
  EXPECT_EQ(ua.firstBackend, "b1");
  EXPECT_EQ(ua.lastBackend, "b3");
  EXPECT_EQ(r.users[b].changes, 0u);
  EXPECT_EQ(r.responsesByBackend.at("b1"), 2u);
  EXPECT_EQ(r.responsesByBackend.at("b2"), 3u);
  EXPECT_EQ(r.responsesByBackend.at("?"), 1u);
}

TEST_F(RecorderTest, RetryOnceCountsRawAndAfterRetry) {
  Recorder rec(t0, 0, true);
  uint32_t u = rec.addUser("u", HttpMode::KeepAlive);
  // request 1: fails, retry succeeds; request 2: fails, retry fails; request 3: ok
  rec.onAttempt(u, false, at(0ms), at(1ms), Outcome::Reset, "");
  rec.onAttempt(u, true, at(1ms), at(2ms), Outcome::Ok, "b1");
  rec.onAttempt(u, false, at(10ms), at(11ms), Outcome::Timeout, "");
  rec.onAttempt(u, true, at(11ms), at(12ms), Outcome::ConnectFailed, "");
  rec.onAttempt(u, false, at(20ms), at(21ms), Outcome::Ok, "b1");
  Report r = rec.report(at(30ms));
  EXPECT_EQ(r.requests, 3u);
  EXPECT_EQ(r.ok, 2u);
  EXPECT_EQ(r.failedRaw, 2u);
  EXPECT_EQ(r.failedAfterRetry, 1u);
  EXPECT_EQ(r.retried, 2u);
  EXPECT_EQ(r.retriesOk, 1u);
  EXPECT_EQ(r.failuresByOutcome.at("reset"), 1u);
  EXPECT_EQ(r.failuresByOutcome.at("timeout"), 1u);
  EXPECT_EQ(r.failuresByOutcome.at("connect_failed"), 1u);
  EXPECT_EQ(r.users[u].failed, 1u);
}

TEST_F(RecorderTest, WithoutRetryEveryFailureCountsAfterRetryToo) {
  Recorder rec(t0, 0, false);
  uint32_t u = rec.addUser("u", HttpMode::NewConnection);
  rec.onAttempt(u, false, at(0ms), at(1ms), Outcome::BadStatus, "b1");
  rec.onAttempt(u, false, at(5ms), at(6ms), Outcome::Ok, "b1");
  Report r = rec.report(at(10ms));
  EXPECT_EQ(r.failedRaw, 1u);
  EXPECT_EQ(r.failedAfterRetry, 1u);
  EXPECT_EQ(r.users[u].failed, 1u);
}

TEST_F(RecorderTest, OutageByModeAndLatencySplitAtTheLargestGap) {
  Recorder rec(t0, 5000, false);
  uint32_t ka = rec.addUser("ka", HttpMode::KeepAlive);
  uint32_t nc = rec.addUser("nc", HttpMode::NewConnection);
  // before: latencies 1 ms; a 300 ms hole in both modes; after: latencies 3 ms
  for (int i = 0; i < 10; ++i) {
    Duration s = milliseconds(10 * i);
    rec.onAttempt(ka, false, at(s), at(s + 1ms), Outcome::Ok, "b1");
    rec.onAttempt(nc, false, at(s + 5ms), at(s + 6ms), Outcome::Ok, "b1");
  }
  // last before: 96ms (nc). keep-alive resumes first.
  for (int i = 0; i < 10; ++i) {
    Duration s = 400ms + milliseconds(10 * i);
    rec.onAttempt(ka, false, at(s), at(s + 3ms), Outcome::Ok, "b1");
    rec.onAttempt(nc, false, at(s + 20ms), at(s + 23ms), Outcome::Ok, "b1");
  }
  Report r = rec.report(at(520ms));
  EXPECT_EQ(r.outage.length, 403ms - 96ms);
  EXPECT_EQ(r.outage.start, 96ms);
  EXPECT_EQ(r.startUnixMs, 5000);
  EXPECT_EQ(r.outageByMode[int(HttpMode::KeepAlive)].length, 403ms - 91ms);
  EXPECT_EQ(r.outageByMode[int(HttpMode::NewConnection)].length, 423ms - 96ms);
  EXPECT_EQ(r.latencyBefore.count, 20u);
  EXPECT_EQ(r.latencyBefore.p99, 1ms);
  EXPECT_EQ(r.latencyAfter.count, 20u);
  EXPECT_EQ(r.latencyAfter.p50, 3ms);
  EXPECT_EQ(r.latencyAll.count, 40u);
  EXPECT_EQ(r.worstUserGapName, "nc");
  EXPECT_EQ(r.worstUserGap.length, 423ms - 96ms);
  EXPECT_EQ(r.firstSuccessAt, 1ms);
}

TEST_F(RecorderTest, UnusedModeHasNoOutage) {
  Recorder rec(t0, 0, false);
  uint32_t u = rec.addUser("u", HttpMode::KeepAlive);
  rec.onAttempt(u, false, at(0ms), at(1ms), Outcome::Ok, "b1");
  Report r = rec.report(at(2ms));
  EXPECT_TRUE(r.outageByMode[int(HttpMode::KeepAlive)].found);
  EXPECT_FALSE(r.outageByMode[int(HttpMode::NewConnection)].found);
}

TEST_F(RecorderTest, LongLivedConnectionStates) {
  Recorder rec(t0, 0, false);
  uint32_t ok = rec.addTcpConn("10.0.0.50");
  uint32_t reset = rec.addTcpConn("10.0.0.51");
  uint32_t hung = rec.addTcpConn("10.0.0.50");
  uint32_t never = rec.addTcpConn("10.0.0.51");
  rec.onTcpEcho(ok, at(0ms), at(1ms));
  rec.onTcpEcho(ok, at(100ms), at(420ms));  // survived a failover with a 320 ms stall
  rec.onTcpEnd(ok, TcpState::Intact, at(1s));
  rec.onTcpEcho(reset, at(0ms), at(2ms));
  rec.onTcpEnd(reset, TcpState::Reset, at(350ms), "Connection reset by peer");
  rec.onTcpEcho(hung, at(0ms), at(1ms));
  rec.onTcpEnd(hung, TcpState::Hung, at(2100ms));
  rec.onTcpEnd(never, TcpState::ConnectFailed, at(5ms));
  EXPECT_TRUE(rec.tcpEstablished(ok));
  EXPECT_TRUE(rec.tcpEstablished(hung));
  Report r = rec.report(at(1s));
  EXPECT_EQ(r.tcpCounts[int(TcpState::Intact)], 1u);
  EXPECT_EQ(r.tcpCounts[int(TcpState::Reset)], 1u);
  EXPECT_EQ(r.tcpCounts[int(TcpState::Hung)], 1u);
  EXPECT_EQ(r.tcpCounts[int(TcpState::ConnectFailed)], 1u);
  EXPECT_EQ(r.tcpMaxStall, 320ms);
  EXPECT_EQ(r.tcp[reset].endedAt, 350ms);
  EXPECT_EQ(r.tcp[reset].sinceLastEcho, 348ms);
  EXPECT_EQ(r.tcp[ok].messages, 2u);
  // no HTTP users: no HTTP outage is claimed
  EXPECT_FALSE(r.outage.found);
}

TEST_F(RecorderTest, ReportsFormatAsTextAndJson) {
  Recorder rec(t0, 1700000000000, true);
  uint32_t u = rec.addUser("10.0.0.50/keep-alive", HttpMode::KeepAlive);
  rec.onAttempt(u, false, at(0ms), at(1ms), Outcome::Ok, "b\"1");
  rec.onAttempt(u, false, at(10ms), at(11ms), Outcome::Ok, "b2");
  Report r = rec.report(at(20ms));
  r.httpTarget = "10.0.0.100:80";
  std::string json = formatJson(r);
  EXPECT_NE(json.find("\"users_moved\":1"), std::string::npos) << json;
  EXPECT_NE(json.find("\"failed_after_retry\":0"), std::string::npos);
  EXPECT_NE(json.find("\"b\\\"1\""), std::string::npos);                       // escaped
  EXPECT_NE(json.find("\"start_unix_ms\":1700000000001"), std::string::npos);  // gap start
  std::string text = formatText(r);
  EXPECT_NE(text.find("users whose server changed: 1 of 1"), std::string::npos) << text;
  EXPECT_NE(text.find("b\"1 -> b2"), std::string::npos) << text;
}

// ---------------------------------------------------------------------------------------------

TEST(ResponseParser, ContentLengthFedByteByByte) {
  std::string resp =
      "HTTP/1.1 200 OK\r\nx-backend: b2\r\nContent-Length: 5\r\nSet-Cookie: SID=abc; Path=/\r\n"
      "Set-Cookie: halb=s1\r\n\r\nhello";
  ResponseParser p;
  for (size_t i = 0; i < resp.size(); ++i) {
    ASSERT_FALSE(p.done()) << i;
    EXPECT_EQ(p.feed(std::string_view(resp).substr(i, 1)), 1u);
  }
  ASSERT_TRUE(p.done());
  EXPECT_EQ(p.status(), 200);
  EXPECT_TRUE(p.keepAlive());
  EXPECT_EQ(p.backend(), "b2");
  EXPECT_EQ(p.bodyBytes(), 5u);
  ASSERT_EQ(p.cookies().size(), 2u);
  EXPECT_EQ(p.cookies()[0], (std::pair<std::string, std::string>{"SID", "abc"}));
  EXPECT_EQ(p.cookies()[1], (std::pair<std::string, std::string>{"halb", "s1"}));
}

TEST(ResponseParser, StopsAtTheEndOfTheResponse) {
  std::string two = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n";
  ResponseParser p;
  size_t used = p.feed(two);
  EXPECT_TRUE(p.done());
  EXPECT_EQ(used, two.find("HTTP/1.1", 5));
}

TEST(ResponseParser, Chunked) {
  std::string resp =
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nX-Backend: b3\r\n\r\n"
      "5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nTrailer: x\r\n\r\n";
  for (size_t step : {size_t{1}, size_t{3}, resp.size()}) {
    ResponseParser p;
    for (size_t i = 0; i < resp.size(); i += step) p.feed(std::string_view(resp).substr(i, step));
    ASSERT_TRUE(p.done()) << step << " " << p.error();
    EXPECT_EQ(p.bodyBytes(), 31u);
    EXPECT_EQ(p.backend(), "b3");
  }
}

TEST(ResponseParser, BodyUntilEofIsNotReusable) {
  ResponseParser p;
  p.feed("HTTP/1.1 200 OK\r\nX-Backend: b1\r\n\r\nsome body");
  EXPECT_FALSE(p.done());
  p.onEof();
  EXPECT_TRUE(p.done());
  EXPECT_FALSE(p.keepAlive());
  EXPECT_EQ(p.bodyBytes(), 9u);
}

TEST(ResponseParser, EofInTheMiddleFails) {
  ResponseParser p;
  p.feed("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
  p.onEof();
  EXPECT_TRUE(p.failed());
}

TEST(ResponseParser, InterimResponseIsSkipped) {
  ResponseParser p;
  p.feed("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nX-Backend: b1\r\n\r\n");
  ASSERT_TRUE(p.done());
  EXPECT_EQ(p.status(), 204);
  EXPECT_EQ(p.backend(), "b1");
}

TEST(ResponseParser, ConnectionHeaders) {
  ResponseParser p;
  p.feed("HTTP/1.1 200 OK\r\nConnection: Upgrade, close\r\nContent-Length: 0\r\n\r\n");
  ASSERT_TRUE(p.done());
  EXPECT_FALSE(p.keepAlive());
  p.reset();
  p.feed("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
  EXPECT_FALSE(p.keepAlive());
  p.reset();
  p.feed("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n");
  EXPECT_TRUE(p.keepAlive());
}

TEST(ResponseParser, ConfigurableIdentityHeader) {
  ResponseParser p("X-Served-By");
  p.feed(
      "HTTP/1.1 503 Unavailable\r\nX-Backend: b1\r\nx-served-by:  web7 \r\nContent-Length: "
      "0\r\n\r\n");
  ASSERT_TRUE(p.done());
  EXPECT_EQ(p.backend(), "web7");
  EXPECT_EQ(p.status(), 503);
}

TEST(ResponseParser, RejectsGarbage) {
  for (std::string bad :
       {"HTTP/2 200 OK\r\n\r\n", "HTTP/1.1 20 OK\r\n\r\n", "SSH-2.0-OpenSSH\r\n\r\n",
        "HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"}) {
    ResponseParser p;
    p.feed(bad);
    EXPECT_TRUE(p.failed()) << bad;
  }
  ResponseParser p;
  std::string huge = "HTTP/1.1 200 OK\r\n" + std::string(ResponseParser::kMaxHead, 'a');
  p.feed(huge);
  EXPECT_TRUE(p.failed());
}

// ---------------------------------------------------------------------------------------------

TEST(DrillOptions, DefaultsAndBothModes) {
  auto o = parseOptions(
      {"--http", "10.0.0.100:80", "--source", "10.0.0.50,10.0.0.51", "--source", "10.0.0.52"});
  ASSERT_TRUE(o.ok()) << o.error();
  EXPECT_EQ(o->httpHost, "10.0.0.100");
  EXPECT_EQ(o->httpPort, 80);
  EXPECT_EQ(o->hostHeader, "10.0.0.100:80");
  EXPECT_EQ(o->sources.size(), 3u);
  EXPECT_TRUE(o->newConnection && o->keepAlive);
  EXPECT_EQ(o->httpUsers(), 6u);
  EXPECT_EQ(o->tcpConnections, 0u);
  EXPECT_EQ(o->duration, 10s);
  EXPECT_FALSE(o->retryOnce);
}

TEST(DrillOptions, EverythingSet) {
  auto o = parseOptions({"--http=[::1]:8080",
                         "--tcp",
                         "vip.example:9000",
                         "--mode",
                         "keep-alive",
                         "--rate",
                         "2500",
                         "--timeout",
                         "250ms",
                         "--retry-once",
                         "--tcp-interval",
                         "50ms",
                         "--tcp-size",
                         "32",
                         "--tcp-timeout",
                         "1s",
                         "--duration",
                         "1m",
                         "--until-file",
                         "/tmp/x",
                         "--ready-file",
                         "/tmp/r",
                         "--json",
                         "--json-file",
                         "/tmp/j",
                         "--users-per-source",
                         "3",
                         "--id-header",
                         "X-Server",
                         "--path",
                         "/a?b=1",
                         "--host",
                         "www",
                         "--no-cookies",
                         "--max-requests",
                         "100"});
  ASSERT_TRUE(o.ok()) << o.error();
  EXPECT_EQ(o->httpHost, "::1");
  EXPECT_EQ(o->tcpHost, "vip.example");
  EXPECT_EQ(o->tcpPort, 9000);
  EXPECT_EQ(o->tcpConnections, 8u);  // default with --tcp
  EXPECT_FALSE(o->newConnection);
  EXPECT_EQ(o->rate, 2500);
  EXPECT_EQ(o->requestTimeout, 250ms);
  EXPECT_EQ(o->duration, 60s);
  EXPECT_EQ(o->httpUsers(), 3u);
  EXPECT_EQ(o->hostHeader, "www");
  EXPECT_FALSE(o->cookies);
  EXPECT_EQ(o->maxRequests, 100u);
}

TEST(DrillOptions, Errors) {
  for (Args bad : std::vector<Args>{{},
                                    {"--rate", "10"},
                                    {"--http", "10.0.0.1"},
                                    {"--http", "10.0.0.1:0"},
                                    {"--http", "10.0.0.1:80", "--rate", "0"},
                                    {"--http", "10.0.0.1:80", "--rate", "fast"},
                                    {"--http", "10.0.0.1:80", "--duration", "5"},
                                    {"--http", "10.0.0.1:80", "--duration", "2h"},
                                    {"--http", "10.0.0.1:80", "--source", "10.0.0.999"},
                                    {"--http", "10.0.0.1:80", "--mode", "pipelined"},
                                    {"--http", "10.0.0.1:80", "--tcp-conns", "5"},
                                    {"--http", "10.0.0.1:80", "--path", "no-slash"},
                                    {"--http", "10.0.0.1:80", "--timeout"},
                                    {"--http", "10.0.0.1:80", "--bogus"}}) {
    EXPECT_FALSE(parseOptions(bad).ok()) << (bad.empty() ? "(none)" : bad.back());
  }
}

}  // namespace
}  // namespace halb::app::drill
