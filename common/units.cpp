#include "common/units.h"

#include <cctype>
#include <charconv>
#include <limits>

namespace halb {
namespace {

struct Unit {
  std::string_view name;
  int64_t nanos;
};
constexpr Unit kDurationUnits[] = {
    {"h", 3'600'000'000'000}, {"m", 60'000'000'000}, {"s", 1'000'000'000},
    {"ms", 1'000'000},        {"us", 1'000},         {"ns", 1},
};

}  // namespace

Result<Duration> parseDuration(std::string_view text) {
  std::string quoted = "'" + std::string(text) + "'";
  if (text.empty()) return Error{"empty duration"};
  int64_t total = 0;
  int lastRank = -1;
  std::string_view rest = text;
  while (!rest.empty()) {
    uint64_t n = 0;
    auto [p, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), n);
    if (ec == std::errc::result_out_of_range) return Error{"duration " + quoted + " is too large"};
    if (ec != std::errc())
      return Error{"invalid duration " + quoted + " (expected e.g. 150ms, 2s, 1m30s)"};
    size_t consumed = static_cast<size_t>(p - rest.data());
    size_t unitLen = 0;
    while (consumed + unitLen < rest.size() && std::isalpha(static_cast<unsigned char>(rest[consumed + unitLen])))
      ++unitLen;
    std::string_view unit = rest.substr(consumed, unitLen);
    if (unit.empty())
      return Error{"duration " + quoted + " needs a unit (ns, us, ms, s, m, h)"};
    int rank = -1;
    for (int i = 0; i < static_cast<int>(std::size(kDurationUnits)); ++i)
      if (kDurationUnits[i].name == unit) rank = i;
    if (rank < 0)
      return Error{"unknown unit '" + std::string(unit) + "' in duration " + quoted +
                   " (use ns, us, ms, s, m, h)"};
    if (rank <= lastRank)
      return Error{"duration " + quoted + ": units must go from largest to smallest"};
    lastRank = rank;
    int64_t scale = kDurationUnits[rank].nanos;
    if (n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max() / scale) ||
        total > std::numeric_limits<int64_t>::max() - static_cast<int64_t>(n) * scale)
      return Error{"duration " + quoted + " is too large"};
    total += static_cast<int64_t>(n) * scale;
    rest = rest.substr(consumed + unitLen);
  }
  return Duration(total);
}

Result<uint64_t> parseSize(std::string_view text) {
  std::string quoted = "'" + std::string(text) + "'";
  uint64_t n = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (text.empty() || ec != std::errc())
    return Error{"invalid size " + quoted + " (expected e.g. 16KiB, 1MiB, 4096)"};
  std::string_view unit = text.substr(static_cast<size_t>(p - text.data()));
  uint64_t scale = 0;
  if (unit.empty() || unit == "B") scale = 1;
  else if (unit == "KiB") scale = 1ULL << 10;
  else if (unit == "MiB") scale = 1ULL << 20;
  else if (unit == "GiB") scale = 1ULL << 30;
  else if (unit == "KB") scale = 1000;
  else if (unit == "MB") scale = 1000'000;
  else if (unit == "GB") scale = 1000'000'000;
  else
    return Error{"unknown unit '" + std::string(unit) + "' in size " + quoted +
                 " (use B, KiB, MiB, GiB, KB, MB, GB)"};
  if (n > std::numeric_limits<uint64_t>::max() / scale) return Error{"size " + quoted + " is too large"};
  return n * scale;
}

std::string formatDuration(Duration d) {
  int64_t ns = d.count();
  if (ns == 0) return "0s";
  std::string out;
  if (ns < 0) {
    out = "-";
    ns = -ns;
  }
  // Sub-second values read best in one unit ("150ms"); larger ones as h/m/s components.
  if (ns < 1'000'000'000 || ns % 1'000'000'000 != 0) {
    for (const Unit& u : {kDurationUnits[3], kDurationUnits[4], kDurationUnits[5]}) {
      if (ns % u.nanos == 0) return out + std::to_string(ns / u.nanos) + std::string(u.name);
    }
  }
  for (const Unit& u : {kDurationUnits[0], kDurationUnits[1], kDurationUnits[2]}) {
    if (ns >= u.nanos) {
      out += std::to_string(ns / u.nanos) + std::string(u.name);
      ns %= u.nanos;
    }
  }
  return out;
}

std::string formatSize(uint64_t bytes) {
  if (bytes != 0 && bytes % (1ULL << 30) == 0) return std::to_string(bytes >> 30) + "GiB";
  if (bytes != 0 && bytes % (1ULL << 20) == 0) return std::to_string(bytes >> 20) + "MiB";
  if (bytes != 0 && bytes % (1ULL << 10) == 0) return std::to_string(bytes >> 10) + "KiB";
  return std::to_string(bytes) + "B";
}

}  // namespace halb
