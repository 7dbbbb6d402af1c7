// Cost of one Selector::select per algorithm and pool size, and of building a Maglev table.
// Run: build-rel/bench/bench_select
#include <benchmark/benchmark.h>

#include "balancer/maglev.h"
#include "balancer/pool.h"
#include "common/crypto.h"

namespace halb::balancer {
namespace {

struct Pool {
  config::Backend cfg;
  BackendView view;
  Pool(config::Algorithm a, size_t n, bool weighted) {
    cfg.name = "bench";
    cfg.id = stableId(cfg.name);
    cfg.algorithm = a;
    for (size_t i = 0; i < n; ++i) {
      config::Server s;
      s.name = "s" + std::to_string(i);
      s.id = stableId("bench/" + s.name);
      s.weight = weighted ? static_cast<uint32_t>(50 + (i * 37) % 150) : 100;
      cfg.servers.push_back(s);
    }
    view.config = &cfg;
    view.id = cfg.id;
    for (const auto& s : cfg.servers) {
      ServerView v;
      v.config = &s;
      v.id = s.id;
      v.weight = s.weight;
      v.healthy = true;
      v.stats = std::make_shared<ServerStats>();
      v.stats->active = static_cast<int64_t>(s.id % 7);
      view.servers.push_back(v);
    }
    buildAlgorithmState(view);
  }
};

void selectBench(benchmark::State& state, config::Algorithm a) {
  Pool pool(a, static_cast<size_t>(state.range(0)), state.range(1) != 0);
  auto sel = makeSelector(a, 1);
  std::vector<IpAddress> clients;
  for (uint32_t i = 0; i < 1024; ++i)
    clients.push_back(IpAddress::fromV4(0x0a000000 + i * 2654435761u));
  size_t i = 0;
  for (auto _ : state) {
    PickContext ctx;
    ctx.clientAddress = &clients[i++ & 1023];
    benchmark::DoNotOptimize(sel->select(pool.view, ctx));
  }
}

#define HALB_SELECT_BENCH(name, algo)        \
  void name(benchmark::State& s) {           \
    selectBench(s, config::Algorithm::algo); \
  }                                          \
  BENCHMARK(name)->ArgNames({"servers", "weighted"})->ArgsProduct({{4, 16, 64}, {0, 1}})

HALB_SELECT_BENCH(RoundRobin, RoundRobin);
HALB_SELECT_BENCH(WeightedRoundRobin, WeightedRoundRobin);
HALB_SELECT_BENCH(LeastConn, LeastConn);
HALB_SELECT_BENCH(P2C, P2C);
HALB_SELECT_BENCH(Random, Random);
HALB_SELECT_BENCH(SourceHash, SourceHash);
HALB_SELECT_BENCH(Maglev, Maglev);

void MaglevBuild(benchmark::State& state) {
  std::vector<MaglevMember> members;
  for (int64_t i = 0; i < state.range(0); ++i)
    members.push_back({stableId("s" + std::to_string(i)), 100, static_cast<uint16_t>(i)});
  for (auto _ : state) benchmark::DoNotOptimize(buildMaglevTable(members, members.size()));
}
BENCHMARK(MaglevBuild)->Arg(10)->Arg(100)->Arg(1000)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace halb::balancer

BENCHMARK_MAIN();
