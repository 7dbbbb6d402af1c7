#pragma once
// Time as protocol cores see it: a monotonic TimePoint that the caller passes in.
// Cores never read a clock themselves; production adapters pass SteadyClock::now() (or the
// libuv loop time), tests pass a ManualClock's value.
#include <chrono>
#include <cstdint>

namespace halb {

using SteadyClock = std::chrono::steady_clock;
using TimePoint = SteadyClock::time_point;
using Duration = std::chrono::nanoseconds;
using std::chrono::milliseconds;
using std::chrono::microseconds;
using std::chrono::seconds;

// Milliseconds since the clock's epoch, for wire formats and logs.
inline int64_t toMillis(TimePoint t) {
  return std::chrono::duration_cast<milliseconds>(t.time_since_epoch()).count();
}
inline int64_t toMillis(Duration d) { return std::chrono::duration_cast<milliseconds>(d).count(); }

// A clock that only moves when a test says so.
class ManualClock {
 public:
  explicit ManualClock(TimePoint start = TimePoint{} + std::chrono::hours(1)) : now_(start) {}
  TimePoint now() const { return now_; }
  void advance(Duration d) { now_ += d; }
  void set(TimePoint t) { now_ = t; }

 private:
  TimePoint now_;
};

}  // namespace halb
