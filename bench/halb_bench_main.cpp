// Starts the data-plane engine alone from a configuration file, with every server taken as
// healthy (no health checks, no VRRP, no state sync): the benchmark driver for bench/run.sh,
// so the figures measure the proxy path and nothing else.
//
//   halb_bench -c FILE [--node NAME]     runs until SIGINT/SIGTERM
#include <signal.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "balancer/engine.h"
#include "config/loader.h"

using namespace halb;

namespace {

balancer::PoolSnapshotPtr allHealthy(const config::ConfigPtr& cfg) {
  auto snap = std::make_shared<balancer::PoolSnapshot>();
  snap->config = cfg;
  snap->generation = 1;
  for (const config::Backend& b : cfg->backends) {
    balancer::BackendView bv;
    bv.config = &b;
    bv.id = b.id;
    for (const config::Server& s : b.servers) {
      balancer::ServerView sv;
      sv.config = &s;
      sv.id = s.id;
      sv.address = s.address;
      sv.weight = s.weight;
      sv.healthy = true;
      sv.stats = std::make_shared<balancer::ServerStats>();
      bv.servers.push_back(sv);
    }
    balancer::buildAlgorithmState(bv);
    snap->backends.push_back(std::move(bv));
  }
  return snap;
}

}  // namespace

int main(int argc, char** argv) {
  std::string file, node = "bench";
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "-c") && i + 1 < argc)
      file = argv[++i];
    else if (!std::strcmp(argv[i], "--node") && i + 1 < argc)
      node = argv[++i];
  }
  if (file.empty()) {
    std::fputs("usage: halb_bench -c FILE [--node NAME]\n", stderr);
    return 2;
  }
  config::LoadOptions lo;
  lo.node = node;
  lo.checkFiles = false;
  auto res = config::loadConfigFile(file, lo);
  if (!res.ok()) {
    for (const auto& e : res.errors) std::fprintf(stderr, "%s\n", e.toString().c_str());
    return 1;
  }
  log::configure(res.config->logging.level, res.config->logging.format);
  // Block the stop signals in every thread (workers inherit the mask), then wait for one. A
  // shell without job control starts background commands with SIGINT ignored, and an ignored
  // signal never reaches sigwait: restore the default first.
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  balancer::EngineOptions o;
  o.config = res.config;
  o.pools = allHealthy(res.config);
  o.makeSelector = balancer::defaultSelectorFactory();
  o.makeRouter = balancer::defaultRouterFactory();
  auto engine = balancer::Engine::start(std::move(o));
  if (!engine.ok()) {
    std::fprintf(stderr, "halb_bench: %s\n", engine.error().c_str());
    return 1;
  }
  std::fprintf(stderr, "halb_bench: running\n");
  int sig = 0;
  sigwait(&set, &sig);
  std::unique_ptr<balancer::Engine> e = std::move(engine).value();
  e->stop(std::chrono::seconds(1));
  return 0;
}
