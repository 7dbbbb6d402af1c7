#include "balancer/health_checker.h"

#include <algorithm>
#include <charconv>

#include "balancer/hash.h"
#include "common/log.h"

namespace halb::balancer {
namespace {

char lowerAscii(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

bool startsWithNoCase(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i)
    if (lowerAscii(s[i]) != prefix[i]) return false;
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

constexpr Duration kFirstCheckSpread = std::chrono::milliseconds(100);

}  // namespace

// ------------------------------------------------------------------------ HTTP response

HttpCheckResponse::Verdict HttpCheckResponse::feed(std::string_view data) {
  raw_.append(data);
  if (!headDone_) {
    Verdict v = parseHead();
    if (v != Verdict::NeedMore || !headDone_) return v;
  }
  return parseBody();
}

HttpCheckResponse::Verdict HttpCheckResponse::parseHead() {
  size_t end = raw_.find("\r\n\r\n");
  if (end == std::string::npos) {
    if (raw_.size() > kMaxHead) return fail("response head larger than 16 KiB");
    return Verdict::NeedMore;
  }
  std::string_view head(raw_.data(), end);
  // Status line (RFC 9112 §4): HTTP-version SP 3DIGIT SP [reason]
  size_t eol = head.find("\r\n");
  std::string_view line = head.substr(0, eol);
  if (!line.starts_with("HTTP/1.") || line.size() < 12 || line[8] != ' ')
    return fail("not an HTTP/1.x response");
  int code = 0;
  auto [p, ec] = std::from_chars(line.data() + 9, line.data() + 12, code);
  if (ec != std::errc() || p != line.data() + 12 || code < 100 || code > 599)
    return fail("malformed status line");
  status_ = code;
  if (static_cast<uint32_t>(code) < min_ || static_cast<uint32_t>(code) > max_)
    return fail("status " + std::to_string(code));
  if (expect_.empty()) return pass();
  framing_ = Framing::Close;
  std::string_view rest = eol == std::string_view::npos ? std::string_view() : head.substr(eol + 2);
  while (!rest.empty()) {
    size_t n = rest.find("\r\n");
    std::string_view h = rest.substr(0, n);
    rest = n == std::string_view::npos ? std::string_view() : rest.substr(n + 2);
    if (startsWithNoCase(h, "transfer-encoding:")) {
      std::string v(trim(h.substr(18)));
      std::transform(v.begin(), v.end(), v.begin(), lowerAscii);
      if (v.ends_with("chunked")) framing_ = Framing::Chunked;
    } else if (startsWithNoCase(h, "content-length:") && framing_ != Framing::Chunked) {
      std::string_view v = trim(h.substr(15));
      uint64_t len = 0;
      auto [q, e] = std::from_chars(v.data(), v.data() + v.size(), len);
      if (e != std::errc() || q != v.data() + v.size()) return fail("invalid Content-Length");
      framing_ = Framing::Length;
      remaining_ = len;
    }
  }
  if (status_ == 204 || status_ == 304) framing_ = Framing::Length, remaining_ = 0;
  raw_.erase(0, end + 4);
  headDone_ = true;
  return Verdict::NeedMore;
}

HttpCheckResponse::Verdict HttpCheckResponse::parseBody() {
  auto take = [&](std::string_view bytes) {
    if (body_.size() < kMaxBody) body_.append(bytes.substr(0, kMaxBody - body_.size()));
  };
  switch (framing_) {
    case Framing::Close:
      take(raw_);
      raw_.clear();
      break;
    case Framing::Length: {
      size_t n = static_cast<size_t>(std::min<uint64_t>(remaining_, raw_.size()));
      take(std::string_view(raw_).substr(0, n));
      raw_.erase(0, n);
      remaining_ -= n;
      break;
    }
    case Framing::Chunked:
      for (;;) {
        if (chunkData_) {
          size_t n = static_cast<size_t>(std::min<uint64_t>(remaining_, raw_.size()));
          take(std::string_view(raw_).substr(0, n));
          raw_.erase(0, n);
          remaining_ -= n;
          if (remaining_ > 0) break;
          if (raw_.size() < 2) break;  // the CRLF after the data
          raw_.erase(0, 2);
          chunkData_ = false;
          continue;
        }
        size_t eol = raw_.find("\r\n");
        if (eol == std::string::npos) {
          if (raw_.size() > 1024) return fail("invalid chunk size line");
          break;
        }
        uint64_t size = 0;
        std::string_view line(raw_.data(), eol);
        line = line.substr(0, line.find(';'));  // chunk extensions
        auto [q, e] = std::from_chars(line.data(), line.data() + line.size(), size, 16);
        if (e != std::errc() || q == line.data()) return fail("invalid chunk size");
        raw_.erase(0, eol + 2);
        if (size == 0) {
          remaining_ = 0;
          framing_ = Framing::Length;  // done: the trailers do not matter
          break;
        }
        remaining_ = size;
        chunkData_ = true;
      }
      break;
  }
  if (body_.find(expect_) != std::string::npos) return pass();
  const bool complete = framing_ == Framing::Length && remaining_ == 0;
  if (complete || body_.size() >= kMaxBody)
    return fail("body does not contain \"" + expect_ + "\"");
  return Verdict::NeedMore;
}

HttpCheckResponse::Verdict HttpCheckResponse::onEof() {
  if (!headDone_)
    return fail(raw_.empty() ? "connection closed without a response" : "truncated response head");
  if (body_.find(expect_) != std::string::npos) return pass();
  if (framing_ != Framing::Close) return fail("connection closed in the middle of the body");
  return fail("body does not contain \"" + expect_ + "\"");
}

HttpCheckResponse::Verdict HttpCheckResponse::pass() {
  detail_ = "status " + std::to_string(status_);
  return Verdict::Pass;
}

// ------------------------------------------------------------------------ one server

class HealthChecker::Check {
 public:
  Check(HealthChecker& owner, uint64_t serverId, std::string name, SocketAddress address,
        config::HealthCheck cfg)
      : owner_(owner),
        id_(serverId),
        name_(std::move(name)),
        address_(address),
        cfg_(std::move(cfg)),
        timer_(owner.loop_),
        deadline_(owner.loop_) {
    std::string host = cfg_.httpHost.empty() ? address_.toString() : cfg_.httpHost;
    request_ = "GET " + cfg_.httpPath + " HTTP/1.1\r\nHost: " + host +
               "\r\nUser-Agent: halb-health/1\r\nAccept: */*\r\nConnection: close\r\n\r\n";
  }

  // Same server, same check: the schedule can continue.
  bool same(const SocketAddress& a, const config::HealthCheck& c) const {
    return a == address_ && c.type == cfg_.type && c.interval == cfg_.interval &&
           c.timeout == cfg_.timeout && c.httpPath == cfg_.httpPath &&
           c.httpHost == cfg_.httpHost && c.expectStatusMin == cfg_.expectStatusMin &&
           c.expectStatusMax == cfg_.expectStatusMax && c.expectBody == cfg_.expectBody;
  }

  void schedule(Duration delay) {
    timer_.start(std::max(delay, Duration::zero()), [this] { run(); });
  }

 private:
  void run() {
    started_ = owner_.loop_.now();
    active_ = true;
    stream_ = std::make_unique<uv::TcpStream>(owner_.loop_);
    if (cfg_.type == config::HealthType::Http)
      response_.emplace(cfg_.expectStatusMin, cfg_.expectStatusMax, cfg_.expectBody);
    deadline_.start(cfg_.timeout, [this] {
      finish(false, "timeout after " + std::to_string(toMillis(cfg_.timeout)) + " ms");
    });
    int rc = stream_->connect(address_, [this](int status) { onConnect(status); });
    if (rc != 0) finish(false, "connect: " + uv::errorText(rc));
  }

  void onConnect(int status) {
    if (status != 0) return finish(false, "connect: " + uv::errorText(status));
    if (cfg_.type == config::HealthType::Tcp) return finish(true, "connected");
    stream_->setNoDelay(true);
    stream_->write(request_, [this](int st) {
      if (st != 0 && active_) finish(false, "write: " + uv::errorText(st));
    });
    stream_->startRead(
        [this](std::span<const char> d) {
          onData({d.data(), d.size()});
        },
        [this](int st) { onEnd(st); });
  }

  void onData(std::string_view d) {
    if (!active_) return;
    auto v = response_->feed(d);
    if (v != HttpCheckResponse::Verdict::NeedMore)
      finish(v == HttpCheckResponse::Verdict::Pass, response_->detail());
  }

  void onEnd(int status) {
    if (!active_) return;
    if (status != UV_EOF) return finish(false, "read: " + uv::errorText(status));
    auto v = response_->onEof();
    finish(v == HttpCheckResponse::Verdict::Pass, response_->detail());
  }

  void finish(bool ok, std::string detail) {
    if (!active_) return;
    active_ = false;
    deadline_.stop();
    stream_.reset();  // closes the connection (safe from inside its callbacks)
    response_.reset();
    const TimePoint now = owner_.loop_.now();
    CheckResult r{ok, std::move(detail), now - started_};
    // Next check one jittered interval after this one started (not after it ended), so
    // slow answers do not stretch the cadence; never sooner than now.
    schedule(started_ + owner_.jittered(cfg_.interval) - now);
    if (!ok) {
      HALB_LOG(Debug, "health") << name_ << ": check failed: " << r.detail;
    }
    owner_.onResult_(id_, r);  // last: may not touch `this` after
  }

  HealthChecker& owner_;
  uint64_t id_;
  std::string name_;
  SocketAddress address_;
  config::HealthCheck cfg_;
  std::string request_;
  uv::Timer timer_;     // next attempt
  uv::Timer deadline_;  // this attempt's timeout
  std::unique_ptr<uv::TcpStream> stream_;
  std::optional<HttpCheckResponse> response_;
  TimePoint started_{};
  bool active_ = false;

  friend class HealthChecker;
};

// ------------------------------------------------------------------------ checker

HealthChecker::HealthChecker(uv::Loop& loop, OnResult onResult, uint64_t seed)
    : loop_(loop), onResult_(std::move(onResult)), rng_(seed) {}

HealthChecker::~HealthChecker() = default;

Duration HealthChecker::jittered(Duration interval) {
  // ±10%, uniform.
  rng_ = mix64(rng_ + 0x9e3779b97f4a7c15ULL);
  double u = static_cast<double>(rng_ >> 11) * 0x1p-53 * 0.2 - 0.1;
  return interval + std::chrono::duration_cast<Duration>(interval * u);
}

void HealthChecker::configure(const config::Config& config) {
  std::map<uint64_t, std::unique_ptr<Check>> next;
  for (const auto& b : config.backends) {
    if (b.health.type == config::HealthType::None) continue;
    for (const auto& s : b.servers) {
      auto it = checks_.find(s.id);
      if (it != checks_.end() && it->second->same(s.address, b.health)) {
        next.emplace(s.id, std::move(it->second));
        continue;
      }
      auto c = std::make_unique<Check>(*this, s.id, b.name + "/" + s.name, s.address, b.health);
      // First check soon and spread: at boot, servers are Unknown (counted up) until then.
      rng_ = mix64(rng_ + s.id);
      c->schedule(
          std::chrono::duration_cast<Duration>(std::min(kFirstCheckSpread, b.health.interval) *
                                               (static_cast<double>(rng_ >> 11) * 0x1p-53)));
      next.emplace(s.id, std::move(c));
    }
  }
  checks_ = std::move(next);  // what is left in the old map stops here
}

}  // namespace halb::balancer
