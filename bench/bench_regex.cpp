// Why the router uses RE2 and not std::regex (balancer/router.cpp): the same route patterns
// over typical and hostile request paths.
#include <benchmark/benchmark.h>
#include <re2/re2.h>

#include <regex>
#include <string>

namespace {

const char* kApi = "^/api/v[0-9]+/users/[0-9]+(/orders)?$";
const char* kSuffix = "\\.(css|js|png|jpg)$";

void StdRegexApi(benchmark::State& s) {
  std::regex re(kApi, std::regex::ECMAScript | std::regex::optimize);
  std::string hit = "/api/v2/users/123456/orders", miss = "/static/css/site.css";
  for (auto _ : s) {
    benchmark::DoNotOptimize(std::regex_search(hit, re));
    benchmark::DoNotOptimize(std::regex_search(miss, re));
  }
}
void Re2Api(benchmark::State& s) {
  RE2 re(kApi);
  std::string hit = "/api/v2/users/123456/orders", miss = "/static/css/site.css";
  for (auto _ : s) {
    benchmark::DoNotOptimize(RE2::PartialMatch(hit, re));
    benchmark::DoNotOptimize(RE2::PartialMatch(miss, re));
  }
}
void StdRegexSuffix(benchmark::State& s) {
  std::regex re(kSuffix, std::regex::ECMAScript | std::regex::optimize);
  std::string p = "/assets/" + std::string(200, 'a') + "/x.js";
  for (auto _ : s) benchmark::DoNotOptimize(std::regex_search(p, re));
}
void Re2Suffix(benchmark::State& s) {
  RE2 re(kSuffix);
  std::string p = "/assets/" + std::string(200, 'a') + "/x.js";
  for (auto _ : s) benchmark::DoNotOptimize(RE2::PartialMatch(p, re));
}
// Long input: std::regex's recursive executor is linear here too but ~30x slower, and past
// ~50 KB it overflows the stack (not run here: it crashes the process).
void StdRegexLong(benchmark::State& s) {
  std::regex re("^/(a|b)*$");
  std::string p = "/" + std::string(static_cast<size_t>(s.range(0)), 'a');
  for (auto _ : s) benchmark::DoNotOptimize(std::regex_search(p, re));
}
void Re2Long(benchmark::State& s) {
  RE2 re("^/(a|b)*$");
  std::string p = "/" + std::string(static_cast<size_t>(s.range(0)), 'a');
  for (auto _ : s) benchmark::DoNotOptimize(RE2::PartialMatch(p, re));
}

BENCHMARK(StdRegexApi);
BENCHMARK(Re2Api);
BENCHMARK(StdRegexSuffix);
BENCHMARK(Re2Suffix);
BENCHMARK(StdRegexLong)->Arg(1000)->Arg(8000);
BENCHMARK(Re2Long)->Arg(1000)->Arg(8000)->Arg(1 << 20);

}  // namespace

BENCHMARK_MAIN();
