#pragma once
// Builds backend views by hand for the algorithm tests, the way the snapshot builder would.
#include <memory>
#include <string>
#include <vector>

#include "balancer/pool.h"
#include "common/crypto.h"
#include "config/config.h"

namespace halb::balancer::testing {

// Owns the config objects the views point into.
struct FakeBackend {
  config::Backend cfg;
  BackendView view;

  FakeBackend(config::Algorithm algorithm, const std::vector<uint32_t>& weights,
              const std::string& name = "b") {
    cfg.name = name;
    cfg.id = stableId(name);
    cfg.algorithm = algorithm;
    cfg.servers.reserve(weights.size());
    for (size_t i = 0; i < weights.size(); ++i) {
      config::Server s;
      s.name = "s" + std::to_string(i);
      s.id = stableId(name + "/" + s.name);
      s.address.ip = IpAddress::fromV4(0x0a000001 + static_cast<uint32_t>(i));
      s.address.port = 80;
      s.weight = weights[i];
      cfg.servers.push_back(s);
    }
    rebuild();
  }

  // Views for every configured server, healthy, at configured weight.
  void rebuild() {
    std::vector<std::shared_ptr<ServerStats>> keep;
    for (auto& s : view.servers) keep.push_back(s.stats);
    view = BackendView{};
    view.config = &cfg;
    view.id = cfg.id;
    for (size_t i = 0; i < cfg.servers.size(); ++i) {
      ServerView v;
      v.config = &cfg.servers[i];
      v.id = cfg.servers[i].id;
      v.address = cfg.servers[i].address;
      v.weight = cfg.servers[i].weight;
      v.healthy = true;
      v.stats = i < keep.size() && keep[i] ? keep[i] : std::make_shared<ServerStats>();
      view.servers.push_back(v);
    }
    buildAlgorithmState(view);
  }

  ServerView& server(size_t i) { return view.servers[i]; }
  // After changing views by hand, rebuild the algorithm state as the builder would.
  void rebuildState() { buildAlgorithmState(view); }
  size_t indexOf(const ServerView* s) const { return static_cast<size_t>(s - view.servers.data()); }
};

}  // namespace halb::balancer::testing
