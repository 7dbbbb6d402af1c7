#pragma once
// The state-sync protocol engine for one peer (docs/statesync-protocol.md), pure: transport
// events, local changes and `now` in; frames, connects and closes out through the Transport
// port; peer state changes through the Events port. No sockets, no clock, no threads.
//
// One Session lives as long as the process. It survives connections: the outbound resend log,
// what it holds of the peer's stream, reconnection back-off. At most one authenticated
// connection is *active* (carries replication); others are handshakes in progress, or the
// loser of a simultaneous connect about to be closed.
#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/crypto.h"
#include "common/prom.h"
#include "common/replication.h"
#include "common/time.h"
#include "statesync/codec.h"
#include "statesync/conn_replica.h"
#include "statesync/outbound.h"

namespace halb::statesync {

using namespace std::chrono_literals;

using ConnId = uint64_t;

// What the session needs from the network. The Service implements it over libuv; tests wire
// two sessions back to back through an in-memory pipe.
class Transport {
 public:
  virtual ~Transport() = default;
  // Starts an outbound connection to the peer; its outcome comes back through
  // Session::onConnected or onConnectFailed with the returned id.
  virtual ConnId connect() = 0;
  virtual void send(ConnId id, std::string frame) = 0;
  // Bytes handed to send() and not yet taken by the kernel.
  virtual size_t queuedBytes(ConnId id) const = 0;
  // Sends what is queued, then closes. The session has already forgotten the connection and
  // expects no onClosed for it.
  virtual void close(ConnId id) = 0;
};

// What the session reports. Every method has a no-op default.
class Events {
 public:
  virtual ~Events() = default;
  virtual void onPeerUp(std::string_view /*peerName*/) {}
  // The active connection broke (or the peer went silent) and no other took its place.
  virtual void onPeerLost(std::string_view /*reason*/) {}
  // A full copy of the peer's tables is applied (end of a snapshot, or a resumed stream).
  virtual void onSyncComplete() {}
  // A connection failed authentication; nothing it sent was used.
  virtual void onAuthFailure(ConnId, std::string_view /*detail*/) {}
  // An authenticated peer refused us, or we refused it (fingerprint, name, version).
  virtual void onRefused(ConnId, std::string_view /*reason*/) {}
  virtual void onProtocolError(ConnId, std::string_view /*detail*/) {}
  // Changes were lost (outbound queue full, change queue overflow): a snapshot follows.
  virtual void onResync(std::string_view /*reason*/) {}
  virtual void onTransferDone(uint64_t /*transferId*/, bool /*acknowledged*/) {}
  virtual void onTransferReceived(uint64_t /*transferId*/, size_t /*entries*/) {}
};

struct Settings {
  std::string nodeName;
  Sha256Digest fingerprint{};  // configFingerprint() of the replicated configuration
  std::vector<uint8_t> key;    // shared secret (loadKeyFile)
  bool connectToPeer = true;   // false: only accept
  Duration heartbeat = 100ms;
  Duration peerTimeout = 1s;  // no frame for this long: the connection is dead
  Duration handshakeTimeout = 2s;
  Duration reconnectMin = 50ms;
  Duration reconnectMax = 2s;
  Duration batchDelay = 1ms;      // a change waits at most this long for companions
  size_t batchEntries = 512;      // ...or until this many are pending
  size_t frameBytes = 64 * 1024;  // UPDATES / SNAPSHOT_CHUNK payload target
  size_t queueEntries = 65536;    // outbound log bound (unsent + unacknowledged)
  size_t queueBytes = 64u << 20;
  size_t highWatermark = 1u << 20;  // stop framing while the transport holds this much
  Duration ackDelay = 5ms;
  uint64_t ackEvery = 4096;
  size_t touchCacheSlots = 1u << 16;
  // Below the stick table's own touchFraction (0.25), so the touches the table decides to
  // announce always pass; this only catches a table that announces too often.
  double touchRefresh = 0.2;
  size_t maxHandshakes = 4;  // concurrent unauthenticated inbound connections
  Duration transferTimeout = 2s;
  uint64_t seed = 0;  // reconnect jitter; 0 = from `random`
  // Randomness for nonces and the incarnation id; default: common/crypto randomBytes.
  std::function<void(std::span<uint8_t>)> random;
};

enum class PeerState { Disconnected, Connecting, Syncing, InSync };
const char* toString(PeerState s);

struct Metrics {
  // outbound
  uint64_t changesOffered = 0;
  uint64_t changesDiscarded = 0;  // no peer and nothing to resume: the next snapshot covers them
  uint64_t entriesSent = 0;
  uint64_t entriesTooLarge = 0;
  uint64_t overflowDrops = 0;  // entries lost because the peer was too slow
  uint64_t resyncs = 0;
  uint64_t snapshotsSent = 0;
  uint64_t snapshotEntriesSent = 0;
  uint64_t resumes = 0;  // sessions that continued from the resend log
  // inbound
  uint64_t entriesReceived = 0;
  uint64_t entriesApplied = 0;
  uint64_t entriesStale = 0;  // older than what is held (last writer wins)
  uint64_t snapshotsReceived = 0;
  uint64_t snapshotEntriesReceived = 0;
  uint64_t lastSnapshotEntries = 0;
  Duration lastSnapshotDuration{};
  // link
  uint64_t framesSent = 0, framesReceived = 0;
  uint64_t bytesSent = 0, bytesReceived = 0;
  uint64_t connectAttempts = 0;
  uint64_t sessions = 0;
  uint64_t peerLost = 0;
  uint64_t authFailures = 0;
  uint64_t refusals = 0;
  uint64_t protocolErrors = 0;
  uint64_t transfersSent = 0, transfersAcked = 0, transfersFailed = 0, transfersReceived = 0;
};

// Snapshot-duration buckets: a small table takes milliseconds, a million entries seconds.
std::span<const double> snapshotDurationBuckets();

class Session {
 public:
  Session(Settings settings, Transport& transport, repl::TableSource& source, repl::TableSink& sink,
          ConnReplica& replica, Events& events, TimePoint now);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // ---- transport events
  void onConnected(ConnId id, TimePoint now);      // an outbound connect() succeeded
  void onConnectFailed(ConnId id, TimePoint now);  // ...or failed
  void onAccepted(ConnId id, TimePoint now);       // an inbound connection arrived
  void onData(ConnId id, std::span<const uint8_t> data, TimePoint now);
  void onClosed(ConnId id, std::string_view reason, TimePoint now);
  void onWritable(TimePoint now);  // the transport drained some bytes
  void onTick(TimePoint now);
  // When onTick must run next (TimePoint::max() if nothing is scheduled).
  TimePoint nextDeadline() const;

  // ---- local side
  void offer(const repl::Change& change, TimePoint now);
  // Local changes were lost before reaching us (a change queue overflowed): the peer gets a
  // fresh snapshot.
  void requestResync(std::string_view reason, TimePoint now);
  void setEpoch(uint32_t epoch) { epoch_ = epoch; }
  // Whether to initiate connections (a node without a peer address only accepts).
  void setConnectToPeer(bool on, TimePoint now);
  // Sends `entries` in one TRANSFER frame; onTransferDone(id, true) once the peer stored them.
  // Returns 0 (and reports nothing) when there is no peer or the entries do not fit a frame.
  uint64_t transfer(const std::vector<repl::ConnEntry>& entries, TimePoint now);
  // Says goodbye on every connection and stops reconnecting.
  void shutdown(TimePoint now);

  // ---- state
  PeerState state() const;
  bool inSync() const { return active_ != 0 && rxComplete_; }
  bool peerConnected() const { return active_ != 0; }
  const std::string& peerName() const { return peerName_; }
  uint32_t epoch() const { return epoch_; }
  uint32_t peerEpoch() const { return peerEpoch_; }
  // The highest epoch seen in any version the peer sent (input to the next epoch).
  uint32_t highestEpochSeen() const { return maxEpochSeen_; }
  uint64_t incarnation() const { return incarnation_; }
  std::optional<Duration> rtt() const { return srtt_; }
  // The peer's monotonic clock minus ours, from the heartbeat exchange (NTP's formula on the
  // lowest-RTT recent sample); nullopt until a heartbeat made the round trip.
  std::optional<Duration> clockOffset() const;
  size_t outboundQueued() const { return log_.size() + coalescer_.size(); }
  bool snapshotSending() const { return snapshot_ != nullptr; }
  ConnId activeConnection() const { return active_; }
  const Metrics& metrics() const { return metrics_; }
  const Coalescer::Stats& coalescing() const { return coalescer_.stats(); }
  // change -> applied here: the age the sender stamped when framing, plus the frame's one-way
  // delay from its send time and the clock offset (spec §11).
  const Histogram& lagHistogram() const { return lag_; }
  const Histogram& snapshotDurationHistogram() const { return snapshotDuration_; }

 private:
  enum class Phase { Connecting, AwaitChallenge, AwaitHello, AwaitReply, Established };
  struct Conn;
  struct SnapshotSender;

  // handshake
  void handleFrame(Conn& c, const wire::RawFrame& f, TimePoint now);
  void onChallenge(Conn& c, const wire::RawFrame& f, TimePoint now);
  void onHello(Conn& c, const wire::RawFrame& f, TimePoint now);
  void onHelloReply(Conn& c, const wire::RawFrame& f, TimePoint now);
  std::optional<std::string> checkPeer(std::string_view name, const Sha256Digest& fp,
                                       wire::HelloStatus* status) const;
  void established(Conn& c, TimePoint now);
  void activate(Conn& c, TimePoint now, bool announce);
  bool prefer(const Conn& candidate, const Conn& current) const;
  wire::ResumePoint resumeOffer() const;

  // established traffic
  void dispatch(Conn& c, const wire::RawFrame& f, TimePoint now);
  void onSnapshotBegin(const wire::SnapshotBegin& m, TimePoint now);
  void onSnapshotChunk(Conn& c, wire::SnapshotChunk&& m, TimePoint now);
  void onSnapshotEnd(Conn& c, const wire::SnapshotEnd& m, TimePoint now);
  void onResume(Conn& c, const wire::Resume& m, TimePoint now);
  void onUpdates(Conn& c, wire::Updates&& m, TimePoint now);
  void onHeartbeat(Conn& c, const wire::Heartbeat& m, TimePoint now);
  void onTransfer(Conn& c, wire::Transfer&& m, TimePoint now);
  void onClose(Conn& c, const wire::Close& m, TimePoint now);
  void applyEntry(const wire::Entry& e, TimePoint now);
  void sendAck(Conn& c);

  // outbound
  void flush(TimePoint now);
  void breakOutbound(std::string_view reason, uint64_t alsoLost, bool countDrops);
  void pump(TimePoint now);
  void startSnapshot(Conn& c, wire::SnapshotReason reason, TimePoint now);
  void sendUpdates(Conn& c, TimePoint now);
  void sendChunk(Conn& c, TimePoint now);
  void sendHeartbeat(Conn& c, TimePoint now);

  // connections
  void send(Conn& c, wire::MsgType type, std::string_view payload);
  void send(Conn& c, wire::MsgType type, wire::FrameBuilder&& b);
  void drop(ConnId id, std::string_view reason, TimePoint now, bool closeTransport,
            std::optional<wire::CloseCode> sayGoodbye = std::nullopt, bool deferLoss = false);
  void authFailure(ConnId id, std::string_view detail, TimePoint now);
  void protocolError(ConnId id, std::string_view detail, TimePoint now);
  void activeLost(std::string_view reason, TimePoint now, bool defer);
  void failTransfers();
  void scheduleReconnect(TimePoint now);
  Duration backoff(int failures);
  Conn* find(ConnId id);
  size_t handshakesInProgress() const;

  Settings s_;
  Transport& transport_;
  repl::TableSource& source_;
  repl::TableSink& sink_;
  ConnReplica& replica_;
  Events& events_;
  wire::Key challengeKey_;
  std::mt19937_64 rng_;
  uint64_t incarnation_ = 0;
  uint32_t epoch_ = 0;
  uint32_t peerEpoch_ = 0;
  uint32_t maxEpochSeen_ = 0;
  std::string peerName_;
  bool shutdown_ = false;

  std::map<ConnId, std::unique_ptr<Conn>> conns_;
  ConnId active_ = 0;
  ConnId outbound_ = 0;  // the outbound attempt in progress, if any
  int connectFailures_ = 0;
  bool refused_ = false;  // the last handshake was refused: retry slowly
  std::optional<TimePoint> nextConnect_;
  std::optional<TimePoint> lossDeadline_;  // a replaced connection's successor is due by then
  std::string lossReason_;

  // outbound stream
  Coalescer coalescer_;
  OutboundLog log_;
  bool suspended_ = true;  // no peer and no resume possible: changes are not kept
  bool resyncPending_ = false;
  uint64_t cursor_ = 0;  // next log sequence number to frame on the active connection
  std::unique_ptr<SnapshotSender> snapshot_;
  uint32_t nextSnapshotId_ = 1;
  std::vector<repl::Change> drainBuf_;

  // inbound stream (what we hold of the peer's)
  uint64_t peerIncarnation_ = 0;
  uint64_t rxExpected_ = 0;  // next sequence number to apply
  bool rxComplete_ = false;  // a full copy is applied and nothing is missing since
  bool rxStarted_ = false;   // the active connection's stream began (SNAPSHOT_BEGIN/RESUME)
  struct RxSnapshot {
    uint32_t id = 0;
    uint64_t entries = 0;
    TimePoint startedAt{};
  };
  std::optional<RxSnapshot> rxSnapshot_;
  uint64_t lastAckSent_ = 0;
  std::optional<TimePoint> ackDue_;
  std::optional<Duration> srtt_;
  struct OffsetSample {
    int64_t rttUs = 0;
    int64_t offsetUs = 0;
  };
  std::array<OffsetSample, 16> offsetSamples_{};
  size_t offsetSampleCount_ = 0;

  std::map<uint64_t, TimePoint> transfers_;  // id -> deadline
  uint64_t nextTransferId_ = 1;

  Metrics metrics_;
  Histogram lag_;
  Histogram snapshotDuration_;
};

}  // namespace halb::statesync
