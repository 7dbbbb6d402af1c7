#pragma once
// Process-wide logging: levels, plain text or JSON lines, one write(2) per line so lines
// from several threads never interleave. Hot error paths use HALB_LOG_EVERY to rate-limit.
//
//   HALB_LOG(Info, "vrrp") << "became master, vrid=" << vrid;
//   HALB_LOG_EVERY(Warn, "proxy", std::chrono::seconds(1)) << "accept failed: " << ec.message();
#include <atomic>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>

#include "common/time.h"

namespace halb::log {

enum class Level { Debug = 0, Info = 1, Warn = 2, Error = 3 };
enum class Format { Text, Json };

const char* toString(Level l);
std::optional<Level> parseLevel(std::string_view s);
const char* toString(Format f);
std::optional<Format> parseFormat(std::string_view s);

void configure(Level min, Format format);
bool enabled(Level l);
void write(Level l, std::string_view component, std::string_view message);

// Tests capture log lines instead of printing them; pass nullptr to restore stderr.
using Sink = std::function<void(Level, std::string_view component, std::string_view message)>;
void setSink(Sink sink);

class Line {
 public:
  Line(Level l, std::string_view component) : level_(l), component_(component) {}
  Line(const Line&) = delete;
  Line& operator=(const Line&) = delete;
  ~Line() { write(level_, component_, out_.str()); }
  template <class T>
  Line& operator<<(const T& v) {
    out_ << v;
    return *this;
  }

 private:
  Level level_;
  std::string_view component_;
  std::ostringstream out_;
};

// Lets one line through per interval and counts what it held back, so a flood of identical
// errors costs a counter increment each instead of a write.
class RateLimiter {
 public:
  explicit RateLimiter(Duration interval) : interval_(interval.count()) {}
  // Returns the number of suppressed lines to report (>= 0) when this one may pass, or -1.
  long long admit();

 private:
  int64_t interval_;
  std::atomic<int64_t> next_{0};
  std::atomic<long long> suppressed_{0};
};

}  // namespace halb::log

#define HALB_LOG(level, component)                            \
  if (!::halb::log::enabled(::halb::log::Level::level)) {     \
  } else                                                      \
    ::halb::log::Line(::halb::log::Level::level, component)

#define HALB_LOG_EVERY(level, component, interval)                                       \
  if (static ::halb::log::RateLimiter halbLimiter_{interval};                            \
      !::halb::log::enabled(::halb::log::Level::level)) {                                \
  } else if (long long halbSuppressed_ = halbLimiter_.admit(); halbSuppressed_ < 0) {    \
  } else                                                                                 \
    ::halb::log::Line(::halb::log::Level::level, component)                              \
        << (halbSuppressed_ > 0 ? "(" + std::to_string(halbSuppressed_) + " similar suppressed) " : std::string())
