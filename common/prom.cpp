#include "common/prom.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace halb {
namespace {

void appendValue(std::string& out, double v) {
  if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
    return;
  }
  char buf[32];
  if (v == std::floor(v) && std::fabs(v) < 1e15)
    std::snprintf(buf, sizeof buf, "%.0f", v);
  else
    std::snprintf(buf, sizeof buf, "%.6g", v);
  out += buf;
}

void appendLabelValue(std::string& out, std::string_view v) {
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
}

constexpr double kLatencyBuckets[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                      0.025,  0.05,    0.1,    0.25,  0.5,    1,     2.5, 5, 10};

}  // namespace

void PromWriter::family(std::string_view name, std::string_view type, std::string_view help) {
  out_ += "# HELP ";
  out_ += name;
  out_ += ' ';
  out_ += help;
  out_ += "\n# TYPE ";
  out_ += name;
  out_ += ' ';
  out_ += type;
  out_ += '\n';
}

void PromWriter::sample(std::string_view name, std::initializer_list<Label> labels, double value) {
  sample(name, std::span<const Label>(labels.begin(), labels.size()), value);
}

void PromWriter::sample(std::string_view name, std::span<const Label> labels, double value) {
  out_ += name;
  if (!labels.empty()) {
    out_ += '{';
    bool first = true;
    for (const auto& [k, v] : labels) {
      if (!first) out_ += ',';
      first = false;
      out_ += k;
      out_ += "=\"";
      appendLabelValue(out_, v);
      out_ += '"';
    }
    out_ += '}';
  }
  out_ += ' ';
  appendValue(out_, value);
  out_ += '\n';
}

std::span<const double> defaultLatencyBuckets() { return kLatencyBuckets; }

Histogram::Histogram(std::span<const double> bounds)
    : bounds_(bounds.begin(), bounds.end()), counts_(bounds.size() + 1) {}

void Histogram::observe(double value) {
  auto it = std::lower_bound(bounds_.begin(), bounds_.end(), value);
  counts_[static_cast<size_t>(it - bounds_.begin())].fetch_add(1, std::memory_order_relaxed);
  sumMicros_.fetch_add(static_cast<uint64_t>(std::max(0.0, value) * 1e6), std::memory_order_relaxed);
}

void Histogram::addTo(std::vector<uint64_t>& totals, double& sum) const {
  totals.resize(counts_.size());
  for (size_t i = 0; i < counts_.size(); ++i) totals[i] += counts_[i].load(std::memory_order_relaxed);
  sum += static_cast<double>(sumMicros_.load(std::memory_order_relaxed)) / 1e6;
}

double Histogram::quantile(std::span<const double> bounds, const std::vector<uint64_t>& counts, double q) {
  uint64_t total = 0;
  for (uint64_t c : counts) total += c;
  if (total == 0) return 0;
  double rank = q * static_cast<double>(total);
  uint64_t seen = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    if (static_cast<double>(seen + counts[i]) >= rank && counts[i] > 0) {
      double lo = i == 0 ? 0 : bounds[i - 1];
      double hi = i < bounds.size() ? bounds[i] : bounds.back();
      double frac = (rank - static_cast<double>(seen)) / static_cast<double>(counts[i]);
      return lo + (hi - lo) * std::clamp(frac, 0.0, 1.0);
    }
    seen += counts[i];
  }
  return bounds.back();
}

void Histogram::write(PromWriter& w, std::string_view name, std::initializer_list<Label> labels,
                      std::span<const double> bounds, const std::vector<uint64_t>& counts, double sum) {
  std::string bucket = std::string(name) + "_bucket";
  std::vector<Label> ls(labels.begin(), labels.end());
  ls.emplace_back("le", "");
  uint64_t cumulative = 0;
  char le[32];
  for (size_t i = 0; i < counts.size(); ++i) {
    cumulative += counts[i];
    if (i < bounds.size())
      std::snprintf(le, sizeof le, "%g", bounds[i]);
    else
      std::snprintf(le, sizeof le, "+Inf");
    ls.back().second = le;
    w.sample(bucket, ls, static_cast<double>(cumulative));
  }
  ls.pop_back();
  w.sample(std::string(name) + "_sum", ls, sum);
  w.sample(std::string(name) + "_count", ls, static_cast<double>(cumulative));
}

}  // namespace halb
