#include "statesync/session.h"

#include <algorithm>
#include <limits>

namespace halb::statesync {

using repl::Change;
using repl::ChangeKind;
using wire::MsgType;

namespace {

constexpr double kSnapshotBuckets[] = {0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5,
                                       1,     2.5,   5,    10,   30,  60,   120};
// Room for a batch prefix and one entry's kind and age next to the largest entry.
constexpr size_t kMaxEntryBytes = wire::kMaxPayload - 64;
constexpr size_t kChunkEntries = 4096;
// Back-off exponent cap: min·2^20 already exceeds any sane reconnect_max.
constexpr int kMaxBackoffExponent = 20;

uint64_t micros(Duration d) {
  return d.count() <= 0
             ? 0
             : static_cast<uint64_t>(std::chrono::duration_cast<microseconds>(d).count());
}
uint64_t micros(TimePoint t) {
  return micros(t.time_since_epoch());
}
double seconds(Duration d) {
  return std::chrono::duration<double>(d).count();
}

std::string shortHex(const Sha256Digest& d) {
  return toHex(std::span(d.data(), 8));
}

std::string payloadOf(const auto& msg) {
  std::string p;
  wire::encode(p, msg);
  return p;
}

bool hasTcpState(const repl::ConnEntry& c) {
  return c.clientTcp.has_value() || c.serverTcp.has_value();
}

// Encodes an entry; a connection whose TCP state does not fit a frame goes without it (the
// peer then knows the connection but will not try to restore it).
bool encodeForWire(std::string& body, ChangeKind kind, const repl::StickEntry& s,
                   repl::ConnEntry& c) {
  if (wire::encodeEntryBody(body, kind, s, c) && body.size() <= kMaxEntryBytes) return true;
  if (wire::isStickKind(kind) || !hasTcpState(c)) return false;
  c.clientTcp.reset();
  c.serverTcp.reset();
  body.clear();
  return wire::encodeEntryBody(body, kind, s, c) && body.size() <= kMaxEntryBytes;
}

}  // namespace

const char* toString(PeerState s) {
  switch (s) {
    case PeerState::Disconnected:
      return "disconnected";
    case PeerState::Connecting:
      return "connecting";
    case PeerState::Syncing:
      return "syncing";
    case PeerState::InSync:
      return "in_sync";
  }
  return "?";
}

std::span<const double> snapshotDurationBuckets() {
  return kSnapshotBuckets;
}

struct Session::Conn {
  ConnId id = 0;
  bool outbound = false;
  Phase phase = Phase::Connecting;
  TimePoint openedAt{};
  TimePoint lastRx{};
  TimePoint lastHeartbeat{};
  // Until the peer has authenticated it may send one small frame, no more.
  wire::FrameReader reader{wire::kMaxHandshakePayload};
  uint8_t version = wire::kVersionMin;
  wire::Key txKey{};
  wire::Key rxKey{};
  uint64_t txCounter = 0;
  uint64_t rxCounter = 0;
  std::string challenge;  // the CHALLENGE payload (sent or received): input to the key schedule
  std::string peerName;
  uint64_t peerIncarnation = 0;
  uint32_t peerEpoch = 0;
  wire::ResumePoint peerResume;
  uint64_t peerHbTimeUs = 0;
  TimePoint peerHbAt{};
};

struct Session::SnapshotSender {
  uint32_t id = 0;
  TimePoint startedAt{};
  bool conns = false;  // sticks first (they matter most for users), then connections
  size_t shard = 0;
  std::vector<std::pair<ChangeKind, std::string>> buffer;  // one shard, encoded
  size_t pos = 0;
  uint64_t sent = 0;
};

Session::Session(Settings settings, Transport& transport, repl::TableSource& source,
                 repl::TableSink& sink, ConnReplica& replica, Events& events, TimePoint now)
    : s_(std::move(settings)),
      transport_(transport),
      source_(source),
      sink_(sink),
      replica_(replica),
      events_(events),
      challengeKey_(wire::challengeKey(s_.key)),
      coalescer_(s_.touchCacheSlots, s_.touchRefresh),
      log_(s_.queueEntries, s_.queueBytes),
      snapshotDuration_(kSnapshotBuckets) {
  if (!s_.random) s_.random = [](std::span<uint8_t> out) { randomBytes(out); };
  while (incarnation_ == 0)
    s_.random(std::span(reinterpret_cast<uint8_t*>(&incarnation_), sizeof incarnation_));
  uint64_t seed = s_.seed;
  if (seed == 0) s_.random(std::span(reinterpret_cast<uint8_t*>(&seed), sizeof seed));
  rng_.seed(seed);
  // Connect at once on start; both nodes do, and the tie-break settles a collision.
  if (s_.connectToPeer) nextConnect_ = now;
}

Session::~Session() = default;

// ============================================================================ transport events

Session::Conn* Session::find(ConnId id) {
  auto it = conns_.find(id);
  return it == conns_.end() ? nullptr : it->second.get();
}

size_t Session::handshakesInProgress() const {
  return static_cast<size_t>(std::count_if(conns_.begin(), conns_.end(), [](const auto& kv) {
    return kv.second->phase == Phase::AwaitHello;
  }));
}

void Session::onConnected(ConnId id, TimePoint now) {
  Conn* c = find(id);
  if (!c || c->phase != Phase::Connecting) return;
  c->phase = Phase::AwaitChallenge;
  c->openedAt = now;
  c->lastRx = now;
}

void Session::onConnectFailed(ConnId id, TimePoint now) {
  drop(id, "connect failed", now, false);
}

void Session::onAccepted(ConnId id, TimePoint now) {
  if (shutdown_) {
    transport_.close(id);
    return;
  }
  if (handshakesInProgress() >= s_.maxHandshakes) {
    // Evict the oldest unauthenticated connection rather than refuse the newest: a flood of
    // idle connections then cannot lock the real peer out for a whole handshake timeout.
    ConnId oldest = 0;
    TimePoint when = TimePoint::max();
    for (const auto& [cid, c] : conns_)
      if (c->phase == Phase::AwaitHello && c->openedAt < when) oldest = cid, when = c->openedAt;
    if (oldest) authFailure(oldest, "too many unauthenticated connections; oldest dropped", now);
  }
  auto c = std::make_unique<Conn>();
  c->id = id;
  c->outbound = false;
  c->phase = Phase::AwaitHello;
  c->openedAt = now;
  c->lastRx = now;
  wire::Challenge ch;
  s_.random(ch.nonce);
  wire::encode(c->challenge, ch);
  c->txKey = challengeKey_;
  Conn& ref = *c;
  conns_[id] = std::move(c);
  send(ref, MsgType::Challenge, ref.challenge);
}

void Session::onData(ConnId id, std::span<const uint8_t> data, TimePoint now) {
  Conn* c = find(id);
  if (!c) return;
  metrics_.bytesReceived += data.size();
  c->reader.feed(data);
  while ((c = find(id)) != nullptr) {
    auto r = c->reader.next();
    if (!r) {
      if (c->phase == Phase::Established)
        protocolError(id, r.error(), now);
      else
        authFailure(id, r.error(), now);
      break;
    }
    if (!r.value()) break;
    ++metrics_.framesReceived;
    handleFrame(*c, *r.value(), now);
  }
  pump(now);
}

void Session::onClosed(ConnId id, std::string_view reason, TimePoint now) {
  if (!find(id)) return;
  drop(id, reason, now, false);
}

void Session::onWritable(TimePoint now) {
  pump(now);
}

void Session::onTick(TimePoint now) {
  if (lossDeadline_ && now >= *lossDeadline_) {
    lossDeadline_.reset();
    if (!active_) {
      ++metrics_.peerLost;
      events_.onPeerLost(lossReason_);
    }
  }

  std::vector<std::pair<ConnId, std::string>> dead;
  for (const auto& [id, c] : conns_) {
    if (c->phase != Phase::Established) {
      if (now - c->openedAt >= s_.handshakeTimeout)
        dead.emplace_back(
            id, c->phase == Phase::Connecting ? "connect timed out" : "handshake timed out");
    } else if (now - c->lastRx >= s_.peerTimeout) {
      dead.emplace_back(id, "peer silent for " + std::to_string(toMillis(now - c->lastRx)) + " ms");
    }
  }
  for (const auto& [id, why] : dead) drop(id, why, now, true);

  for (auto& [id, c] : conns_)
    if (c->phase == Phase::Established && now - c->lastHeartbeat >= s_.heartbeat)
      sendHeartbeat(*c, now);

  for (auto it = transfers_.begin(); it != transfers_.end();) {
    if (now >= it->second) {
      uint64_t tid = it->first;
      it = transfers_.erase(it);
      ++metrics_.transfersFailed;
      events_.onTransferDone(tid, false);
    } else {
      ++it;
    }
  }

  if (ackDue_ && now >= *ackDue_) {
    if (Conn* a = find(active_)) sendAck(*a);
    ackDue_.reset();
  }

  if (!coalescer_.empty() &&
      (now - coalescer_.oldest() >= s_.batchDelay || coalescer_.size() >= s_.batchEntries))
    flush(now);

  if (nextConnect_ && now >= *nextConnect_) {
    nextConnect_.reset();
    if (!active_ && !outbound_ && s_.connectToPeer && !shutdown_) {
      if (handshakesInProgress() > 0) {
        // The peer is connecting to us right now; let that finish before colliding with it.
        nextConnect_ = now + s_.reconnectMin;
      } else {
        ConnId id = transport_.connect();
        ++metrics_.connectAttempts;
        if (id == 0) {
          ++connectFailures_;
          scheduleReconnect(now);
        } else {
          auto c = std::make_unique<Conn>();
          c->id = id;
          c->outbound = true;
          c->phase = Phase::Connecting;
          c->openedAt = now;
          c->lastRx = now;
          conns_[id] = std::move(c);
          outbound_ = id;
        }
      }
    }
  }
  pump(now);
}

TimePoint Session::nextDeadline() const {
  TimePoint d = TimePoint::max();
  auto at = [&](TimePoint t) { d = std::min(d, t); };
  if (lossDeadline_) at(*lossDeadline_);
  if (nextConnect_) at(*nextConnect_);
  if (ackDue_) at(*ackDue_);
  if (!coalescer_.empty()) at(coalescer_.oldest() + s_.batchDelay);
  for (const auto& [id, c] : conns_) {
    if (c->phase != Phase::Established) {
      at(c->openedAt + s_.handshakeTimeout);
    } else {
      at(c->lastRx + s_.peerTimeout);
      at(c->lastHeartbeat + s_.heartbeat);
    }
  }
  for (const auto& [id, deadline] : transfers_) at(deadline);
  return d;
}

// ============================================================================ handshake

void Session::handleFrame(Conn& c, const wire::RawFrame& f, TimePoint now) {
  switch (c.phase) {
    case Phase::Connecting:
      authFailure(c.id, "data before the connection completed", now);
      return;
    case Phase::AwaitChallenge:
      onChallenge(c, f, now);
      return;
    case Phase::AwaitHello:
      onHello(c, f, now);
      return;
    case Phase::AwaitReply:
      onHelloReply(c, f, now);
      return;
    case Phase::Established:
      dispatch(c, f, now);
      return;
  }
}

// Initiator, step 1: the responder proved it holds the key (the tag), and gave us its nonce.
void Session::onChallenge(Conn& c, const wire::RawFrame& f, TimePoint now) {
  if (f.header.type != MsgType::Challenge || f.header.counter != 0)
    return authFailure(c.id, std::string("expected CHALLENGE, got ") + toString(f.header.type),
                       now);
  if (!wire::verifyFrame(f, challengeKey_))
    return authFailure(c.id, "CHALLENGE failed authentication: the peer has a different key", now);
  auto m = wire::decodeChallenge(f.payload);
  if (!m) return authFailure(c.id, m.error(), now);
  uint8_t v = std::min(wire::kVersionMax, m->versionMax);
  if (v < std::max(wire::kVersionMin, m->versionMin)) {
    std::string why = "peer speaks protocol versions " + std::to_string(m->versionMin) + ".." +
                      std::to_string(m->versionMax) + ", this node " +
                      std::to_string(wire::kVersionMin) + ".." + std::to_string(wire::kVersionMax);
    ++metrics_.refusals;
    events_.onRefused(c.id, why);
    refused_ = true;
    return drop(c.id, why, now, true);
  }
  c.version = v;
  c.challenge.assign(reinterpret_cast<const char*>(f.payload.data()), f.payload.size());
  wire::Hello h;
  s_.random(h.nonce);
  auto keys = wire::deriveSessionKeys(s_.key, f.payload, h.nonce);
  c.txKey = keys.initiatorToResponder;
  c.rxKey = keys.responderToInitiator;
  c.rxCounter = 1;
  c.lastRx = now;
  h.version = v;
  h.nodeName = s_.nodeName;
  h.fingerprint = s_.fingerprint;
  h.incarnation = incarnation_;
  h.epoch = epoch_;
  h.resume = resumeOffer();
  c.phase = Phase::AwaitReply;
  send(c, MsgType::Hello, payloadOf(h));
}

// Responder: the HELLO's tag is under keys bound to our fresh nonce, so it is neither forged
// nor replayed. Only now does the peer get anything beyond the challenge.
void Session::onHello(Conn& c, const wire::RawFrame& f, TimePoint now) {
  if (f.header.type != MsgType::Hello || f.header.counter != 0)
    return authFailure(c.id, std::string("expected HELLO, got ") + toString(f.header.type), now);
  auto nonce = wire::peekHelloNonce(f.payload);
  if (!nonce) return authFailure(c.id, "HELLO: truncated", now);
  auto keys = wire::deriveSessionKeys(s_.key, wire::bytes(c.challenge), *nonce);
  if (!wire::verifyFrame(f, keys.initiatorToResponder))
    return authFailure(c.id, "HELLO failed authentication: the peer has a different key", now);
  c.rxKey = keys.initiatorToResponder;
  c.txKey = keys.responderToInitiator;
  c.rxCounter = 1;
  c.lastRx = now;
  auto h = wire::decodeHello(f.payload);
  if (!h) return protocolError(c.id, h.error(), now);
  if (h->version != f.header.version)
    return protocolError(c.id, "HELLO: version field differs from the header", now);
  c.version = f.header.version;

  wire::HelloStatus status = wire::HelloStatus::Ok;
  auto refusal = checkPeer(h->nodeName, h->fingerprint, &status);
  wire::HelloReply r;
  r.status = status;
  r.nodeName = s_.nodeName;
  r.fingerprint = s_.fingerprint;
  r.incarnation = incarnation_;
  r.epoch = epoch_;
  r.resume = resumeOffer();
  send(c, MsgType::HelloReply, payloadOf(r));
  if (refusal) {
    ++metrics_.refusals;
    events_.onRefused(c.id, *refusal);
    return drop(c.id, *refusal, now, true);
  }
  c.peerName = h->nodeName;
  c.peerIncarnation = h->incarnation;
  c.peerEpoch = h->epoch;
  c.peerResume = h->resume;
  established(c, now);
}

// Initiator, step 2: the reply is under the session keys, so the responder is live too.
void Session::onHelloReply(Conn& c, const wire::RawFrame& f, TimePoint now) {
  if (f.header.type != MsgType::HelloReply || f.header.counter != 1)
    return authFailure(c.id, std::string("expected HELLO_REPLY, got ") + toString(f.header.type),
                       now);
  if (f.header.version != c.version) return authFailure(c.id, "HELLO_REPLY: wrong version", now);
  if (!wire::verifyFrame(f, c.rxKey))
    return authFailure(c.id, "HELLO_REPLY failed authentication: the peer has a different key",
                       now);
  c.rxCounter = 2;
  c.lastRx = now;
  auto r = wire::decodeHelloReply(f.payload);
  if (!r) return protocolError(c.id, r.error(), now);
  wire::HelloStatus status = wire::HelloStatus::Ok;
  auto refusal = checkPeer(r->nodeName, r->fingerprint, &status);
  if (r->status != wire::HelloStatus::Ok || refusal) {
    std::string why =
        refusal ? *refusal : "refused by peer '" + r->nodeName + "': " + toString(r->status);
    ++metrics_.refusals;
    events_.onRefused(c.id, why);
    refused_ = true;
    return drop(c.id, why, now, true);
  }
  c.peerName = r->nodeName;
  c.peerIncarnation = r->incarnation;
  c.peerEpoch = r->epoch;
  c.peerResume = r->resume;
  established(c, now);
}

std::optional<std::string> Session::checkPeer(std::string_view name, const Sha256Digest& fp,
                                              wire::HelloStatus* status) const {
  if (name == s_.nodeName) {
    *status = wire::HelloStatus::SameNodeName;
    return "the peer calls itself '" + std::string(name) +
           "' like this node: both run with the same `nodes:` entry; sync refused";
  }
  if (fp != s_.fingerprint) {
    *status = wire::HelloStatus::FingerprintMismatch;
    return "configuration mismatch with peer '" + std::string(name) +
           "': replicated-config fingerprint " + shortHex(s_.fingerprint) + " here, " +
           shortHex(fp) +
           " there (backends, servers, sticky settings or continuity frontends differ); sync "
           "refused "
           "until both nodes run the same configuration";
  }
  *status = wire::HelloStatus::Ok;
  return std::nullopt;
}

wire::ResumePoint Session::resumeOffer() const {
  if (!rxComplete_ || peerIncarnation_ == 0 || rxExpected_ == 0) return {};
  return {peerIncarnation_, rxExpected_ - 1};
}

void Session::established(Conn& c, TimePoint now) {
  c.phase = Phase::Established;
  c.reader.setMaxPayload(wire::kMaxPayload);
  c.lastRx = now;
  if (c.id == outbound_) outbound_ = 0;
  refused_ = false;
  if (!active_) {
    activate(c, now, /*announce=*/!lossDeadline_);
    return;
  }
  Conn* current = find(active_);
  if (current && !prefer(c, *current)) {
    drop(c.id, "simultaneous connection lost the tie-break", now, true, wire::CloseCode::Replaced);
    return;
  }
  // The new connection wins: drop the old one quietly (no loss to report) and move over.
  ConnId old = active_;
  active_ = 0;
  failTransfers();
  drop(old, "replaced by a newer connection", now, true, wire::CloseCode::Replaced);
  activate(c, now, /*announce=*/false);
}

// Which of two authenticated connections to the same peer carries replication. Both nodes
// evaluate this with the same inputs, so they keep the same one (spec §5.3).
bool Session::prefer(const Conn& candidate, const Conn& current) const {
  // A different incarnation means the peer restarted: the old connection is dead.
  if (candidate.peerIncarnation != current.peerIncarnation) return true;
  const std::string& a = candidate.outbound ? s_.nodeName : candidate.peerName;
  const std::string& b = current.outbound ? s_.nodeName : current.peerName;
  if (a != b) return a < b;  // the lower node name keeps its outbound connection
  return true;               // same initiator: it gave up on the old one
}

void Session::activate(Conn& c, TimePoint now, bool announce) {
  active_ = c.id;
  lossDeadline_.reset();
  nextConnect_.reset();
  connectFailures_ = 0;
  peerName_ = c.peerName;
  peerEpoch_ = c.peerEpoch;
  maxEpochSeen_ = std::max(maxEpochSeen_, c.peerEpoch);
  ++metrics_.sessions;

  // Inbound: a new peer process means what we hold of its stream is history.
  if (c.peerIncarnation != peerIncarnation_) {
    peerIncarnation_ = c.peerIncarnation;
    offsetSampleCount_ = 0;  // a new process may have a new clock (a rebooted host)
    srtt_.reset();
    rxComplete_ = false;
    rxExpected_ = 0;
    lastAckSent_ = 0;
  }
  rxStarted_ = false;
  rxSnapshot_.reset();
  ackDue_.reset();

  // Outbound: continue from the resend log if the peer holds our stream up to a point the
  // log still covers; otherwise a full snapshot.
  suspended_ = false;
  resyncPending_ = false;
  snapshot_.reset();
  if (c.peerResume.incarnation == incarnation_ && log_.canResumeFrom(c.peerResume.seq)) {
    cursor_ = c.peerResume.seq + 1;
    ++metrics_.resumes;
    send(c, MsgType::Resume, payloadOf(wire::Resume{cursor_}));
  } else {
    log_.ack(log_.nextSeq() - 1);  // the snapshot covers everything logged so far
    cursor_ = log_.nextSeq();
    startSnapshot(c, wire::SnapshotReason::NewSession, now);
  }
  sendHeartbeat(c, now);
  if (announce) events_.onPeerUp(peerName_);
  pump(now);
}

// ============================================================================ established

void Session::dispatch(Conn& c, const wire::RawFrame& f, TimePoint now) {
  if (!wire::verifyFrame(f, c.rxKey)) return authFailure(c.id, "frame failed authentication", now);
  // The counter is covered by the tag; a replayed, dropped or reordered frame shows here.
  if (f.header.counter != c.rxCounter)
    return protocolError(c.id,
                         "frame counter " + std::to_string(f.header.counter) + ", expected " +
                             std::to_string(c.rxCounter) + " (replayed, lost or reordered frame)",
                         now);
  if (f.header.version != c.version)
    return protocolError(c.id, "frame version changed mid-session", now);
  ++c.rxCounter;
  c.lastRx = now;
  if (c.id != active_) return;  // the loser of a tie-break, closing

  auto bad = [&](const std::string& e) { protocolError(c.id, e, now); };
  switch (f.header.type) {
    case MsgType::SnapshotBegin: {
      auto m = wire::decodeSnapshotBegin(f.payload);
      if (!m) return bad(m.error());
      return onSnapshotBegin(*m, now);
    }
    case MsgType::SnapshotChunk: {
      auto m = wire::decodeSnapshotChunk(f.payload);
      if (!m) return bad(m.error());
      return onSnapshotChunk(c, std::move(m).value(), now);
    }
    case MsgType::SnapshotEnd: {
      auto m = wire::decodeSnapshotEnd(f.payload);
      if (!m) return bad(m.error());
      return onSnapshotEnd(c, *m, now);
    }
    case MsgType::Resume: {
      auto m = wire::decodeResume(f.payload);
      if (!m) return bad(m.error());
      return onResume(c, *m, now);
    }
    case MsgType::Updates: {
      auto m = wire::decodeUpdates(f.payload);
      if (!m) return bad(m.error());
      return onUpdates(c, std::move(m).value(), now);
    }
    case MsgType::Ack: {
      auto m = wire::decodeAck(f.payload);
      if (!m) return bad(m.error());
      // Never trust an ack for what was not sent on this connection.
      log_.ack(std::min<uint64_t>(m->seq, cursor_ > 0 ? cursor_ - 1 : 0));
      return;
    }
    case MsgType::Heartbeat: {
      auto m = wire::decodeHeartbeat(f.payload);
      if (!m) return bad(m.error());
      return onHeartbeat(c, *m, now);
    }
    case MsgType::Transfer: {
      auto m = wire::decodeTransfer(f.payload);
      if (!m) return bad(m.error());
      return onTransfer(c, std::move(m).value(), now);
    }
    case MsgType::TransferAck: {
      auto m = wire::decodeTransferAck(f.payload);
      if (!m) return bad(m.error());
      if (transfers_.erase(m->transferId)) {
        ++metrics_.transfersAcked;
        events_.onTransferDone(m->transferId, true);
      }
      return;
    }
    case MsgType::Close: {
      auto m = wire::decodeClose(f.payload);
      if (!m) return bad(m.error());
      return onClose(c, *m, now);
    }
    case MsgType::Challenge:
    case MsgType::Hello:
    case MsgType::HelloReply:
      return bad(std::string(toString(f.header.type)) + " after the handshake");
  }
}

void Session::onSnapshotBegin(const wire::SnapshotBegin& m, TimePoint now) {
  // A BEGIN while a snapshot runs abandons it (the sender restarted after an overflow).
  rxSnapshot_ = RxSnapshot{m.snapshotId, 0, now};
  rxComplete_ = false;
  rxStarted_ = true;
  rxExpected_ = m.nextSeq;
  replica_.beginSweep();
}

void Session::onSnapshotChunk(Conn& c, wire::SnapshotChunk&& m, TimePoint now) {
  if (!rxSnapshot_ || m.snapshotId != rxSnapshot_->id)
    return protocolError(
        c.id, "SNAPSHOT_CHUNK for snapshot " + std::to_string(m.snapshotId) + " not in progress",
        now);
  for (const auto& e : m.entries) applyEntry(e, now);
  rxSnapshot_->entries += m.entries.size();
  metrics_.snapshotEntriesReceived += m.entries.size();
}

void Session::onSnapshotEnd(Conn& c, const wire::SnapshotEnd& m, TimePoint now) {
  if (!rxSnapshot_ || m.snapshotId != rxSnapshot_->id)
    return protocolError(
        c.id, "SNAPSHOT_END for snapshot " + std::to_string(m.snapshotId) + " not in progress",
        now);
  if (m.entries != rxSnapshot_->entries)
    return protocolError(c.id,
                         "SNAPSHOT_END counts " + std::to_string(m.entries) + " entries, " +
                             std::to_string(rxSnapshot_->entries) + " arrived",
                         now);
  replica_.sweep();
  Duration took = now - rxSnapshot_->startedAt;
  metrics_.lastSnapshotDuration = took;
  metrics_.lastSnapshotEntries = m.entries;
  ++metrics_.snapshotsReceived;
  snapshotDuration_.observe(seconds(took));
  rxSnapshot_.reset();
  rxComplete_ = true;
  ackDue_ = now;  // let the sender trim its log right away
  events_.onSyncComplete();
}

void Session::onResume(Conn& c, const wire::Resume& m, TimePoint now) {
  if (rxStarted_) return protocolError(c.id, "RESUME after the stream started", now);
  if (!rxComplete_ || m.nextSeq > rxExpected_)
    return protocolError(c.id,
                         "RESUME at " + std::to_string(m.nextSeq) +
                             " but this node holds the stream up to " +
                             std::to_string(rxExpected_ ? rxExpected_ - 1 : 0),
                         now);
  rxStarted_ = true;
  events_.onSyncComplete();
}

void Session::onUpdates(Conn& c, wire::Updates&& m, TimePoint now) {
  if (!rxStarted_) return protocolError(c.id, "UPDATES before SNAPSHOT_BEGIN or RESUME", now);
  if (m.firstSeq > rxExpected_)
    return protocolError(c.id,
                         "UPDATES gap: expected sequence " + std::to_string(rxExpected_) +
                             ", got " + std::to_string(m.firstSeq),
                         now);
  // The frame's one-way delay: its send time moved to our clock by the offset estimate (this
  // sees a receiver that was busy or descheduled, which RTT/2 would miss); RTT/2 until the
  // first heartbeat round trip.
  double transit = srtt_ ? seconds(*srtt_) / 2 : 0.0;
  if (auto off = clockOffset()) {
    int64_t sentHere =
        static_cast<int64_t>(m.sendTimeUs) - std::chrono::duration_cast<microseconds>(*off).count();
    transit =
        static_cast<double>(std::max<int64_t>(0, static_cast<int64_t>(micros(now)) - sentHere)) /
        1e6;
  }
  uint64_t seq = m.firstSeq;
  for (const auto& e : m.entries) {
    if (seq++ < rxExpected_) continue;  // already applied (overlap after a connection switch)
    applyEntry(e, now);
    lag_.observe(static_cast<double>(e.ageUs) / 1e6 + transit);
    ++rxExpected_;
  }
  metrics_.entriesReceived += m.entries.size();
  if (rxExpected_ - 1 - lastAckSent_ >= s_.ackEvery)
    sendAck(c);
  else if (!ackDue_)
    ackDue_ = now + s_.ackDelay;
}

void Session::applyEntry(const wire::Entry& e, TimePoint now) {
  bool applied = false;
  switch (e.kind) {
    case ChangeKind::StickUpsert:
    case ChangeKind::StickTouch:
      applied = sink_.applyStick(e.stick, now);
      maxEpochSeen_ = std::max(maxEpochSeen_, e.stick.version.epoch);
      break;
    case ChangeKind::StickDelete:
      applied = sink_.removeStick(e.stick.backendId, e.stick.key, e.stick.version);
      maxEpochSeen_ = std::max(maxEpochSeen_, e.stick.version.epoch);
      break;
    case ChangeKind::ConnOpen:
    case ChangeKind::ConnUpdate:
      applied = replica_.apply(e.conn);
      maxEpochSeen_ = std::max(maxEpochSeen_, e.conn.version.epoch);
      break;
    case ChangeKind::ConnClose:
      applied = replica_.remove(e.conn.id, e.conn.version);
      maxEpochSeen_ = std::max(maxEpochSeen_, e.conn.version.epoch);
      break;
  }
  applied ? ++metrics_.entriesApplied : ++metrics_.entriesStale;
}

void Session::onHeartbeat(Conn& c, const wire::Heartbeat& m, TimePoint now) {
  if (m.echoTimeUs != 0) {
    // t1: we sent the echoed heartbeat (our clock); t2/t3: the peer received it / sent this
    // one (its clock); t4: now (ours). The RTT needs no clock agreement; the offset is NTP's
    // ((t2 - t1) + (t3 - t4)) / 2, exact when the path is symmetric.
    auto t1 = static_cast<int64_t>(m.echoTimeUs), t3 = static_cast<int64_t>(m.timeUs);
    auto t2 = t3 - static_cast<int64_t>(m.echoDelayUs), t4 = static_cast<int64_t>(micros(now));
    int64_t rtt = (t4 - t1) - (t3 - t2);
    if (rtt >= 0) {
      Duration r = microseconds(rtt);
      srtt_ = srtt_ ? (*srtt_ * 7 + r) / 8 : r;
      offsetSamples_[offsetSampleCount_++ % offsetSamples_.size()] = {rtt,
                                                                      ((t2 - t1) + (t3 - t4)) / 2};
    }
  }
  c.peerHbTimeUs = m.timeUs;
  c.peerHbAt = now;
  c.peerEpoch = m.epoch;
  peerEpoch_ = m.epoch;
  maxEpochSeen_ = std::max(maxEpochSeen_, m.epoch);
}

void Session::onTransfer(Conn& c, wire::Transfer&& m, TimePoint now) {
  (void)now;
  uint32_t applied = 0;
  for (const auto& e : m.entries) applied += replica_.apply(e) ? 1 : 0;
  ++metrics_.transfersReceived;
  send(c, MsgType::TransferAck, payloadOf(wire::TransferAck{m.transferId, applied, 0}));
  events_.onTransferReceived(m.transferId, m.entries.size());
}

void Session::onClose(Conn& c, const wire::Close& m, TimePoint now) {
  std::string why = std::string("peer closed the connection: ") + toString(m.code);
  if (!m.reason.empty()) why += " (" + m.reason + ")";
  // "Replaced" means the peer moved to another of our connections, which may still be
  // finishing its handshake here: give it that long before calling the peer lost.
  bool successorPending = false;
  for (const auto& [id, other] : conns_)
    if (id != c.id && other->phase != Phase::Established) successorPending = true;
  drop(c.id, why, now, true, std::nullopt, m.code == wire::CloseCode::Replaced && successorPending);
}

void Session::sendAck(Conn& c) {
  if (rxExpected_ == 0) return;
  lastAckSent_ = rxExpected_ - 1;
  ackDue_.reset();
  send(c, MsgType::Ack, payloadOf(wire::Ack{lastAckSent_}));
}

// ============================================================================ outbound

void Session::offer(const Change& change, TimePoint now) {
  ++metrics_.changesOffered;
  if (suspended_) {
    ++metrics_.changesDiscarded;
    return;
  }
  coalescer_.offer(change);
  if (coalescer_.size() >= s_.batchEntries) flush(now);
}

void Session::requestResync(std::string_view reason, TimePoint now) {
  breakOutbound(reason, 0, false);
  pump(now);
}

void Session::flush(TimePoint now) {
  drainBuf_.clear();
  coalescer_.drain(drainBuf_);
  for (size_t i = 0; i < drainBuf_.size(); ++i) {
    Change& c = drainBuf_[i];
    // The peer's copy should expire when ours does, not later by the time spent batching.
    if (wire::isStickKind(c.kind))
      c.stick.ttlLeft = std::max(Duration::zero(), c.stick.ttlLeft - (now - c.at));
    std::string body;
    if (!encodeForWire(body, c.kind, c.stick, c.conn)) {
      ++metrics_.entriesTooLarge;
      continue;
    }
    if (!log_.append(c.kind, c.at, std::move(body))) {
      breakOutbound("outbound queue full: the peer is not keeping up", drainBuf_.size() - i, true);
      break;
    }
  }
  drainBuf_.clear();
  pump(now);
}

void Session::breakOutbound(std::string_view reason, uint64_t alsoLost, bool countDrops) {
  if (countDrops) {
    uint64_t unsent = log_.size();
    if (active_ && !resyncPending_ && cursor_ >= log_.firstSeq()) unsent = log_.nextSeq() - cursor_;
    metrics_.overflowDrops += alsoLost + coalescer_.size() + unsent;
  }
  coalescer_.clear();
  log_.breakStream();
  ++metrics_.resyncs;
  events_.onResync(reason);
  if (active_) {
    // The peer gets a fresh snapshot once the link has drained; until then nothing is framed
    // (an UPDATES frame now would show the peer a gap).
    resyncPending_ = true;
    snapshot_.reset();
    cursor_ = log_.nextSeq();
  } else {
    suspended_ = true;
  }
}

void Session::pump(TimePoint now) {
  Conn* c = active_ ? find(active_) : nullptr;
  if (!c) return;
  if (resyncPending_) {
    if (transport_.queuedBytes(c->id) > s_.highWatermark / 4) return;
    resyncPending_ = false;
    startSnapshot(*c, wire::SnapshotReason::Resync, now);
  }
  while (transport_.queuedBytes(c->id) < s_.highWatermark) {
    cursor_ = std::max(cursor_, log_.firstSeq());
    if (cursor_ < log_.nextSeq()) {
      sendUpdates(*c, now);
    } else if (snapshot_) {
      sendChunk(*c, now);
    } else {
      break;
    }
  }
}

void Session::startSnapshot(Conn& c, wire::SnapshotReason reason, TimePoint now) {
  snapshot_ = std::make_unique<SnapshotSender>();
  snapshot_->id = nextSnapshotId_++;
  snapshot_->startedAt = now;
  ++metrics_.snapshotsSent;
  send(c, MsgType::SnapshotBegin, payloadOf(wire::SnapshotBegin{snapshot_->id, cursor_, reason}));
}

void Session::sendUpdates(Conn& c, TimePoint now) {
  wire::FrameBuilder b;
  auto w = wire::BatchWriter::updates(b.payload(), cursor_, micros(now));
  while (cursor_ < log_.nextSeq() && w.count() < s_.batchEntries &&
         b.payloadSize() < s_.frameBytes) {
    const OutboundLog::Item* it = log_.find(cursor_);
    if (!it) break;
    if (w.count() > 0 && b.payloadSize() + it->body.size() + 16 > wire::kMaxPayload) break;
    w.addUpdate(it->kind, micros(now - it->at), it->body);
    ++cursor_;
  }
  w.finish();
  metrics_.entriesSent += w.count();
  send(c, MsgType::Updates, std::move(b));
}

void Session::sendChunk(Conn& c, TimePoint now) {
  SnapshotSender& sn = *snapshot_;
  static const repl::StickEntry kNoStick;
  while (sn.pos == sn.buffer.size()) {
    sn.buffer.clear();
    sn.pos = 0;
    if (!sn.conns) {
      if (sn.shard < source_.stickShards()) {
        source_.forEachStickInShard(sn.shard++, [&](const repl::StickEntry& e) {
          std::string body;
          repl::ConnEntry none;
          if (encodeForWire(body, ChangeKind::StickUpsert, e, none))
            sn.buffer.emplace_back(ChangeKind::StickUpsert, std::move(body));
          else
            ++metrics_.entriesTooLarge;
        });
        continue;
      }
      sn.conns = true;
      sn.shard = 0;
      continue;
    }
    if (sn.shard < source_.connShards()) {
      source_.forEachConnInShard(sn.shard++, [&](const repl::ConnEntry& e) {
        if (e.phase == repl::ConnPhase::Closed) return;
        std::string body;
        repl::ConnEntry copy = e;
        if (encodeForWire(body, ChangeKind::ConnOpen, kNoStick, copy))
          sn.buffer.emplace_back(ChangeKind::ConnOpen, std::move(body));
        else
          ++metrics_.entriesTooLarge;
      });
      continue;
    }
    send(c, MsgType::SnapshotEnd, payloadOf(wire::SnapshotEnd{sn.id, sn.sent}));
    snapshot_.reset();
    return;
  }
  (void)now;
  wire::FrameBuilder b;
  auto w = wire::BatchWriter::snapshotChunk(b.payload(), sn.id);
  while (sn.pos < sn.buffer.size() && w.count() < kChunkEntries &&
         b.payloadSize() < s_.frameBytes) {
    const auto& [kind, body] = sn.buffer[sn.pos];
    if (w.count() > 0 && b.payloadSize() + body.size() + 8 > wire::kMaxPayload) break;
    w.addChunkEntry(kind, body);
    ++sn.pos;
  }
  w.finish();
  sn.sent += w.count();
  metrics_.snapshotEntriesSent += w.count();
  send(c, MsgType::SnapshotChunk, std::move(b));
}

void Session::sendHeartbeat(Conn& c, TimePoint now) {
  wire::Heartbeat h;
  h.timeUs = micros(now);
  h.echoTimeUs = c.peerHbTimeUs;
  h.echoDelayUs =
      c.peerHbTimeUs
          ? static_cast<uint32_t>(std::min<uint64_t>(micros(now - c.peerHbAt), UINT32_MAX))
          : 0;
  h.epoch = epoch_;
  c.lastHeartbeat = now;
  send(c, MsgType::Heartbeat, payloadOf(h));
}

uint64_t Session::transfer(const std::vector<repl::ConnEntry>& entries, TimePoint now) {
  Conn* c = active_ ? find(active_) : nullptr;
  if (!c || entries.empty() || entries.size() > wire::kMaxBatch) return 0;
  uint64_t id = nextTransferId_++;
  wire::FrameBuilder b;
  auto w = wire::BatchWriter::transfer(b.payload(), id);
  std::string body;
  for (const auto& e : entries) {
    body.clear();
    if (!wire::encodeConnEntry(body, e) || b.payloadSize() + body.size() > wire::kMaxPayload)
      return 0;
    w.addTransferEntry(body);
  }
  w.finish();
  // Sent ahead of anything queued: a handover waits on it, and the versions it carries are
  // newer than any update still in the log, so order does not matter to the peer.
  send(*c, MsgType::Transfer, std::move(b));
  transfers_[id] = now + s_.transferTimeout;
  ++metrics_.transfersSent;
  return id;
}

void Session::shutdown(TimePoint now) {
  shutdown_ = true;
  nextConnect_.reset();
  lossDeadline_.reset();
  std::vector<ConnId> ids;
  for (const auto& [id, c] : conns_) ids.push_back(id);
  for (ConnId id : ids) drop(id, "shutting down", now, true, wire::CloseCode::Shutdown);
}

std::optional<Duration> Session::clockOffset() const {
  size_t n = std::min(offsetSampleCount_, offsetSamples_.size());
  if (n == 0) return std::nullopt;
  // The sample with the lowest RTT had the least room for asymmetric queueing.
  const OffsetSample* best = &offsetSamples_[0];
  for (size_t i = 1; i < n; ++i)
    if (offsetSamples_[i].rttUs < best->rttUs) best = &offsetSamples_[i];
  return microseconds(best->offsetUs);
}

void Session::setConnectToPeer(bool on, TimePoint now) {
  s_.connectToPeer = on;
  if (!on) {
    nextConnect_.reset();
  } else if (!active_ && !outbound_ && !shutdown_) {
    nextConnect_ = now;
  }
}

PeerState Session::state() const {
  if (active_) return rxComplete_ ? PeerState::InSync : PeerState::Syncing;
  if (!conns_.empty() || nextConnect_) return PeerState::Connecting;
  return PeerState::Disconnected;
}

// ============================================================================ connections

void Session::send(Conn& c, MsgType type, std::string_view payload) {
  std::string frame = wire::sealFrame(c.version, type, c.txCounter++, payload, c.txKey);
  ++metrics_.framesSent;
  metrics_.bytesSent += frame.size();
  transport_.send(c.id, std::move(frame));
}

void Session::send(Conn& c, MsgType type, wire::FrameBuilder&& b) {
  std::string frame = std::move(b).seal(c.version, type, c.txCounter++, c.txKey);
  ++metrics_.framesSent;
  metrics_.bytesSent += frame.size();
  transport_.send(c.id, std::move(frame));
}

void Session::failTransfers() {
  for (const auto& [tid, deadline] : transfers_) {
    ++metrics_.transfersFailed;
    events_.onTransferDone(tid, false);
  }
  transfers_.clear();
}

void Session::drop(ConnId id, std::string_view reason, TimePoint now, bool closeTransport,
                   std::optional<wire::CloseCode> sayGoodbye, bool deferLoss) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  std::unique_ptr<Conn> c = std::move(it->second);
  conns_.erase(it);
  if (sayGoodbye && c->phase == Phase::Established)
    send(*c, MsgType::Close,
         payloadOf(wire::Close{*sayGoodbye, std::string(reason.substr(0, wire::kMaxReason))}));
  if (closeTransport) transport_.close(id);

  if (id == outbound_) {
    outbound_ = 0;
    if (c->phase != Phase::Established) ++connectFailures_;
  }
  if (id == active_) {
    active_ = 0;
    activeLost(reason, now, deferLoss);
  } else if (!active_) {
    scheduleReconnect(now);
  }
}

void Session::authFailure(ConnId id, std::string_view detail, TimePoint now) {
  ++metrics_.authFailures;
  events_.onAuthFailure(id, detail);
  drop(id, std::string("authentication failed: ") + std::string(detail), now, true);
}

void Session::protocolError(ConnId id, std::string_view detail, TimePoint now) {
  ++metrics_.protocolErrors;
  events_.onProtocolError(id, detail);
  drop(id, std::string("protocol error: ") + std::string(detail), now, true,
       wire::CloseCode::ProtocolError);
}

void Session::activeLost(std::string_view reason, TimePoint now, bool defer) {
  snapshot_.reset();
  resyncPending_ = false;
  cursor_ = 0;
  rxStarted_ = false;
  rxSnapshot_.reset();
  ackDue_.reset();
  failTransfers();
  if (shutdown_) return;
  for (auto& [id, c] : conns_) {
    if (c->phase == Phase::Established) {
      activate(*c, now, /*announce=*/false);
      return;
    }
  }
  if (defer) {
    lossDeadline_ = now + s_.handshakeTimeout;
    lossReason_ = std::string(reason);
  } else {
    ++metrics_.peerLost;
    events_.onPeerLost(reason);
  }
  connectFailures_ = 0;
  scheduleReconnect(now);
}

void Session::scheduleReconnect(TimePoint now) {
  if (!s_.connectToPeer || shutdown_ || active_ || outbound_) return;
  Duration delay = refused_ ? s_.reconnectMax : backoff(connectFailures_);
  TimePoint at = now + delay;
  if (!nextConnect_ || at < *nextConnect_) nextConnect_ = at;
}

// Randomised exponential back-off: attempt n waits uniformly between reconnect_min and
// min(reconnect_max, reconnect_min·2^(n+1)). The randomness keeps two nodes that lost each
// other at the same moment from reconnecting in lockstep (HAProxy peers use 50–2050 ms).
Duration Session::backoff(int failures) {
  int n = std::clamp(failures, 0, kMaxBackoffExponent);
  Duration lo = s_.reconnectMin;
  Duration hi = std::min(s_.reconnectMax, lo * (int64_t{2} << n));
  if (hi <= lo) return lo;
  std::uniform_int_distribution<int64_t> d(0, (hi - lo).count());
  return lo + Duration(d(rng_));
}

}  // namespace halb::statesync
