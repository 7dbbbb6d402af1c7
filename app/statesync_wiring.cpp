#include "app/statesync_wiring.h"

#include <algorithm>
#include <chrono>

#include "app/node.h"
#include "common/log.h"

namespace halb::app {

// Stands in for the balancer's tables until they are wired: nothing to send, nothing kept.
struct StateSyncNode::EmptyTables : repl::TableSource, repl::TableSink {
  void forEachStick(const std::function<void(const repl::StickEntry&)>&) const override {}
  void forEachConn(const std::function<void(const repl::ConnEntry&)>&) const override {}
  bool applyStick(const repl::StickEntry&, TimePoint) override { return false; }
  bool removeStick(uint64_t, const std::string&, repl::Version) override { return false; }
};

StateSyncNode::~StateSyncNode() = default;

std::unique_ptr<StateSyncNode> StateSyncNode::start(Node& node, StateSyncPorts ports,
                                                    std::string& error) {
  const config::Config& cfg = *node.config();
  if (!cfg.statesync.enabled) return nullptr;
  std::unique_ptr<StateSyncNode> s(new StateSyncNode());
  s->ports_ = std::move(ports);
  if (!s->ports_.source || !s->ports_.sink) {
    s->empty_ = std::make_unique<EmptyTables>();
    if (!s->ports_.source) s->ports_.source = s->empty_.get();
    if (!s->ports_.sink) s->ports_.sink = s->empty_.get();
  }
  StateSyncNode* self = s.get();
  statesync::Hooks hooks;
  hooks.onPeerUp = [self] {
    if (self->ports_.onPeerUp) self->ports_.onPeerUp();
  };
  hooks.onPeerLost = [self](std::string_view why) {
    if (self->ports_.onPeerLost) self->ports_.onPeerLost(why);
  };
  // The preemption gate. Its bound (sync_wait, counted from when VRRP first wants to preempt)
  // belongs to vrrp::Machine; this only says when the tables are complete.
  hooks.onSyncComplete = [self] {
    if (self->ports_.setSyncReady) self->ports_.setSyncReady(true);
  };
  s->service_ = std::make_unique<statesync::Service>(
      node.loop(), cfg, *s->ports_.source, *s->ports_.sink, s->ports_.queues, std::move(hooks));
  if (!s->service_->start(error)) return nullptr;

  node.addMetrics([self](PromWriter& w) { self->service_->writeMetrics(w); });
  node.addStatus("statesync", [self](JsonWriter& j) { self->service_->writeStatus(j); });
  node.onStop([self](std::function<void()> done) {
    // A goodbye, so the peer sees a shutdown rather than a death; the close itself completes
    // while the loop winds down.
    self->service_->stop();
    done();
  });
  node.onReload([self](const config::ConfigPtr& next) {
    // The peer address may change at run time; everything else needs a restart.
    self->service_->setPeer(next->statesync.peer);
  });
  return s;
}

StateSyncNode::Takeover StateSyncNode::becameMaster() {
  auto unixNow = std::chrono::duration_cast<std::chrono::seconds>(
                     std::chrono::system_clock::now().time_since_epoch())
                     .count();
  uint32_t seen = service_->highestEpochSeen();
  if (ports_.maxEpochSeen) seen = std::max(seen, ports_.maxEpochSeen());
  epoch_ = statesync::nextEpoch(std::max(epoch_, service_->session().epoch()), seen, unixNow);
  service_->setEpoch(epoch_);
  Takeover t;
  t.epoch = epoch_;
  t.connections = service_->takeConnections();
  HALB_LOG(Info, "statesync") << "became master: epoch " << epoch_ << ", " << t.connections.size()
                              << " replicated connections to take over";
  return t;
}

}  // namespace halb::app
