#pragma once
// Prometheus text exposition (format 0.0.4) and the two metric kinds the data plane keeps
// per worker: counters are relaxed atomics owned by one writer thread; histograms have fixed
// buckets. The admin endpoint sums per-worker values at scrape time.
#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace halb {

using Label = std::pair<std::string_view, std::string_view>;

class PromWriter {
 public:
  // Declares a metric family; call once before its samples. type: counter|gauge|histogram.
  void family(std::string_view name, std::string_view type, std::string_view help);
  void sample(std::string_view name, std::initializer_list<Label> labels, double value);
  void sample(std::string_view name, std::span<const Label> labels, double value);
  const std::string& text() const { return out_; }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

// Upper bounds in seconds, 100 µs .. 10 s: covers loopback proxying through slow servers.
std::span<const double> defaultLatencyBuckets();

class Histogram {
 public:
  explicit Histogram(std::span<const double> bounds = defaultLatencyBuckets());
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  void observe(double value);
  // Adds this histogram's counts into `totals` (size bounds+1) and `sum`; for merging workers.
  void addTo(std::vector<uint64_t>& totals, double& sum) const;
  std::span<const double> bounds() const { return bounds_; }
  // Quantile estimate by linear interpolation inside the bucket (for /status, benchmarks).
  static double quantile(std::span<const double> bounds, const std::vector<uint64_t>& counts, double q);
  // Writes a histogram family sample set from merged counts.
  static void write(PromWriter& w, std::string_view name, std::initializer_list<Label> labels,
                    std::span<const double> bounds, const std::vector<uint64_t>& counts, double sum);

 private:
  std::vector<double> bounds_;
  std::vector<std::atomic<uint64_t>> counts_;  // bounds_.size() + 1 (the +Inf bucket)
  std::atomic<uint64_t> sumMicros_{0};
};

}  // namespace halb
