#pragma once
// Durations ("150ms", "2s", "1m30s") and sizes ("16KiB") as operators write them.
#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.h"
#include "common/time.h"

namespace halb {

// Units: ns, us, ms, s, m, h; components may be chained largest first ("1h30m", "2s500ms").
// A bare number is rejected: "5" could mean seconds or milliseconds.
Result<Duration> parseDuration(std::string_view text);
// Units: B, KiB, MiB, GiB (binary) and KB, MB, GB (decimal); a bare number means bytes.
Result<uint64_t> parseSize(std::string_view text);

// Shortest exact form: 1500ms -> "1500ms", 2000ms -> "2s", 90s -> "1m30s".
std::string formatDuration(Duration d);
std::string formatSize(uint64_t bytes);

}  // namespace halb
