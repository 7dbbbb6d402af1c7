#include "common/log.h"

#include "common/json.h"

#include <unistd.h>

#include <chrono>
#include <ctime>
#include <mutex>

namespace halb::log {
namespace {

std::atomic<int> gLevel{static_cast<int>(Level::Info)};
std::atomic<Format> gFormat{Format::Text};
std::mutex gSinkMutex;
Sink gSink;  // guarded by gSinkMutex

std::string timestamp() {
  auto now = std::chrono::system_clock::now();
  auto secs = std::chrono::system_clock::to_time_t(now);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%03dZ", static_cast<int>(ms));
  return buf;
}

}  // namespace

const char* toString(Level l) {
  switch (l) {
    case Level::Debug: return "debug";
    case Level::Info: return "info";
    case Level::Warn: return "warn";
    case Level::Error: return "error";
  }
  return "?";
}

std::optional<Level> parseLevel(std::string_view s) {
  for (Level l : {Level::Debug, Level::Info, Level::Warn, Level::Error})
    if (s == toString(l)) return l;
  return std::nullopt;
}

const char* toString(Format f) { return f == Format::Json ? "json" : "text"; }

std::optional<Format> parseFormat(std::string_view s) {
  if (s == "text") return Format::Text;
  if (s == "json") return Format::Json;
  return std::nullopt;
}

void configure(Level min, Format format) {
  gLevel.store(static_cast<int>(min), std::memory_order_relaxed);
  gFormat.store(format, std::memory_order_relaxed);
}

bool enabled(Level l) { return static_cast<int>(l) >= gLevel.load(std::memory_order_relaxed); }

void setSink(Sink sink) {
  std::lock_guard lock(gSinkMutex);
  gSink = std::move(sink);
}

void write(Level l, std::string_view component, std::string_view message) {
  {
    std::lock_guard lock(gSinkMutex);
    if (gSink) {
      gSink(l, component, message);
      return;
    }
  }
  std::string line;
  line.reserve(64 + message.size());
  if (gFormat.load(std::memory_order_relaxed) == Format::Json) {
    line += "{\"ts\":\"" + timestamp() + "\",\"level\":\"" + toString(l) + "\",\"component\":";
    JsonWriter::escape(line, component);
    line += ",\"msg\":";
    JsonWriter::escape(line, message);
    line += "}\n";
  } else {
    line += timestamp();
    line += ' ';
    line += toString(l);
    line += ' ';
    line += component;
    line += ": ";
    line += message;
    line += '\n';
  }
  // One write per line: atomic for pipes up to PIPE_BUF, and never interleaved mid-line.
  size_t off = 0;
  while (off < line.size()) {
    ssize_t n = ::write(STDERR_FILENO, line.data() + off, line.size() - off);
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
}

long long RateLimiter::admit() {
  int64_t now = SteadyClock::now().time_since_epoch().count();
  int64_t next = next_.load(std::memory_order_relaxed);
  if (now >= next && next_.compare_exchange_strong(next, now + interval_, std::memory_order_relaxed))
    return suppressed_.exchange(0, std::memory_order_relaxed);
  suppressed_.fetch_add(1, std::memory_order_relaxed);
  return -1;
}

}  // namespace halb::log
