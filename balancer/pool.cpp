#include "balancer/pool.h"

#include "balancer/algorithm_state.h"
#include "balancer/hash.h"

namespace halb::balancer {

const char* toString(AdminState s) {
  switch (s) {
    case AdminState::Ready:
      return "ready";
    case AdminState::Drain:
      return "drain";
    case AdminState::Maint:
      return "maint";
  }
  return "?";
}

const char* toString(Outcome o) {
  switch (o) {
    case Outcome::Success:
      return "success";
    case Outcome::ConnectFailure:
      return "connect_failure";
    case Outcome::Response5xx:
      return "response_5xx";
  }
  return "?";
}

const ServerView* BackendView::findServer(uint64_t serverId) const {
  for (const auto& s : servers)
    if (s.id == serverId) return &s;
  return nullptr;
}

size_t BackendView::usableCount() const {
  size_t n = 0;
  for (const auto& s : servers) n += s.acceptsNew() ? 1 : 0;
  return n;
}

const BackendView* PoolSnapshot::findBackend(uint64_t backendId) const {
  for (const auto& b : backends)
    if (b.id == backendId) return &b;
  return nullptr;
}

const BackendView* PoolSnapshot::findBackend(std::string_view name) const {
  for (const auto& b : backends)
    if (b.config && b.config->name == name) return &b;
  return nullptr;
}

void buildAlgorithmState(BackendView& backend) {
  backend.algorithmState.reset();
  if (!backend.config) return;
  auto st = std::make_shared<AlgorithmState>();
  st->algorithm = backend.config->algorithm;
  st->serverCount = backend.servers.size();
  switch (st->algorithm) {
    case config::Algorithm::Maglev: {
      std::vector<MaglevMember> members;
      members.reserve(backend.servers.size());
      for (size_t i = 0; i < backend.servers.size() && i < 0xffff; ++i) {
        const ServerView& s = backend.servers[i];
        if (s.acceptsNew()) members.push_back({s.id, s.weight, static_cast<uint16_t>(i)});
      }
      st->maglev = buildMaglevTable(members, backend.servers.size());
      break;
    }
    case config::Algorithm::P2C:
    case config::Algorithm::Random: {
      uint64_t total = 0;
      for (size_t i = 0; i < backend.servers.size(); ++i) {
        const ServerView& s = backend.servers[i];
        if (!s.acceptsNew()) continue;
        total += s.weight;
        st->index.push_back(static_cast<uint32_t>(i));
        st->cumulative.push_back(total);
      }
      break;
    }
    default:
      return;  // nothing to precompute
  }
  backend.algorithmState = std::shared_ptr<const AlgorithmState>(std::move(st));
}

uint64_t pickHash(const PickContext& ctx) {
  if (ctx.hashKey != 0) return ctx.hashKey;
  if (ctx.clientAddress) return hashAddress(*ctx.clientAddress);
  return 0;
}

}  // namespace halb::balancer
