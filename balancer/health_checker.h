#pragma once
// Active health checks on the control thread's libuv loop: TCP connect checks and HTTP GET
// checks (expected status range, optional body substring, Host header), one schedule per
// server with its own interval (spread by ±10% jitter so checks of many servers do not
// synchronise), each attempt bounded by the timeout. Results go to a callback, normally
// PoolManager::onCheckResult, where the pure rise/fall logic lives.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "balancer/health.h"
#include "common/uv.h"
#include "config/config.h"

namespace halb::balancer {

// The HTTP side of a check, pure: feed it the response bytes as they arrive; it decides as
// soon as it can (a bad status needs no body; a found substring needs no more body).
class HttpCheckResponse {
 public:
  enum class Verdict { NeedMore, Pass, Fail };
  static constexpr size_t kMaxHead = 16 * 1024;
  static constexpr size_t kMaxBody = 64 * 1024;  // expect_body is searched in this much

  HttpCheckResponse(uint32_t statusMin, uint32_t statusMax, std::string expectBody)
      : min_(statusMin), max_(statusMax), expect_(std::move(expectBody)) {}

  Verdict feed(std::string_view data);
  Verdict onEof();  // the server closed the connection
  const std::string& detail() const { return detail_; }
  int status() const { return status_; }

 private:
  Verdict parseHead();
  Verdict parseBody();
  Verdict fail(std::string d) {
    detail_ = std::move(d);
    return Verdict::Fail;
  }
  Verdict pass();

  uint32_t min_, max_;
  std::string expect_;
  std::string raw_;   // bytes not consumed yet
  std::string body_;  // decoded body so far (up to kMaxBody)
  bool headDone_ = false;
  int status_ = 0;
  enum class Framing { Length, Chunked, Close } framing_ = Framing::Close;
  uint64_t remaining_ = 0;  // Length: body bytes left; Chunked: bytes left in this chunk
  bool chunkData_ = false;  // Chunked: inside chunk data (else at a size line)
  std::string detail_;
};

class HealthChecker {
 public:
  using OnResult = std::function<void(uint64_t serverId, const CheckResult& result)>;

  // `seed` spreads first checks and jitter (tests pass a fixed one).
  HealthChecker(uv::Loop& loop, OnResult onResult, uint64_t seed);
  ~HealthChecker();
  HealthChecker(const HealthChecker&) = delete;
  HealthChecker& operator=(const HealthChecker&) = delete;

  // Starts checks for every server of a backend with health.type tcp or http; a server whose
  // address and check settings did not change keeps its schedule; others restart; checks
  // of removed servers stop (an attempt in flight is abandoned, its result never reported).
  // `onResult` must not call configure().
  void configure(const config::Config& config);
  size_t checks() const { return checks_.size(); }

 private:
  class Check;
  Duration jittered(Duration interval);

  uv::Loop& loop_;
  OnResult onResult_;
  uint64_t rng_;
  std::map<uint64_t, std::unique_ptr<Check>> checks_;  // by server id
};

}  // namespace halb::balancer
