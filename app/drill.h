#pragma once
// `halb drill`: a client that measures what users see while a failover happens. It drives
// HTTP requests through a VIP from several source addresses ("users"), each either opening a
// new connection per request or keeping one alive, plus long-lived TCP connections that
// exchange small checksummed messages with an echo service, and reports the client-observed
// outage, failed requests (raw and after one retry), users whose server changed, long-lived
// connections lost/reset/hung/intact, and latency before and after the outage.
//
// This header holds the pure parts — options, the HTTP response parser, the recorder and the
// report — so they are unit-tested without sockets and time. The network client lives in
// drill_client.cpp (Boost.Asio, single thread) behind runDrill().
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "app/cli.h"
#include "common/net.h"
#include "common/result.h"
#include "common/time.h"

namespace halb::app::drill {

using namespace std::chrono_literals;

enum class HttpMode : uint8_t { NewConnection = 0, KeepAlive = 1 };
const char* toString(HttpMode m);

struct Options {
  // HTTP target (empty host: no HTTP load). `host` may be a name, resolved once at start.
  std::string httpHost;
  uint16_t httpPort = 0;
  std::string hostHeader;  // default: the target as given
  std::string path = "/";
  std::string idHeader = "X-Backend";  // response header naming the server that answered
  // TCP echo target for long-lived connections (empty: none).
  std::string tcpHost;
  uint16_t tcpPort = 0;

  std::vector<IpAddress> sources;  // one user per source and mode; empty: kernel's choice
  uint32_t usersPerSource = 1;     // more users behind one address (told apart by cookies)
  bool newConnection = true;       // both modes at once by default
  bool keepAlive = true;
  double rate = 200;  // HTTP requests per second, all users together
  Duration requestTimeout = 1s;
  bool retryOnce = false;
  bool cookies = true;  // keep a cookie jar per user (sticky cookies)

  uint32_t tcpConnections = 0;
  Duration tcpInterval = 100ms;  // one message per connection per interval
  uint32_t tcpMessageSize = 64;  // bytes, >= 24
  Duration tcpTimeout = 2s;      // no echo within this: the connection is hung

  Duration duration = 10s;   // upper bound of the drill
  std::string untilFile;     // stop early once this file exists
  std::string readyFile;     // created once every user and connection has succeeded once
  bool json = false;         // JSON report on stdout instead of text
  std::string jsonFile;      // also write the JSON report here
  uint64_t maxRequests = 0;  // 0: no bound besides duration x rate

  uint32_t httpUsers() const;
};

// Parses the arguments of `halb drill`; the error names the offending option.
Result<Options> parseOptions(const Args& args);
extern const char* const kUsage;

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 response parsing, incremental: what the drill needs (status, keep-alive, the server
// identity header, Set-Cookie) and a body framed by Content-Length, chunked encoding or EOF.

class ResponseParser {
 public:
  static constexpr size_t kMaxHead = 64 * 1024;

  explicit ResponseParser(std::string idHeader = "X-Backend") : idHeader_(std::move(idHeader)) {}
  void reset();

  // Consumes bytes; returns how many were used (the rest, after a complete response, belongs to
  // whatever follows). Check done()/failed() after each call.
  size_t feed(std::string_view data);
  // The peer closed: completes a body delimited by EOF, fails anything else unfinished.
  void onEof();

  bool done() const { return state_ == State::Done; }
  bool failed() const { return state_ == State::Error; }
  const std::string& error() const { return error_; }

  int status() const { return status_; }
  bool keepAlive() const { return keepAlive_; }
  const std::string& backend() const { return backend_; }
  // name=value of every Set-Cookie, attributes dropped.
  const std::vector<std::pair<std::string, std::string>>& cookies() const { return cookies_; }
  uint64_t bodyBytes() const { return bodyBytes_; }

 private:
  enum class State {
    Head,
    Body,
    ChunkSize,
    ChunkData,
    ChunkDataEnd,
    Trailers,
    UntilEof,
    Done,
    Error
  };
  void fail(std::string why);
  bool parseHead();
  bool takeLine(std::string_view data, size_t& used, std::string& line);

  std::string idHeader_;
  State state_ = State::Head;
  std::string buf_;  // head, or the current chunk-size/trailer line
  std::string error_;
  int status_ = 0;
  bool keepAlive_ = false;
  std::string backend_;
  std::vector<std::pair<std::string, std::string>> cookies_;
  uint64_t remaining_ = 0;
  uint64_t bodyBytes_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Recording and the report. The runner reports events with their times; Recorder keeps O(1)
// state per user plus one compact sample per successful request, and report() derives every
// figure from that alone.

enum class Outcome : uint8_t {
  Ok,
  ConnectFailed,  // refused / unreachable
  Timeout,        // the request's deadline passed (connect, write or response)
  Reset,          // ECONNRESET / EPIPE
  Closed,         // EOF before a complete response
  BadResponse,    // unparseable
  BadStatus,      // 5xx (a 4xx is the application's answer, not an outage)
  Error,          // anything else
};
const char* toString(Outcome o);
constexpr size_t kOutcomes = 8;

enum class TcpState : uint8_t {
  Intact,         // every message came back byte-exact, connection alive at the end
  Reset,          // the connection was reset
  Lost,           // closed by the peer, or another error
  Hung,           // no echo within tcpTimeout
  Corrupt,        // the echo differed from what was sent
  ConnectFailed,  // never established
};
const char* toString(TcpState s);
constexpr size_t kTcpStates = 6;

struct Gap {
  Duration length{};
  Duration start{};  // since the drill started
  bool found = false;
};

// Longest interval between consecutive event times (nondecreasing), counting the tail up to
// `end` (an outage that never ended shows in full). No events at all: the whole run.
class GapTracker {
 public:
  void add(TimePoint t);
  Gap finish(TimePoint begin, TimePoint end) const;
  uint64_t count() const { return count_; }
  std::optional<TimePoint> last() const { return count_ ? std::optional(last_) : std::nullopt; }

 private:
  uint64_t count_ = 0;
  TimePoint last_{};
  TimePoint bestFrom_{};
  Duration best_{-1};
};

struct Percentiles {
  uint64_t count = 0;
  Duration p50{}, p99{}, max{};
};
// Nearest-rank percentiles; sorts `v`.
Percentiles percentiles(std::vector<Duration>& v);

struct UserResult {
  std::string name;  // "10.0.0.50/keep-alive", "10.0.0.50#2/new-conn"
  HttpMode mode = HttpMode::NewConnection;
  uint64_t ok = 0;
  uint64_t failed = 0;  // after retry
  std::string firstBackend;
  std::string lastBackend;
  uint32_t changes = 0;                // times the answering server changed
  Duration firstChange{};              // since start, valid when changes > 0
  std::string changedFrom, changedTo;  // the first change
  Gap longestGap;
};

struct TcpConnResult {
  uint32_t id = 0;
  std::string source;
  TcpState state = TcpState::Intact;
  uint64_t messages = 0;     // echoes verified
  Duration maxStall{};       // longest send -> echo
  Duration endedAt{};        // since start, when it failed (not for intact)
  Duration sinceLastEcho{};  // last good echo -> failure noticed
  std::string detail;
};

struct Report {
  // what was run
  std::string httpTarget, tcpTarget;
  double rate = 0;
  bool retryOnce = false;
  int64_t startUnixMs = 0;
  Duration elapsed{};
  bool stoppedEarly = false;  // until-file or signal
  std::string stopReason;

  uint64_t requests = 0;   // first attempts
  uint64_t ok = 0;         // requests that succeeded (first try or retry)
  uint64_t failedRaw = 0;  // first attempt failed
  uint64_t failedAfterRetry = 0;
  uint64_t retried = 0;
  uint64_t retriesOk = 0;
  std::map<std::string, uint64_t> failuresByOutcome;  // every failed attempt
  std::map<std::string, uint64_t> responsesByBackend;

  Gap outage;  // all HTTP successes
  Gap outageByMode[2];
  std::optional<TimePoint> firstSuccess;
  Duration firstSuccessAt{};
  Percentiles latencyAll, latencyBefore, latencyAfter;  // split at the largest gap
  bool samplesTruncated = false;

  std::vector<UserResult> users;
  uint32_t usersMoved = 0;
  uint32_t usersWithoutResponse = 0;
  std::string worstUserGapName;
  Gap worstUserGap;

  std::vector<TcpConnResult> tcp;
  uint64_t tcpCounts[kTcpStates] = {};
  Duration tcpMaxStall{};  // over intact connections
  Duration tcpMedianStall{};
};

class Recorder {
 public:
  static constexpr size_t kMaxSamples = 4'000'000;  // 32 MB of samples, then stop keeping them

  // retryOnce: a failed first attempt is followed by one retry, which decides the request.
  Recorder(TimePoint start, int64_t startUnixMs, bool retryOnce)
      : start_(start), startUnixMs_(startUnixMs), retryOnce_(retryOnce) {}

  uint32_t addUser(std::string name, HttpMode mode);
  // One HTTP attempt ended at `done`; `retry` marks the single retry of a failed request.
  void onAttempt(uint32_t user, bool retry, TimePoint sent, TimePoint done, Outcome outcome,
                 std::string_view backend);
  uint32_t addTcpConn(std::string source);
  void onTcpEcho(uint32_t conn, TimePoint sent, TimePoint got);
  void onTcpEnd(uint32_t conn, TcpState state, TimePoint at, std::string detail = {});

  Report report(TimePoint end) const;

  uint32_t users() const { return static_cast<uint32_t>(users_.size()); }
  uint64_t requests() const { return requests_; }
  bool userSucceeded(uint32_t u) const { return users_[u].result.ok > 0; }
  bool tcpEstablished(uint32_t c) const { return tcp_[c].established; }

 private:
  struct Sample {
    uint32_t doneUs;  // since start (wraps after 71 minutes: durations are capped below that)
    uint32_t latencyUs;
  };
  struct User {
    UserResult result;
    GapTracker gaps;
  };
  struct Conn {
    TcpConnResult result;
    bool established = false;
    TimePoint lastEcho{};
  };

  TimePoint start_;
  int64_t startUnixMs_;
  bool retryOnce_;
  std::vector<User> users_;
  std::vector<Conn> tcp_;
  GapTracker all_, byMode_[2];
  std::vector<Sample> samples_;
  bool truncated_ = false;
  uint64_t requests_ = 0, ok_ = 0, failedRaw_ = 0, failedAfterRetry_ = 0, retried_ = 0,
           retriesOk_ = 0;
  uint64_t byOutcome_[kOutcomes] = {};
  std::map<std::string, uint64_t, std::less<>> byBackend_;
};

std::string formatText(const Report& r);
std::string formatJson(const Report& r);

// Runs the drill (blocking, single thread) and returns its report; an error when it could not
// start (unresolvable target, bad source address).
Result<Report> runDrill(const Options& opt);

}  // namespace halb::app::drill
