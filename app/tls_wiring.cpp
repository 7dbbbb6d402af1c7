#include "app/tls_wiring.h"

#include "app/node.h"
#include "common/log.h"
#include "statesync/service.h"

namespace halb::app {

namespace {
constexpr const char* kLog = "tls";
// Rotation checks at least this often, so a changed ticket_rotation or a clock jump of the
// loop is noticed without waiting for a far-off deadline.
constexpr Duration kMaxCheck = std::chrono::minutes(1);
}  // namespace

TlsNode::~TlsNode() = default;

std::unique_ptr<TlsNode> TlsNode::start(Node& node,
                                        std::function<void(balancer::TlsContextsPtr)> apply,
                                        std::string& error) {
  const config::Config& cfg = *node.config();
  std::unique_ptr<TlsNode> t(new TlsNode(node));
  t->apply_ = std::move(apply);
  t->keys_ = std::make_shared<balancer::TicketKeys>(cfg.tls.tickets.rotation,
                                                    cfg.tls.tickets.sessionLifetime);
  t->keys_->tick(node.loop().now());
  auto built = balancer::buildTlsContexts(cfg, t->keys_);
  if (!built.ok()) {
    error = built.error();
    return nullptr;
  }
  t->contexts_ = *built;
  t->timer_ = std::make_unique<uv::Timer>(node.loop());
  t->schedule();

  TlsNode* self = t.get();
  node.addMetrics([self](PromWriter& w) {
    const balancer::TicketKeys& k = *self->keys_;
    w.family("halb_tls_ticket_keys", "gauge", "TLS session-ticket keys held (sealing and opening)");
    w.sample("halb_tls_ticket_keys", {}, static_cast<double>(k.size()));
    w.family("halb_tls_tickets_total", "counter", "Session tickets by what happened to them");
    w.sample("halb_tls_tickets_total", {{"result", "sealed"}},
             static_cast<double>(k.sealed.load()));
    w.sample("halb_tls_tickets_total", {{"result", "opened"}},
             static_cast<double>(k.opened.load()));
    w.sample("halb_tls_tickets_total", {{"result", "renewed"}},
             static_cast<double>(k.renewed.load()));
    w.sample("halb_tls_tickets_total", {{"result", "unknown_key"}},
             static_cast<double>(k.unknownKey.load()));
    w.family("halb_tls_ticket_key_rotations_total", "counter", "Ticket keys made by this node");
    w.sample("halb_tls_ticket_key_rotations_total", {}, static_cast<double>(self->rotations_));
    w.family("halb_tls_ticket_key_merges_total", "counter",
             "Key sets from the peer that changed this node's keys");
    w.sample("halb_tls_ticket_key_merges_total", {}, static_cast<double>(self->peerMerges_));
    w.family("halb_tls_reload_failures_total", "counter",
             "Reloads whose certificates could not be used (the previous ones stayed)");
    w.sample("halb_tls_reload_failures_total", {}, static_cast<double>(self->reloadFailures_));
  });
  node.onReload([self](const config::ConfigPtr& next) {
    self->keys_->setTimes(next->tls.tickets.rotation, next->tls.tickets.sessionLifetime,
                          self->node_.loop().now());
    self->schedule();
    auto built = balancer::buildTlsContexts(*next, self->keys_);
    if (!built.ok()) {
      // The loader checked the files moments ago; one changed since. Keep serving.
      ++self->reloadFailures_;
      HALB_LOG(Error, kLog) << built.error() << "; the previous certificates stay in use";
      return;
    }
    self->contexts_ = *built;
    if (self->apply_) self->apply_(self->contexts_);
  });
  node.onStop([self](std::function<void()> done) {
    self->timer_->stop();
    done();
  });
  return t;
}

void TlsNode::schedule() {
  TimePoint now = node_.loop().now();
  Duration wait = std::min<Duration>(
      std::max<Duration>(keys_->nextEvent(now) - now, Duration::zero()), kMaxCheck);
  timer_->start(wait, [this] { rotate(); });
}

void TlsNode::rotate() {
  if (keys_->tick(node_.loop().now())) {
    ++rotations_;
    HALB_LOG(Info, kLog) << "new session-ticket key (" << keys_->size() << " held)";
    publishToPeer();
  }
  schedule();
}

void TlsNode::attach(statesync::Service* service) {
  statesync_ = service;
  publishToPeer();
}

void TlsNode::publishToPeer() {
  if (statesync_) statesync_->setTicketKeys(keys_->toWire(node_.loop().now()));
}

void TlsNode::onPeerKeys(std::vector<repl::TicketKey> keys) {
  if (!keys_->merge(keys, node_.loop().now())) return;
  ++peerMerges_;
  HALB_LOG(Debug, kLog) << "merged the peer's session-ticket keys (" << keys_->size() << " held)";
  // The peer learns what it lacked (our own keys); it stops once nothing is new to it.
  publishToPeer();
  schedule();
}

}  // namespace halb::app
