// Stick-table costs: a hit (the per-request path of a sticky backend), an insert with LRU
// eviction, and hits from two threads at once (shard contention).
#include <benchmark/benchmark.h>

#include "balancer/stick_table.h"

namespace halb::balancer {
namespace {

constexpr uint64_t kBackend = 1;

std::vector<std::string> keys(size_t n) {
  std::vector<std::string> k;
  for (size_t i = 0; i < n; ++i) k.push_back("session-" + std::to_string(i * 2654435761u));
  return k;
}

StickTables& table() {
  static auto t = [] {
    auto t = makeStickTables({{kBackend, std::chrono::minutes(30), 1'000'000}});
    TimePoint now = SteadyClock::now();
    for (const auto& k : keys(100'000)) t->record(kBackend, k, 7, now, {});
    return t;
  }();
  return *t;
}

// range(0): distinct users looked up in turn (1000: hot in cache; 100000: mostly misses).
void LookupHit(benchmark::State& state) {
  auto& t = table();
  static const auto all = keys(100'000);
  const size_t n = static_cast<size_t>(state.range(0));
  const TimePoint now = SteadyClock::now();
  uint64_t changes = 0;
  StickTables::Emit emit = [&](repl::Change&&) { ++changes; };
  size_t i = static_cast<size_t>(state.thread_index()) * 7919;
  for (auto _ : state) benchmark::DoNotOptimize(t.lookup(kBackend, all[i++ % n], now, emit));
  state.counters["changes"] = static_cast<double>(changes);
}
BENCHMARK(LookupHit)->ArgName("users")->Arg(1000)->Arg(100'000)->Threads(1)->Threads(2);

void RecordWithEviction(benchmark::State& state) {
  auto t = makeStickTables({{kBackend, std::chrono::minutes(30), 10'000}});
  const auto ks = keys(100'000);
  TimePoint now = SteadyClock::now();
  StickTables::Emit emit = [](repl::Change&&) {};
  size_t i = 0;
  for (auto _ : state) t->record(kBackend, ks[i++ % ks.size()], 7, now, emit);
}
BENCHMARK(RecordWithEviction);

}  // namespace
}  // namespace halb::balancer

BENCHMARK_MAIN();
