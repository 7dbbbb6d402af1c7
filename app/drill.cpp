// `halb drill`: options, response parsing, recording and the report (pure), and the command.
// The network client is in drill_client.cpp.
#include "app/drill.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <fstream>

#include "common/json.h"
#include "common/units.h"

namespace halb::app::drill {

const char* toString(HttpMode m) {
  switch (m) {
    case HttpMode::NewConnection:
      return "new-conn";
    case HttpMode::KeepAlive:
      return "keep-alive";
  }
  return "?";
}

const char* toString(Outcome o) {
  switch (o) {
    case Outcome::Ok:
      return "ok";
    case Outcome::ConnectFailed:
      return "connect_failed";
    case Outcome::Timeout:
      return "timeout";
    case Outcome::Reset:
      return "reset";
    case Outcome::Closed:
      return "closed";
    case Outcome::BadResponse:
      return "bad_response";
    case Outcome::BadStatus:
      return "bad_status";
    case Outcome::Error:
      return "error";
  }
  return "?";
}

const char* toString(TcpState s) {
  switch (s) {
    case TcpState::Intact:
      return "intact";
    case TcpState::Reset:
      return "reset";
    case TcpState::Lost:
      return "lost";
    case TcpState::Hung:
      return "hung";
    case TcpState::Corrupt:
      return "corrupt";
    case TcpState::ConnectFailed:
      return "connect_failed";
  }
  return "?";
}

uint32_t Options::httpUsers() const {
  if (httpHost.empty()) return 0;
  uint32_t modes = (newConnection ? 1 : 0) + (keepAlive ? 1 : 0);
  return static_cast<uint32_t>(std::max<size_t>(sources.size(), 1)) * usersPerSource * modes;
}

// ---------------------------------------------------------------------------------------------
// options

const char* const kUsage =
    "usage: halb drill [--http HOST:PORT] [--tcp HOST:PORT] [options]\n"
    "\n"
    "Drives load through a VIP during a failover drill and reports what the clients saw.\n"
    "\n"
    "HTTP load:\n"
    "  --http HOST:PORT         HTTP target (e.g. the VIP's HTTP frontend)\n"
    "  --host NAME              Host header (default: the target as given)\n"
    "  --path PATH              request path (default /)\n"
    "  --id-header NAME         response header naming the server (default X-Backend)\n"
    "  --source A[,B...]        source addresses to bind; one user per address and mode\n"
    "  --users-per-source N     users behind each address, told apart by cookies (default 1)\n"
    "  --mode both|keep-alive|new-conn   connection per request, kept alive, or both (default)\n"
    "  --rate N                 requests per second, all users together (default 200)\n"
    "  --timeout D              deadline of one request, connect included (default 1s)\n"
    "  --retry-once             retry a failed request once, at once; a request fails only if\n"
    "                           the retry fails too (both counts are reported)\n"
    "  --no-cookies             do not send cookies back\n"
    "Long-lived TCP connections:\n"
    "  --tcp HOST:PORT          echo service; each connection sends a checksummed message\n"
    "  --tcp-conns N            connections (default 8 with --tcp)\n"
    "  --tcp-interval D         one message per connection every D (default 100ms)\n"
    "  --tcp-size N             message bytes, 24..65536 (default 64)\n"
    "  --tcp-timeout D          no echo within D: the connection is hung (default 2s)\n"
    "Run and report:\n"
    "  --duration D             run at most this long (default 10s, at most 1h)\n"
    "  --until-file PATH        stop as soon as PATH exists (SIGINT/SIGTERM stop too)\n"
    "  --ready-file PATH        create PATH once every user and connection succeeded once\n"
    "  --max-requests N         stop after N HTTP requests\n"
    "  --json                   print the report as JSON instead of text\n"
    "  --json-file PATH         also write the JSON report to PATH\n"
    "Durations: 500ms, 2s, 1m30s. Exit status: 0 ran (see the report), 1 could not run,\n"
    "2 bad arguments.\n";

namespace {

Result<std::pair<std::string, uint16_t>> parseHostPort(std::string_view text) {
  std::string_view host, port;
  if (!text.empty() && text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return Error{"expected [IPv6]:PORT"};
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return Error{"expected HOST:PORT"};
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  unsigned p = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
  if (ec != std::errc() || end != port.data() + port.size() || p == 0 || p > 65535)
    return Error{"bad port '" + std::string(port) + "'"};
  if (host.empty()) return Error{"missing host"};
  return std::pair{std::string(host), static_cast<uint16_t>(p)};
}

template <class T>
bool parseNumber(const std::string& s, T& out, T lo, T hi) {
  T v{};
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v < lo || v > hi) return false;
  out = v;
  return true;
}

bool parseBoundedDuration(const std::string& s, Duration& out, Duration lo, Duration hi) {
  auto d = parseDuration(s);
  if (!d.ok() || *d < lo || *d > hi) return false;
  out = *d;
  return true;
}

}  // namespace

Result<Options> parseOptions(const Args& args) {
  Options o;
  bool tcpConnsSet = false;
  ArgParser p(args);
  std::string v;
  auto bad = [&](const std::string& what) { return Error{what}; };
  while (!p.done()) {
    std::string arg = p.current();
    if (p.flag("--retry-once")) {
      o.retryOnce = true;
    } else if (p.flag("--no-cookies")) {
      o.cookies = false;
    } else if (p.flag("--json")) {
      o.json = true;
    } else if (p.option("--http", nullptr, v) || p.option("--tcp", nullptr, v)) {
      if (!p.error.empty()) return bad(p.error);
      auto hp = parseHostPort(v);
      if (!hp.ok()) return bad(arg + ": " + hp.error());
      if (arg.rfind("--http", 0) == 0) {
        std::tie(o.httpHost, o.httpPort) = *hp;
        if (o.hostHeader.empty()) o.hostHeader = v;
      } else {
        std::tie(o.tcpHost, o.tcpPort) = *hp;
      }
    } else if (p.option("--host", nullptr, v)) {
      o.hostHeader = v;
    } else if (p.option("--path", nullptr, v)) {
      if (v.empty() || v[0] != '/' || v.find_first_of(" \r\n") != std::string::npos)
        return bad("--path must start with / and hold no spaces");
      o.path = v;
    } else if (p.option("--id-header", nullptr, v)) {
      o.idHeader = v;
    } else if (p.option("--source", nullptr, v)) {
      size_t start = 0;
      while (start <= v.size()) {
        size_t comma = v.find(',', start);
        std::string one =
            v.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        if (!one.empty()) {
          auto ip = IpAddress::parse(one);
          if (!ip.ok()) return bad("--source: " + ip.error());
          o.sources.push_back(*ip);
        }
        if (comma == std::string::npos) break;
        start = comma + 1;
      }
    } else if (p.option("--users-per-source", nullptr, v)) {
      if (!parseNumber<uint32_t>(v, o.usersPerSource, 1, 1000))
        return bad("--users-per-source: 1..1000");
    } else if (p.option("--mode", nullptr, v)) {
      if (v == "both")
        o.newConnection = o.keepAlive = true;
      else if (v == "keep-alive")
        o.newConnection = false, o.keepAlive = true;
      else if (v == "new-conn")
        o.newConnection = true, o.keepAlive = false;
      else
        return bad("--mode: both, keep-alive or new-conn");
    } else if (p.option("--rate", nullptr, v)) {
      char* end = nullptr;
      o.rate = std::strtod(v.c_str(), &end);
      if (end != v.c_str() + v.size() || !(o.rate >= 0.1 && o.rate <= 100000))
        return bad("--rate: 0.1..100000");
    } else if (p.option("--timeout", nullptr, v)) {
      if (!parseBoundedDuration(v, o.requestTimeout, 1ms, 60s))
        return bad("--timeout: a duration in 1ms..60s");
    } else if (p.option("--tcp-conns", nullptr, v)) {
      if (!parseNumber<uint32_t>(v, o.tcpConnections, 0, 10000))
        return bad("--tcp-conns: 0..10000");
      tcpConnsSet = true;
    } else if (p.option("--tcp-interval", nullptr, v)) {
      if (!parseBoundedDuration(v, o.tcpInterval, 1ms, 60s)) return bad("--tcp-interval: 1ms..60s");
    } else if (p.option("--tcp-size", nullptr, v)) {
      if (!parseNumber<uint32_t>(v, o.tcpMessageSize, 24, 65536))
        return bad("--tcp-size: 24..65536");
    } else if (p.option("--tcp-timeout", nullptr, v)) {
      if (!parseBoundedDuration(v, o.tcpTimeout, 1ms, 600s)) return bad("--tcp-timeout: 1ms..10m");
    } else if (p.option("--duration", nullptr, v)) {
      if (!parseBoundedDuration(v, o.duration, 1ms, std::chrono::hours(1)))
        return bad("--duration: up to 1h");
    } else if (p.option("--until-file", nullptr, v)) {
      o.untilFile = v;
    } else if (p.option("--ready-file", nullptr, v)) {
      o.readyFile = v;
    } else if (p.option("--json-file", nullptr, v)) {
      o.jsonFile = v;
    } else if (p.option("--max-requests", nullptr, v)) {
      if (!parseNumber<uint64_t>(v, o.maxRequests, 1, uint64_t{1} << 40))
        return bad("--max-requests: a positive count");
    } else {
      return bad("unknown argument '" + arg + "'");
    }
    if (!p.error.empty()) return bad(p.error);
  }
  if (o.httpHost.empty() && o.tcpHost.empty())
    return bad("nothing to drive: give --http and/or --tcp");
  if (!o.tcpHost.empty() && !tcpConnsSet) o.tcpConnections = 8;
  if (o.tcpHost.empty() && o.tcpConnections > 0) return bad("--tcp-conns needs --tcp");
  if (o.httpUsers() > 10000)
    return bad("too many users (sources x users-per-source x modes > 10000)");
  return o;
}

// ---------------------------------------------------------------------------------------------
// response parser

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

// Does the comma-separated header value hold `token` (case-insensitive)?
bool hasToken(std::string_view value, std::string_view token) {
  while (!value.empty()) {
    size_t comma = value.find(',');
    if (lower(trim(value.substr(0, comma))) == token) return true;
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  return false;
}

constexpr size_t kMaxLine = 8 * 1024;

}  // namespace

void ResponseParser::reset() {
  state_ = State::Head;
  buf_.clear();
  error_.clear();
  status_ = 0;
  keepAlive_ = false;
  backend_.clear();
  cookies_.clear();
  remaining_ = 0;
  bodyBytes_ = 0;
}

void ResponseParser::fail(std::string why) {
  state_ = State::Error;
  error_ = std::move(why);
}

bool ResponseParser::takeLine(std::string_view data, size_t& used, std::string& line) {
  size_t nl = data.find('\n', used);
  size_t end = nl == std::string_view::npos ? data.size() : nl + 1;
  buf_.append(data.substr(used, end - used));
  used = end;
  if (buf_.size() > kMaxLine) {
    fail("line too long");
    return false;
  }
  if (nl == std::string_view::npos) return false;
  line.assign(trim(std::string_view(buf_).substr(0, buf_.size() - 1)));
  buf_.clear();
  return true;
}

bool ResponseParser::parseHead() {
  std::string_view head(buf_);
  size_t eol = head.find("\r\n");
  std::string_view statusLine = head.substr(0, eol);
  // "HTTP/1.1 200 OK": version, a space, three digits.
  if (statusLine.size() < 12 || statusLine.substr(0, 7) != "HTTP/1." || statusLine[8] != ' ' ||
      !std::isdigit(static_cast<unsigned char>(statusLine[9])) ||
      !std::isdigit(static_cast<unsigned char>(statusLine[10])) ||
      !std::isdigit(static_cast<unsigned char>(statusLine[11])) ||
      (statusLine.size() > 12 && statusLine[12] != ' ')) {
    fail("bad status line");
    return false;
  }
  bool http11 = statusLine[7] == '1';
  status_ = (statusLine[9] - '0') * 100 + (statusLine[10] - '0') * 10 + (statusLine[11] - '0');
  std::string idLower = lower(idHeader_);
  bool chunked = false, haveLength = false, connClose = false, connKeepAlive = false;
  uint64_t length = 0;
  size_t pos = eol + 2;
  while (pos < head.size()) {
    size_t next = head.find("\r\n", pos);
    if (next == std::string_view::npos) next = head.size();
    std::string_view line = head.substr(pos, next - pos);
    pos = next + 2;
    if (line.empty()) break;
    size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) {
      fail("bad header line");
      return false;
    }
    std::string name = lower(line.substr(0, colon));
    std::string_view value = trim(line.substr(colon + 1));
    if (name == "content-length") {
      uint64_t n = 0;
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (ec != std::errc() || end != value.data() + value.size() || (haveLength && n != length)) {
        fail("bad content-length");
        return false;
      }
      haveLength = true;
      length = n;
    } else if (name == "transfer-encoding") {
      // chunked must be the last coding (RFC 9112 section 6.1)
      std::string v = lower(value);
      chunked = v.size() >= 7 && v.compare(v.size() - 7, 7, "chunked") == 0;
    } else if (name == "connection") {
      connClose = connClose || hasToken(value, "close");
      connKeepAlive = connKeepAlive || hasToken(value, "keep-alive");
    } else if (name == "set-cookie") {
      std::string_view pair = value.substr(0, value.find(';'));
      size_t eq = pair.find('=');
      if (eq != std::string_view::npos && eq > 0)
        cookies_.emplace_back(std::string(trim(pair.substr(0, eq))),
                              std::string(trim(pair.substr(eq + 1))));
    } else if (name == idLower) {
      backend_.assign(value);
    }
  }
  keepAlive_ = http11 ? !connClose : connKeepAlive;
  if (status_ >= 100 && status_ < 200) {
    // An interim response (100 Continue): the real one follows (RFC 9110 section 15.2).
    buf_.clear();
    state_ = State::Head;
    return true;
  }
  if (status_ == 204 || status_ == 304) {
    state_ = State::Done;
  } else if (chunked) {
    state_ = State::ChunkSize;
  } else if (haveLength) {
    remaining_ = length;
    state_ = length == 0 ? State::Done : State::Body;
  } else {
    state_ = State::UntilEof;  // framed by the connection's end: cannot be reused
    keepAlive_ = false;
  }
  return true;
}

size_t ResponseParser::feed(std::string_view data) {
  size_t used = 0;
  std::string line;
  while (used < data.size() && state_ != State::Done && state_ != State::Error) {
    switch (state_) {
      case State::Head: {
        size_t before = buf_.size();
        size_t take = std::min(data.size() - used, kMaxHead + 4 - before);
        buf_.append(data.substr(used, take));
        size_t end = buf_.find("\r\n\r\n", before >= 3 ? before - 3 : 0);
        if (end == std::string::npos) {
          used += take;
          if (buf_.size() >= kMaxHead) fail("response head too large");
          break;
        }
        size_t headLen = end + 4;
        used += headLen - before;
        buf_.resize(headLen);
        if (!parseHead()) return used;
        if (state_ != State::Head) buf_.clear();
        break;
      }
      case State::Body:
      case State::ChunkData: {
        uint64_t n = std::min<uint64_t>(remaining_, data.size() - used);
        remaining_ -= n;
        bodyBytes_ += n;
        used += n;
        if (remaining_ == 0) state_ = state_ == State::Body ? State::Done : State::ChunkDataEnd;
        break;
      }
      case State::UntilEof:
        bodyBytes_ += data.size() - used;
        used = data.size();
        break;
      case State::ChunkSize: {
        if (!takeLine(data, used, line)) break;
        std::string_view sz = std::string_view(line).substr(0, line.find(';'));
        sz = trim(sz);
        uint64_t n = 0;
        auto [end, ec] = std::from_chars(sz.data(), sz.data() + sz.size(), n, 16);
        if (sz.empty() || ec != std::errc() || end != sz.data() + sz.size()) {
          fail("bad chunk size");
          return used;
        }
        remaining_ = n;
        state_ = n == 0 ? State::Trailers : State::ChunkData;
        break;
      }
      case State::ChunkDataEnd:
        if (!takeLine(data, used, line)) break;
        if (!line.empty()) {
          fail("chunk not followed by CRLF");
          return used;
        }
        state_ = State::ChunkSize;
        break;
      case State::Trailers:
        if (!takeLine(data, used, line)) break;
        if (line.empty()) state_ = State::Done;
        break;
      case State::Done:
      case State::Error:
        break;
    }
  }
  return used;
}

void ResponseParser::onEof() {
  if (state_ == State::UntilEof) {
    state_ = State::Done;
  } else if (state_ != State::Done && state_ != State::Error) {
    fail("connection closed before the response was complete");
  }
}

// ---------------------------------------------------------------------------------------------
// recording

void GapTracker::add(TimePoint t) {
  if (count_ > 0) {
    if (t < last_) t = last_;  // completions are reported in order; tolerate equal times
    if (t - last_ > best_) {
      best_ = t - last_;
      bestFrom_ = last_;
    }
  }
  last_ = t;
  ++count_;
}

Gap GapTracker::finish(TimePoint begin, TimePoint end) const {
  Gap g;
  g.found = true;
  if (count_ == 0) {
    g.length = end - begin;
    g.start = Duration{0};
    return g;
  }
  Duration best = best_;
  TimePoint from = bestFrom_;
  if (end > last_ && end - last_ > best) {
    best = end - last_;
    from = last_;
  }
  if (best < Duration{0}) best = Duration{0}, from = last_;
  g.length = best;
  g.start = from - begin;
  return g;
}

Percentiles percentiles(std::vector<Duration>& v) {
  Percentiles p;
  p.count = v.size();
  if (v.empty()) return p;
  std::sort(v.begin(), v.end());
  // nearest rank: the smallest value with at least q of the samples at or below it
  auto rank = [&](double q) {
    size_t r = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size())));
    return v[std::clamp<size_t>(r, 1, v.size()) - 1];
  };
  p.p50 = rank(0.50);
  p.p99 = rank(0.99);
  p.max = v.back();
  return p;
}

uint32_t Recorder::addUser(std::string name, HttpMode mode) {
  User u;
  u.result.name = std::move(name);
  u.result.mode = mode;
  users_.push_back(std::move(u));
  return static_cast<uint32_t>(users_.size() - 1);
}

void Recorder::onAttempt(uint32_t user, bool retry, TimePoint sent, TimePoint done, Outcome outcome,
                         std::string_view backend) {
  User& u = users_.at(user);
  if (!retry) ++requests_;
  if (retry) ++retried_;
  if (outcome == Outcome::Ok) {
    ++ok_;
    if (retry) ++retriesOk_;
    ++u.result.ok;
    all_.add(done);
    byMode_[static_cast<int>(u.result.mode)].add(done);
    u.gaps.add(done);
    if (samples_.size() < kMaxSamples) {
      auto us = [](Duration d) {
        return static_cast<uint32_t>(std::clamp<int64_t>(
            std::chrono::duration_cast<microseconds>(d).count(), 0, UINT32_MAX));
      };
      samples_.push_back({us(done - start_), us(done - sent)});
    } else {
      truncated_ = true;
    }
    std::string_view id = backend.empty() ? std::string_view("?") : backend;
    auto it = byBackend_.find(id);
    if (it == byBackend_.end()) it = byBackend_.emplace(std::string(id), 0).first;
    ++it->second;
    if (!backend.empty()) {
      UserResult& r = u.result;
      if (r.firstBackend.empty()) {
        r.firstBackend = backend;
      } else if (r.lastBackend != backend) {
        if (r.changes == 0) {
          r.firstChange = done - start_;
          r.changedFrom = r.lastBackend;
          r.changedTo = backend;
        }
        ++r.changes;
      }
      r.lastBackend = backend;
    }
    return;
  }
  ++byOutcome_[static_cast<size_t>(outcome)];
  if (!retry) {
    ++failedRaw_;
    if (!retryOnce_) ++failedAfterRetry_, ++u.result.failed;
  } else {
    ++failedAfterRetry_;
    ++u.result.failed;
  }
}

uint32_t Recorder::addTcpConn(std::string source) {
  Conn c;
  c.result.id = static_cast<uint32_t>(tcp_.size());
  c.result.source = std::move(source);
  tcp_.push_back(std::move(c));
  return static_cast<uint32_t>(tcp_.size() - 1);
}

void Recorder::onTcpEcho(uint32_t conn, TimePoint sent, TimePoint got) {
  Conn& c = tcp_.at(conn);
  c.established = true;
  ++c.result.messages;
  c.result.maxStall = std::max(c.result.maxStall, Duration(got - sent));
  c.lastEcho = got;
}

void Recorder::onTcpEnd(uint32_t conn, TcpState state, TimePoint at, std::string detail) {
  Conn& c = tcp_.at(conn);
  c.result.state = state;
  c.result.detail = std::move(detail);
  if (state != TcpState::Intact) {
    c.result.endedAt = at - start_;
    if (c.established) c.result.sinceLastEcho = at - c.lastEcho;
  }
  if (state != TcpState::ConnectFailed) c.established = true;
}

Report Recorder::report(TimePoint end) const {
  Report r;
  r.startUnixMs = startUnixMs_;
  r.elapsed = end - start_;
  r.retryOnce = retryOnce_;
  r.requests = requests_;
  r.ok = ok_;
  r.failedRaw = failedRaw_;
  r.failedAfterRetry = failedAfterRetry_;
  r.retried = retried_;
  r.retriesOk = retriesOk_;
  for (size_t i = 0; i < kOutcomes; ++i)
    if (byOutcome_[i]) r.failuresByOutcome[toString(static_cast<Outcome>(i))] = byOutcome_[i];
  for (const auto& [k, v] : byBackend_) r.responsesByBackend[k] = v;

  if (!users_.empty()) {
    r.outage = all_.finish(start_, end);
    for (int m = 0; m < 2; ++m) {
      bool used = std::any_of(users_.begin(), users_.end(),
                              [&](const User& u) { return static_cast<int>(u.result.mode) == m; });
      if (used) r.outageByMode[m] = byMode_[m].finish(start_, end);
    }
  }
  r.samplesTruncated = truncated_;
  {
    std::vector<Duration> all, before, after;
    all.reserve(samples_.size());
    auto gs = std::chrono::duration_cast<microseconds>(r.outage.start).count();
    auto ge = std::chrono::duration_cast<microseconds>(r.outage.start + r.outage.length).count();
    for (const Sample& s : samples_) {
      Duration lat = microseconds(s.latencyUs);
      all.push_back(lat);
      if (r.outage.found && r.outage.length > Duration{0}) {
        if (static_cast<int64_t>(s.doneUs) <= gs)
          before.push_back(lat);
        else if (static_cast<int64_t>(s.doneUs) >= ge)
          after.push_back(lat);
      }
    }
    if (!samples_.empty()) r.firstSuccessAt = microseconds(samples_.front().doneUs);
    r.latencyAll = percentiles(all);
    r.latencyBefore = percentiles(before);
    r.latencyAfter = percentiles(after);
  }

  for (const User& u : users_) {
    UserResult ur = u.result;
    ur.longestGap = u.gaps.finish(start_, end);
    if (ur.ok == 0) ++r.usersWithoutResponse;
    if (ur.changes > 0) ++r.usersMoved;
    if (!r.worstUserGap.found || ur.longestGap.length > r.worstUserGap.length) {
      r.worstUserGap = ur.longestGap;
      r.worstUserGapName = ur.name;
    }
    r.users.push_back(std::move(ur));
  }

  std::vector<Duration> stalls;
  for (const Conn& c : tcp_) {
    r.tcp.push_back(c.result);
    ++r.tcpCounts[static_cast<size_t>(c.result.state)];
    if (c.result.state == TcpState::Intact) {
      r.tcpMaxStall = std::max(r.tcpMaxStall, c.result.maxStall);
      stalls.push_back(c.result.maxStall);
    }
  }
  r.tcpMedianStall = percentiles(stalls).p50;
  return r;
}

// ---------------------------------------------------------------------------------------------
// formatting

namespace {

double ms(Duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

std::string fmtMs(Duration d) {
  char buf[32];
  double v = ms(d);
  std::snprintf(buf, sizeof buf, v < 10 ? "%.2f ms" : v < 1000 ? "%.1f ms" : "%.0f ms", v);
  return buf;
}

std::string fmtPct(const Percentiles& p) {
  if (p.count == 0) return "n/a";
  return "p50 " + fmtMs(p.p50) + ", p99 " + fmtMs(p.p99) + ", max " + fmtMs(p.max) + " (" +
         std::to_string(p.count) + ")";
}

void gapJson(JsonWriter& j, const Gap& g, int64_t startUnixMs) {
  j.beginObject();
  j.key("longest_gap_ms").value(ms(g.length));
  j.key("start_ms").value(ms(g.start));
  j.key("start_unix_ms").value(static_cast<int64_t>(startUnixMs + toMillis(g.start)));
  j.endObject();
}

void pctJson(JsonWriter& j, const Percentiles& p) {
  j.beginObject();
  j.key("count").value(p.count);
  j.key("p50_ms").value(ms(p.p50));
  j.key("p99_ms").value(ms(p.p99));
  j.key("max_ms").value(ms(p.max));
  j.endObject();
}

}  // namespace

std::string formatText(const Report& r) {
  std::string o;
  char buf[256];
  auto line = [&](const std::string& s) { o += s + "\n"; };
  std::snprintf(buf, sizeof buf, "halb drill: %.1f s%s%s", ms(r.elapsed) / 1000.0,
                r.stoppedEarly ? ", stopped by " : "", r.stoppedEarly ? r.stopReason.c_str() : "");
  line(buf);
  if (!r.httpTarget.empty()) {
    line("HTTP " + r.httpTarget + ": " + std::to_string(r.users.size()) + " users, " +
         std::to_string(r.requests) + " requests (target " +
         std::to_string(static_cast<int64_t>(r.rate)) + "/s)");
    line("  outage (longest gap without a successful response): " + fmtMs(r.outage.length) +
         ", from " + fmtMs(r.outage.start) + " after the start");
    for (int m = 0; m < 2; ++m)
      if (r.outageByMode[m].found)
        line(std::string("    ") + toString(static_cast<HttpMode>(m)) + ": " +
             fmtMs(r.outageByMode[m].length) + " from " + fmtMs(r.outageByMode[m].start));
    if (r.worstUserGap.found)
      line("    worst user: " + r.worstUserGapName + " waited " + fmtMs(r.worstUserGap.length));
    std::string failures;
    for (const auto& [k, v] : r.failuresByOutcome)
      failures += (failures.empty() ? "" : ", ") + k + " " + std::to_string(v);
    line("  failed requests: " + std::to_string(r.failedRaw) + " raw" +
         (r.retryOnce ? ", " + std::to_string(r.failedAfterRetry) + " after one retry (" +
                            std::to_string(r.retriesOk) + " of " + std::to_string(r.retried) +
                            " retries ok)"
                      : std::string()) +
         (failures.empty() ? "" : "; attempts: " + failures));
    line("  users whose server changed: " + std::to_string(r.usersMoved) + " of " +
         std::to_string(r.users.size()) +
         (r.usersWithoutResponse
              ? " (" + std::to_string(r.usersWithoutResponse) + " never answered)"
              : ""));
    int shown = 0;
    for (const auto& u : r.users) {
      if (u.changes == 0) continue;
      if (++shown > 10) {
        line("    ...");
        break;
      }
      line("    " + u.name + ": " + u.changedFrom + " -> " + u.changedTo + " at " +
           fmtMs(u.firstChange) +
           (u.changes > 1 ? " (" + std::to_string(u.changes) + " changes)" : ""));
    }
    std::string backends;
    for (const auto& [k, v] : r.responsesByBackend)
      backends += (backends.empty() ? "" : ", ") + k + " " + std::to_string(v);
    line("  responses by server: " + (backends.empty() ? std::string("none") : backends));
    line("  latency before the gap: " + fmtPct(r.latencyBefore));
    line("  latency after the gap:  " + fmtPct(r.latencyAfter));
    line("  latency overall:        " + fmtPct(r.latencyAll) +
         (r.samplesTruncated ? " (samples truncated)" : ""));
  }
  if (!r.tcpTarget.empty()) {
    std::string counts;
    for (size_t i = 0; i < kTcpStates; ++i)
      if (r.tcpCounts[i] || i == 0)
        counts += (counts.empty() ? "" : ", ") + std::string(toString(static_cast<TcpState>(i))) +
                  " " + std::to_string(r.tcpCounts[i]);
    line("TCP " + r.tcpTarget + ": " + std::to_string(r.tcp.size()) +
         " long-lived connections: " + counts);
    line("  longest echo wait on intact connections: " + fmtMs(r.tcpMaxStall) +
         " (median of maxima " + fmtMs(r.tcpMedianStall) + ")");
    int shown = 0;
    for (const auto& c : r.tcp) {
      if (c.state == TcpState::Intact) continue;
      if (++shown > 10) {
        line("    ...");
        break;
      }
      line("    conn " + std::to_string(c.id) + " from " + c.source + ": " + toString(c.state) +
           " at " + fmtMs(c.endedAt) + ", " + fmtMs(c.sinceLastEcho) + " after its last echo" +
           (c.detail.empty() ? "" : " (" + c.detail + ")"));
    }
  }
  return o;
}

std::string formatJson(const Report& r) {
  JsonWriter j;
  j.beginObject();
  j.key("start_unix_ms").value(r.startUnixMs);
  j.key("elapsed_ms").value(ms(r.elapsed));
  j.key("stopped_by").value(r.stoppedEarly ? r.stopReason : std::string("duration"));
  j.key("http").beginObject();
  j.key("target").value(r.httpTarget);
  j.key("rate").value(r.rate);
  j.key("retry_once").value(r.retryOnce);
  j.key("requests").value(r.requests);
  j.key("ok").value(r.ok);
  j.key("failed_raw").value(r.failedRaw);
  j.key("failed_after_retry").value(r.failedAfterRetry);
  j.key("retried").value(r.retried);
  j.key("retries_ok").value(r.retriesOk);
  j.key("failed_attempts").beginObject();
  for (const auto& [k, v] : r.failuresByOutcome) j.key(k).value(v);
  j.endObject();
  j.key("responses_by_backend").beginObject();
  for (const auto& [k, v] : r.responsesByBackend) j.key(k).value(v);
  j.endObject();
  j.key("outage");
  gapJson(j, r.outage, r.startUnixMs);
  j.key("outage_by_mode").beginObject();
  for (int m = 0; m < 2; ++m) {
    if (!r.outageByMode[m].found) continue;
    j.key(toString(static_cast<HttpMode>(m)));
    gapJson(j, r.outageByMode[m], r.startUnixMs);
  }
  j.endObject();
  j.key("first_success_ms").value(ms(r.firstSuccessAt));
  j.key("latency").beginObject();
  j.key("before_gap");
  pctJson(j, r.latencyBefore);
  j.key("after_gap");
  pctJson(j, r.latencyAfter);
  j.key("all");
  pctJson(j, r.latencyAll);
  j.key("samples_truncated").value(r.samplesTruncated);
  j.endObject();
  j.key("users_total").value(static_cast<uint64_t>(r.users.size()));
  j.key("users_moved").value(r.usersMoved);
  j.key("users_without_response").value(r.usersWithoutResponse);
  j.key("worst_user_gap").beginObject();
  j.key("user").value(r.worstUserGapName);
  j.key("gap_ms").value(ms(r.worstUserGap.length));
  j.key("start_ms").value(ms(r.worstUserGap.start));
  j.endObject();
  j.key("users").beginArray();
  for (const auto& u : r.users) {
    j.beginObject();
    j.key("name").value(u.name);
    j.key("mode").value(toString(u.mode));
    j.key("ok").value(u.ok);
    j.key("failed").value(u.failed);
    j.key("first_backend").value(u.firstBackend);
    j.key("last_backend").value(u.lastBackend);
    j.key("changes").value(u.changes);
    if (u.changes) {
      j.key("first_change_ms").value(ms(u.firstChange));
      j.key("changed_from").value(u.changedFrom);
      j.key("changed_to").value(u.changedTo);
    }
    j.key("longest_gap_ms").value(ms(u.longestGap.length));
    j.endObject();
  }
  j.endArray();
  j.endObject();

  j.key("tcp").beginObject();
  j.key("target").value(r.tcpTarget);
  j.key("connections").value(static_cast<uint64_t>(r.tcp.size()));
  for (size_t i = 0; i < kTcpStates; ++i)
    j.key(toString(static_cast<TcpState>(i))).value(r.tcpCounts[i]);
  j.key("max_stall_ms").value(ms(r.tcpMaxStall));
  j.key("median_stall_ms").value(ms(r.tcpMedianStall));
  j.key("conns").beginArray();
  for (const auto& c : r.tcp) {
    j.beginObject();
    j.key("id").value(c.id);
    j.key("source").value(c.source);
    j.key("state").value(toString(c.state));
    j.key("messages").value(c.messages);
    j.key("max_stall_ms").value(ms(c.maxStall));
    if (c.state != TcpState::Intact) {
      j.key("ended_ms").value(ms(c.endedAt));
      j.key("since_last_echo_ms").value(ms(c.sinceLastEcho));
      j.key("detail").value(c.detail);
    }
    j.endObject();
  }
  j.endArray();
  j.endObject();
  j.endObject();
  return j.take() + "\n";
}

}  // namespace halb::app::drill

namespace halb::app {

int cmdDrill(const Args& args) {
  for (const auto& a : args)
    if (a == "--help" || a == "-h") {
      std::fputs(drill::kUsage, stdout);
      return 0;
    }
  auto opt = drill::parseOptions(args);
  if (!opt.ok()) {
    std::fprintf(stderr, "halb drill: %s\n\n%s", opt.error().c_str(), drill::kUsage);
    return 2;
  }
  auto report = drill::runDrill(*opt);
  if (!report.ok()) {
    std::fprintf(stderr, "halb drill: %s\n", report.error().c_str());
    return 1;
  }
  std::string json = drill::formatJson(*report);
  if (!opt->jsonFile.empty()) {
    std::ofstream f(opt->jsonFile, std::ios::trunc);
    f << json;
    if (!f) std::fprintf(stderr, "halb drill: cannot write %s\n", opt->jsonFile.c_str());
  }
  std::fputs(opt->json ? json.c_str() : drill::formatText(*report).c_str(), stdout);
  std::fflush(stdout);
  return 0;
}

}  // namespace halb::app
