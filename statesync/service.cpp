#include "statesync/service.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <map>

#include "common/crypto.h"
#include "common/log.h"
#include "statesync/fingerprint.h"

namespace halb::statesync {

namespace {

constexpr const char* kLog = "statesync";
// Per drain, at most this many changes per queue: a burst cannot hold the control loop.
constexpr size_t kDrainBudget = 20000;
// After this many empty polls in a row the queues are polled less often.
constexpr int kIdlePolls = 200;
constexpr Duration kIdleDrainInterval = 5ms;

}  // namespace

uint32_t nextEpoch(uint32_t current, uint32_t highestSeen, int64_t unixSeconds) {
  uint64_t e = std::max<uint64_t>(current, highestSeen) + 1;
  if (unixSeconds > 0) e = std::max<uint64_t>(e, static_cast<uint64_t>(unixSeconds));
  return static_cast<uint32_t>(std::min<uint64_t>(e, UINT32_MAX));
}

struct Service::Impl final : Transport, Events {
  struct Link {
    std::unique_ptr<uv::TcpStream> stream;
    SocketAddress remote;
    bool outbound = false;
    bool closing = false;
    bool blocked = false;  // the session stopped framing because this link's queue was full
    bool connected = false;
  };

  Impl(uv::Loop& l, const config::Config& c, repl::TableSource& src, repl::TableSink& snk,
       std::vector<repl::ChangeQueue*> qs, Hooks h, ServiceOptions o)
      : loop(l),
        nodeName(c.self.name),
        cfg(c.statesync),
        fingerprint(configFingerprint(c)),
        source(src),
        sink(snk),
        queues(std::move(qs)),
        hooks(std::move(h)),
        options(std::move(o)),
        listener(l),
        timer(l),
        drainTimer(l),
        peer(c.statesync.peer) {}

  ~Impl() override {
    drainTimer.stop();
    timer.stop();
    session.reset();
    links.clear();
  }

  TimePoint now() const { return loop.now(); }

  Settings settings(std::vector<uint8_t> key) const {
    Settings s;
    s.nodeName = nodeName;
    s.fingerprint = fingerprint;
    s.key = std::move(key);
    s.connectToPeer = peer.has_value();
    s.heartbeat = cfg.heartbeat;
    s.peerTimeout = cfg.peerTimeout;
    s.handshakeTimeout = std::max(cfg.peerTimeout, Duration(1s));
    s.reconnectMin = cfg.reconnectMin;
    s.reconnectMax = cfg.reconnectMax;
    s.queueEntries = static_cast<size_t>(cfg.queueSize) * std::max<size_t>(1, queues.size());
    s.transferTimeout = std::max(cfg.peerTimeout * 2, Duration(1s));
    if (options.tune) options.tune(s);
    return s;
  }

  bool start(std::string& error) {
    std::vector<uint8_t> key;
    if (options.key) {
      key = *options.key;
    } else {
      auto k = loadKeyFile(cfg.keyFile);
      if (!k) {
        error = "statesync: " + k.error();
        return false;
      }
      key = std::move(k).value();
    }
    Settings st = settings(std::move(key));
    highWater = st.highWatermark;
    session = std::make_unique<Session>(std::move(st), *this, source, sink, replica, *this, now());
    int rc = listener.listen(cfg.listen,
                             [this](std::unique_ptr<uv::TcpStream> s) { onAccept(std::move(s)); });
    if (rc != 0) {
      error = "statesync: cannot listen on " + cfg.listen.toString() + ": " + uv::errorText(rc);
      session.reset();
      return false;
    }
    listenAddr = listener.local();
    HALB_LOG(Info, kLog) << "listening on " << listenAddr.toString() << ", peer "
                         << (peer ? peer->toString() : std::string("(accept only)"));
    scheduleDrain(options.drainInterval);
    afterEvent();
    return true;
  }

  // ---------------------------------------------------------------- Transport

  ConnId connect() override {
    if (!peer) return 0;
    auto stream = std::make_unique<uv::TcpStream>(loop);
    stream->setNoDelay(true);
    ConnId id = nextId++;
    // Connect from the listening address when it is a specific one, so the peer (and its
    // firewall) sees the address it expects.
    std::optional<SocketAddress> local;
    if (!listenAddr.ip.isUnspecified() && listenAddr.ip.family() == peer->ip.family())
      local = SocketAddress{listenAddr.ip, 0};
    int rc = stream->connect(
        *peer, [this, id](int status) { onConnectDone(id, status); }, local ? &*local : nullptr);
    if (rc != 0) {
      HALB_LOG_EVERY(Warn, kLog, 10s)
          << "cannot connect to " << peer->toString() << ": " << uv::errorText(rc);
      return 0;
    }
    links[id] = Link{std::move(stream), *peer, true};
    return id;
  }

  void send(ConnId id, std::string frame) override {
    auto it = links.find(id);
    if (it == links.end() || it->second.closing) return;
    Link& l = it->second;
    int rc = l.stream->write(frame, [this, id](int status) { onWriteDone(id, status); });
    if (rc != 0) {
      // Reported through the read side or the session's timeout; nothing to add here.
      HALB_LOG_EVERY(Debug, kLog, 10s)
          << "write to " << l.remote.toString() << " failed: " << uv::errorText(rc);
      return;
    }
    if (session && l.stream->writeQueueBytes() >= highWatermark()) l.blocked = true;
  }

  size_t queuedBytes(ConnId id) const override {
    auto it = links.find(id);
    if (it == links.end()) return 0;
    return it->second.stream->writeQueueBytes();
  }

  void close(ConnId id) override {
    auto it = links.find(id);
    if (it == links.end() || it->second.closing) return;
    Link& l = it->second;
    if (!l.connected || !uv_is_writable(reinterpret_cast<uv_stream_t*>(l.stream->raw()))) {
      links.erase(it);  // nothing to flush (a connect in progress, or a dead stream)
      return;
    }
    l.closing = true;
    l.stream->stopRead();
    // FIN after what is queued (a CLOSE frame, usually); TCP_USER_TIMEOUT bounds the wait.
    l.stream->shutdown([this, id](int) { links.erase(id); });
  }

  // ---------------------------------------------------------------- Events

  void onPeerUp(std::string_view name) override {
    auto it = links.find(session->activeConnection());
    HALB_LOG(Info, kLog) << "peer '" << name << "' connected"
                         << (it != links.end() ? " (" + it->second.remote.toString() + ")"
                                               : std::string());
    lastLossReason.clear();
    if (hooks.onPeerUp) hooks.onPeerUp();
  }
  void onPeerLost(std::string_view reason) override {
    HALB_LOG(Warn, kLog) << "peer lost: " << reason;
    lastLossReason = std::string(reason);
    if (hooks.onPeerLost) hooks.onPeerLost(reason);
  }
  void onSyncComplete() override {
    const Metrics& m = session->metrics();
    if (m.snapshotsReceived > lastSnapshotsLogged) {
      lastSnapshotsLogged = m.snapshotsReceived;
      HALB_LOG(Info, kLog) << "in sync with peer '" << session->peerName() << "': snapshot of "
                           << m.lastSnapshotEntries << " entries in "
                           << toMillis(m.lastSnapshotDuration) << " ms";
    } else {
      HALB_LOG(Info, kLog) << "in sync with peer '" << session->peerName() << "': stream resumed";
    }
    if (hooks.onSyncComplete) hooks.onSyncComplete();
  }
  void onAuthFailure(ConnId id, std::string_view detail) override {
    HALB_LOG_EVERY(Warn, kLog, 10s)
        << "connection " << describe(id) << " failed authentication: " << detail
        << "; nothing it sent was used";
  }
  void onRefused(ConnId id, std::string_view reason) override {
    HALB_LOG_EVERY(Error, kLog, 10s) << "sync with " << describe(id) << " refused: " << reason;
  }
  void onProtocolError(ConnId id, std::string_view detail) override {
    HALB_LOG_EVERY(Warn, kLog, 10s)
        << "protocol error on connection " << describe(id) << ": " << detail;
  }
  void onResync(std::string_view reason) override {
    HALB_LOG_EVERY(Warn, kLog, 10s)
        << "replication stream broken (" << reason << "); a fresh snapshot follows";
  }
  void onTransferDone(uint64_t id, bool ok) override {
    auto it = transferCallbacks.find(id);
    if (it == transferCallbacks.end()) return;
    auto cb = std::move(it->second);
    transferCallbacks.erase(it);
    if (cb) cb(ok);
  }
  void onTransferReceived(uint64_t id, size_t n) override {
    HALB_LOG(Debug, kLog) << "transfer " << id << ": " << n << " connections received";
  }

  std::string describe(ConnId id) const {
    auto it = links.find(id);
    if (it == links.end()) return "#" + std::to_string(id);
    return (it->second.outbound ? "to " : "from ") + it->second.remote.toString();
  }

  // ---------------------------------------------------------------- libuv callbacks

  void configure(uv::TcpStream& s) {
    s.setNoDelay(true);
    unsigned idle = static_cast<unsigned>(std::max<int64_t>(1, toMillis(cfg.peerTimeout) / 1000));
    s.setKeepAlive(true, idle);
    // Unacknowledged data older than peer_timeout kills the connection: a dead peer is
    // noticed even while we are sending to it.
    int fd = s.fd();
    unsigned ms = static_cast<unsigned>(toMillis(cfg.peerTimeout));
    if (fd >= 0) ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof ms);
  }

  void startReading(ConnId id, uv::TcpStream& s) {
    s.startRead(
        [this, id](std::span<const char> data) {
          session->onData(id, std::span(reinterpret_cast<const uint8_t*>(data.data()), data.size()),
                          now());
          afterEvent();
        },
        [this, id](int status) {
          std::string why = status == UV_EOF ? "connection closed by peer"
                                             : "connection lost: " + uv::errorText(status);
          session->onClosed(id, why, now());
          links.erase(id);  // destroys the stream from inside its callback, which uv.h allows
          afterEvent();
        });
  }

  void onAccept(std::unique_ptr<uv::TcpStream> s) {
    if (!session) return;
    ConnId id = nextId++;
    configure(*s);
    SocketAddress remote = s->peer();
    Link& l = links[id] = Link{std::move(s), remote, false};
    l.connected = true;
    startReading(id, *l.stream);
    session->onAccepted(id, now());
    afterEvent();
  }

  void onConnectDone(ConnId id, int status) {
    auto it = links.find(id);
    if (it == links.end()) return;
    if (status != 0) {
      HALB_LOG_EVERY(Info, kLog, 30s)
          << "connect to " << it->second.remote.toString() << " failed: " << uv::errorText(status);
      links.erase(it);
      session->onConnectFailed(id, now());
      afterEvent();
      return;
    }
    it->second.connected = true;
    configure(*it->second.stream);
    startReading(id, *it->second.stream);
    session->onConnected(id, now());
    afterEvent();
  }

  void onWriteDone(ConnId id, int status) {
    auto it = links.find(id);
    if (it == links.end() || it->second.closing) return;
    if (status != 0) {
      session->onClosed(id, "write failed: " + uv::errorText(status), now());
      close(id);
      afterEvent();
      return;
    }
    if (it->second.blocked && it->second.stream->writeQueueBytes() < highWatermark()) {
      it->second.blocked = false;
      session->onWritable(now());
      afterEvent();
    }
  }

  size_t highWatermark() const { return highWater; }

  // Re-arms the session's timer for its next deadline.
  void afterEvent() {
    if (!session) return;
    TimePoint d = session->nextDeadline();
    if (d == TimePoint::max()) {
      timer.stop();
      return;
    }
    Duration in = std::max(Duration::zero(), d - now());
    timer.start(in, [this] {
      session->onTick(now());
      afterEvent();
    });
  }

  void scheduleDrain(Duration in) {
    drainTimer.start(in, [this] {
      size_t n = drain();
      idlePolls = n ? 0 : idlePolls + 1;
      scheduleDrain(idlePolls > kIdlePolls ? kIdleDrainInterval : options.drainInterval);
    });
  }

  size_t drain() {
    if (!session) return 0;
    TimePoint t = now();
    size_t total = 0;
    repl::Change c;
    for (repl::ChangeQueue* q : queues) {
      if (q->takeOverflow()) session->requestResync("a worker's change queue overflowed", t);
      for (size_t i = 0; i < kDrainBudget && q->pop(c); ++i, ++total) session->offer(c, t);
    }
    if (total) {
      session->onTick(t);
      afterEvent();
    }
    return total;
  }

  uv::Loop& loop;
  std::string nodeName;
  config::StateSync cfg;
  Sha256Digest fingerprint;
  repl::TableSource& source;
  repl::TableSink& sink;
  std::vector<repl::ChangeQueue*> queues;
  Hooks hooks;
  ServiceOptions options;
  ConnReplica replica;
  uv::TcpListener listener;
  uv::Timer timer;
  uv::Timer drainTimer;
  std::map<ConnId, Link> links;
  ConnId nextId = 1;
  std::optional<SocketAddress> peer;
  SocketAddress listenAddr;
  std::map<uint64_t, std::function<void(bool)>> transferCallbacks;
  std::unique_ptr<Session> session;  // after links: destroyed first (it may call close)
  std::string lastLossReason;
  uint64_t lastSnapshotsLogged = 0;
  int idlePolls = 0;
  size_t highWater = Settings{}.highWatermark;
};

// ------------------------------------------------------------------------------ Service

Service::Service(uv::Loop& loop, const config::Config& config, repl::TableSource& source,
                 repl::TableSink& sink, std::vector<repl::ChangeQueue*> queues, Hooks hooks,
                 ServiceOptions options)
    : impl_(std::make_unique<Impl>(loop, config, source, sink, std::move(queues), std::move(hooks),
                                   std::move(options))) {}

Service::~Service() = default;

bool Service::start(std::string& error) {
  return impl_->start(error);
}

void Service::stop() {
  if (!impl_->session) return;
  impl_->drainTimer.stop();
  impl_->session->shutdown(impl_->now());
  impl_->afterEvent();
}

void Service::setPeer(std::optional<SocketAddress> peer) {
  impl_->peer = peer;
  if (impl_->session) {
    impl_->session->setConnectToPeer(peer.has_value(), impl_->now());
    impl_->afterEvent();
  }
}

SocketAddress Service::listenAddress() const {
  return impl_->listenAddr;
}

void Service::setEpoch(uint32_t epoch) {
  if (impl_->session) impl_->session->setEpoch(epoch);
}
uint32_t Service::peerEpoch() const {
  return impl_->session ? impl_->session->peerEpoch() : 0;
}
uint32_t Service::highestEpochSeen() const {
  return impl_->session ? impl_->session->highestEpochSeen() : 0;
}
bool Service::peerConnected() const {
  return impl_->session && impl_->session->peerConnected();
}
bool Service::inSync() const {
  return impl_->session && impl_->session->inSync();
}
PeerState Service::state() const {
  return impl_->session ? impl_->session->state() : PeerState::Disconnected;
}

bool Service::transfer(std::vector<repl::ConnEntry> entries, std::function<void(bool)> done) {
  if (!impl_->session) return false;
  uint64_t id = impl_->session->transfer(entries, impl_->now());
  if (id == 0) return false;
  impl_->transferCallbacks[id] = std::move(done);
  impl_->afterEvent();
  return true;
}

std::vector<repl::ConnEntry> Service::takeConnections() {
  return impl_->replica.take();
}
size_t Service::replicaSize() const {
  return impl_->replica.size();
}

void Service::drainNow() {
  impl_->drain();
}

const Session& Service::session() const {
  return *impl_->session;
}

void Service::writeMetrics(PromWriter& w) const {
  if (!impl_->session) return;
  const Session& s = *impl_->session;
  const Metrics& m = s.metrics();
  auto counter = [&](const char* name, const char* help, double v) {
    w.family(name, "counter", help);
    w.sample(name, {}, v);
  };
  auto gauge = [&](const char* name, const char* help, double v) {
    w.family(name, "gauge", help);
    w.sample(name, {}, v);
  };
  w.family("halb_statesync_peer_state", "gauge", "1 for the current state of the link to the peer");
  for (PeerState st :
       {PeerState::Disconnected, PeerState::Connecting, PeerState::Syncing, PeerState::InSync})
    w.sample("halb_statesync_peer_state", {{"state", toString(st)}}, s.state() == st ? 1 : 0);
  gauge("halb_statesync_in_sync", "1 when a full copy of the peer's tables is applied",
        s.inSync() ? 1 : 0);
  counter("halb_statesync_entries_sent_total", "Entries sent as incremental updates",
          static_cast<double>(m.entriesSent));
  counter("halb_statesync_entries_received_total", "Incremental entries received",
          static_cast<double>(m.entriesReceived));
  counter("halb_statesync_entries_applied_total", "Received entries applied (incl. snapshots)",
          static_cast<double>(m.entriesApplied));
  counter("halb_statesync_entries_stale_total",
          "Received entries older than the held ones (last writer wins)",
          static_cast<double>(m.entriesStale));
  w.family("halb_statesync_coalesced_total", "counter", "Local changes not sent on their own");
  const auto& co = s.coalescing();
  w.sample("halb_statesync_coalesced_total", {{"reason", "merged"}},
           static_cast<double>(co.merged));
  w.sample("halb_statesync_coalesced_total", {{"reason", "cancelled"}},
           static_cast<double>(co.cancelled));
  w.sample("halb_statesync_coalesced_total", {{"reason", "touch"}},
           static_cast<double>(co.touchesSuppressed));
  counter("halb_statesync_dropped_total",
          "Changes dropped because the peer was too slow (a resync follows)",
          static_cast<double>(m.overflowDrops));
  uint64_t queueDrops = 0;
  for (auto* q : impl_->queues) queueDrops += q->dropped();
  counter("halb_statesync_change_queue_dropped_total",
          "Changes a worker could not queue (a resync follows)", static_cast<double>(queueDrops));
  counter("halb_statesync_resyncs_total", "Fresh snapshots sent because changes were lost",
          static_cast<double>(m.resyncs));
  counter("halb_statesync_too_large_total",
          "Entries that cannot be replicated (over the frame size)",
          static_cast<double>(m.entriesTooLarge));
  counter("halb_statesync_snapshots_sent_total", "Full snapshots sent",
          static_cast<double>(m.snapshotsSent));
  counter("halb_statesync_snapshots_received_total", "Full snapshots received and applied",
          static_cast<double>(m.snapshotsReceived));
  counter("halb_statesync_resumes_total", "Sessions resumed from the resend window",
          static_cast<double>(m.resumes));
  counter("halb_statesync_sessions_total", "Authenticated sessions",
          static_cast<double>(m.sessions));
  counter("halb_statesync_peer_lost_total", "Times the link to the peer broke",
          static_cast<double>(m.peerLost));
  counter("halb_statesync_auth_failures_total", "Connections that failed authentication",
          static_cast<double>(m.authFailures));
  counter("halb_statesync_refusals_total",
          "Handshakes refused (config fingerprint, node name, version)",
          static_cast<double>(m.refusals));
  counter("halb_statesync_protocol_errors_total", "Connections closed on a protocol error",
          static_cast<double>(m.protocolErrors));
  counter("halb_statesync_bytes_sent_total", "Bytes sent to the peer",
          static_cast<double>(m.bytesSent));
  counter("halb_statesync_bytes_received_total", "Bytes received from the peer",
          static_cast<double>(m.bytesReceived));
  gauge("halb_statesync_outbound_queue", "Changes queued or awaiting acknowledgement",
        static_cast<double>(s.outboundQueued()));
  gauge("halb_statesync_replica_connections", "Peer connections held for takeover",
        static_cast<double>(impl_->replica.size()));
  gauge("halb_statesync_rtt_seconds", "Smoothed round-trip time to the peer",
        s.rtt() ? std::chrono::duration<double>(*s.rtt()).count() : 0.0);
  w.family("halb_statesync_transfers_total", "counter",
           "Acknowledged connection transfers (handover)");
  w.sample("halb_statesync_transfers_total", {{"result", "acked"}},
           static_cast<double>(m.transfersAcked));
  w.sample("halb_statesync_transfers_total", {{"result", "failed"}},
           static_cast<double>(m.transfersFailed));
  w.sample("halb_statesync_transfers_total", {{"result", "received"}},
           static_cast<double>(m.transfersReceived));
  {
    std::vector<uint64_t> counts;
    double sum = 0;
    s.lagHistogram().addTo(counts, sum);
    w.family("halb_statesync_lag_seconds", "histogram",
             "Replication lag: change on the peer to applied here (sender's age + RTT/2)");
    Histogram::write(w, "halb_statesync_lag_seconds", {}, s.lagHistogram().bounds(), counts, sum);
  }
  {
    std::vector<uint64_t> counts;
    double sum = 0;
    s.snapshotDurationHistogram().addTo(counts, sum);
    w.family("halb_statesync_snapshot_duration_seconds", "histogram",
             "Time to receive a full snapshot");
    Histogram::write(w, "halb_statesync_snapshot_duration_seconds", {},
                     s.snapshotDurationHistogram().bounds(), counts, sum);
  }
}

void Service::writeStatus(JsonWriter& j) const {
  j.beginObject();
  const Session* s = impl_->session.get();
  j.key("enabled").value(s != nullptr);
  if (!s) {
    j.endObject();
    return;
  }
  const Metrics& m = s->metrics();
  auto ms = [](Duration d) { return std::chrono::duration<double, std::milli>(d).count(); };
  j.key("state").value(toString(s->state()));
  j.key("in_sync").value(s->inSync());
  j.key("listen").value(impl_->listenAddr.toString());
  j.key("peer_address");
  impl_->peer ? j.value(impl_->peer->toString()) : j.null();
  j.key("peer_name").value(s->peerName());
  j.key("epoch").value(static_cast<uint64_t>(s->epoch()));
  j.key("peer_epoch").value(static_cast<uint64_t>(s->peerEpoch()));
  j.key("rtt_ms");
  s->rtt() ? j.value(ms(*s->rtt())) : j.null();
  {
    std::vector<uint64_t> counts;
    double sum = 0;
    s->lagHistogram().addTo(counts, sum);
    j.key("lag_p50_ms").value(Histogram::quantile(s->lagHistogram().bounds(), counts, 0.5) * 1000);
    j.key("lag_p99_ms").value(Histogram::quantile(s->lagHistogram().bounds(), counts, 0.99) * 1000);
  }
  j.key("outbound_queue").value(static_cast<uint64_t>(s->outboundQueued()));
  j.key("snapshot_sending").value(s->snapshotSending());
  j.key("replica_connections").value(static_cast<uint64_t>(impl_->replica.size()));
  j.key("entries_sent").value(m.entriesSent);
  j.key("entries_received").value(m.entriesReceived);
  j.key("entries_applied").value(m.entriesApplied);
  j.key("snapshots_sent").value(m.snapshotsSent);
  j.key("snapshots_received").value(m.snapshotsReceived);
  j.key("last_snapshot_ms").value(ms(m.lastSnapshotDuration));
  j.key("last_snapshot_entries").value(m.lastSnapshotEntries);
  j.key("dropped").value(m.overflowDrops);
  j.key("resyncs").value(m.resyncs);
  j.key("auth_failures").value(m.authFailures);
  j.key("refusals").value(m.refusals);
  j.key("last_loss").value(impl_->lastLossReason);
  j.endObject();
}

std::string Service::statusJson() const {
  JsonWriter j;
  writeStatus(j);
  return j.take();
}

}  // namespace halb::statesync
