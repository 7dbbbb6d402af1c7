#pragma once
// The state-sync wire format (docs/statesync-protocol.md): framing, authentication tags and the
// message bodies. Pure functions over bytes, no state beyond the FrameReader's buffer: the
// session (session.h) decides what to send and when.
//
// Frame = 16-byte header | payload | 32-byte HMAC-SHA256 tag over header and payload.
// All integers are big-endian; variable-length integers are canonical LEB128.
#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/crypto.h"
#include "common/replication.h"
#include "common/result.h"

namespace halb::statesync::wire {

inline constexpr uint16_t kMagic = 0x4853;  // "HS"
inline constexpr uint8_t kVersionMin = 1;   // protocol versions this build speaks
inline constexpr uint8_t kVersionMax = 2;
// Version 2 adds TICKET_KEYS (TLS session-ticket keys); version 1 peers never see it.
inline constexpr uint8_t kVersionTicketKeys = 2;
inline constexpr size_t kHeaderSize = 16;
inline constexpr size_t kTagSize = 32;
inline constexpr size_t kNonceSize = 16;
// Largest payload of any frame. An entry that does not fit in one frame is refused by the
// encoder (and counted), never split.
inline constexpr size_t kMaxPayload = 1 << 20;
// Before a peer has authenticated it may send one frame of at most this size (HELLO).
inline constexpr size_t kMaxHandshakePayload = 1024;
inline constexpr size_t kMaxNodeName = 64;
inline constexpr size_t kMaxKey = 1024;               // stick key bytes
inline constexpr size_t kMaxQueueBytes = 128 * 1024;  // TCP_REPAIR queue copy, per direction
inline constexpr size_t kMaxAppState = 64 * 1024;
inline constexpr size_t kMaxReason = 256;
inline constexpr uint32_t kMaxBatch = 65536;    // entries per UPDATES / SNAPSHOT_CHUNK / TRANSFER
inline constexpr size_t kMaxTicketKeys = 128;   // per TICKET_KEYS message
inline constexpr size_t kTicketNonceSize = 12;  // AES-GCM nonce
inline constexpr size_t kTicketTagSize = 16;    // AES-GCM tag
using Nonce = std::array<uint8_t, kNonceSize>;
using Tag = Sha256Digest;
using Key = Sha256Digest;  // derived per-purpose keys are HMAC outputs

enum class MsgType : uint8_t {
  Challenge = 0x01,
  Hello = 0x02,
  HelloReply = 0x03,
  SnapshotBegin = 0x10,
  SnapshotChunk = 0x11,
  SnapshotEnd = 0x12,
  Resume = 0x13,
  Updates = 0x20,
  Ack = 0x21,
  Heartbeat = 0x22,
  Transfer = 0x30,
  TransferAck = 0x31,
  TicketKeys = 0x40,  // version 2
  Close = 0x7f,
};
const char* toString(MsgType t);
bool isKnown(uint8_t type);

struct Header {
  uint8_t version = kVersionMin;
  MsgType type = MsgType::Challenge;
  uint32_t length = 0;  // payload bytes (the tag follows them)
  uint64_t counter = 0;
  bool operator==(const Header&) const = default;
};

// ------------------------------------------------------------------------------- keys
// Key schedule (spec §4): the long-term key file K only ever keys HMAC; each session derives
// its own keys from both sides' nonces, so no frame of one session verifies in another.
Key challengeKey(std::span<const uint8_t> longTermKey);
struct SessionKeys {
  Key initiatorToResponder{};
  Key responderToInitiator{};
};
SessionKeys deriveSessionKeys(std::span<const uint8_t> longTermKey,
                              std::span<const uint8_t> challengePayload,
                              const Nonce& initiatorNonce);

// TICKET_KEYS bodies are encrypted (spec §14): the frame tag authenticates but does not hide,
// and a ticket key opens every session ticket sealed with it. The key is derived from the
// sending direction's frame key, so it is per connection and per direction.
Key ticketWrapKey(const Key& directionKey);

// ------------------------------------------------------------------------------- frames
// Builds one frame in place: reserve the header, append the payload, then seal.
class FrameBuilder {
 public:
  FrameBuilder() { buf_.resize(kHeaderSize); }
  std::string& payload() { return buf_; }  // append after the reserved header
  size_t payloadSize() const { return buf_.size() - kHeaderSize; }
  // Writes the header, appends the tag and returns the finished frame.
  std::string seal(uint8_t version, MsgType type, uint64_t counter, const Key& key) &&;

 private:
  std::string buf_;
};

std::string sealFrame(uint8_t version, MsgType type, uint64_t counter, std::string_view payload,
                      const Key& key);
void encodeHeader(const Header& h, uint8_t out[kHeaderSize]);
Result<Header> decodeHeader(std::span<const uint8_t> bytes, size_t maxPayload);

// A complete frame as received: views into the reader's buffer, valid until the next feed().
struct RawFrame {
  Header header;
  std::span<const uint8_t> headerBytes;
  std::span<const uint8_t> payload;
  std::span<const uint8_t> tag;
};
bool verifyFrame(const RawFrame& f, const Key& key);

// Splits a TCP byte stream into frames. Rejects a bad magic, unknown frame version or an
// oversized length as soon as the header is in, so a peer can never make it buffer more than
// one maximal frame.
class FrameReader {
 public:
  explicit FrameReader(size_t maxPayload = kMaxPayload) : maxPayload_(maxPayload) {}
  void setMaxPayload(size_t n) { maxPayload_ = n; }
  void feed(std::span<const uint8_t> data);
  // The next complete frame, nullopt when more bytes are needed, or an error (the stream is
  // unusable after an error).
  Result<std::optional<RawFrame>> next();
  size_t buffered() const { return buf_.size() - off_; }

 private:
  std::string buf_;
  size_t off_ = 0;
  size_t maxPayload_;
};

// ------------------------------------------------------------------------------- messages

// Sent by the accepting side first. Its tag (under challengeKey) lets the connecting side
// refuse a peer without the key before it reveals anything.
struct Challenge {
  uint8_t versionMin = kVersionMin;
  uint8_t versionMax = kVersionMax;
  Nonce nonce{};
  bool operator==(const Challenge&) const = default;
};

// What each side holds of the other's update stream, so a short break resumes from the
// resend window instead of a full snapshot. incarnation 0 = nothing.
struct ResumePoint {
  uint64_t incarnation = 0;
  uint64_t seq = 0;  // last sequence number applied
  bool operator==(const ResumePoint&) const = default;
};

struct Hello {
  Nonce nonce{};  // first on the wire: the responder needs it to derive the keys
  uint8_t version = kVersionMin;
  std::string nodeName;
  Sha256Digest fingerprint{};
  uint64_t incarnation = 0;  // the sender's outbound stream (random per process start)
  uint32_t epoch = 0;
  ResumePoint resume;
  bool operator==(const Hello&) const = default;
};

enum class HelloStatus : uint8_t {
  Ok = 0,
  FingerprintMismatch = 1,
  SameNodeName = 2,
  VersionUnsupported = 3,
};
const char* toString(HelloStatus s);

struct HelloReply {
  HelloStatus status = HelloStatus::Ok;
  std::string nodeName;
  Sha256Digest fingerprint{};
  uint64_t incarnation = 0;
  uint32_t epoch = 0;
  ResumePoint resume;
  bool operator==(const HelloReply&) const = default;
};

enum class SnapshotReason : uint8_t { NewSession = 0, Resync = 1 };
const char* toString(SnapshotReason r);

struct SnapshotBegin {
  uint32_t snapshotId = 0;
  uint64_t nextSeq = 0;  // the update stream continues at this sequence number
  SnapshotReason reason = SnapshotReason::NewSession;
  bool operator==(const SnapshotBegin&) const = default;
};

struct SnapshotEnd {
  uint32_t snapshotId = 0;
  uint64_t entries = 0;  // how many entries the chunks carried, checked by the receiver
  bool operator==(const SnapshotEnd&) const = default;
};

struct Resume {
  uint64_t nextSeq = 0;
  bool operator==(const Resume&) const = default;
};

struct Ack {
  uint64_t seq = 0;  // cumulative: every update up to and including seq is applied
  bool operator==(const Ack&) const = default;
};

struct Heartbeat {
  uint64_t timeUs = 0;       // sender's monotonic clock
  uint64_t echoTimeUs = 0;   // timeUs of the last heartbeat received from the peer; 0 = none
  uint32_t echoDelayUs = 0;  // how long the sender held that heartbeat before this one
  uint32_t epoch = 0;
  bool operator==(const Heartbeat&) const = default;
};

struct TransferAck {
  uint64_t transferId = 0;
  uint32_t applied = 0;
  uint8_t status = 0;  // 0 = stored
  bool operator==(const TransferAck&) const = default;
};

enum class CloseCode : uint8_t {
  Shutdown = 0,
  ProtocolError = 1,
  Replaced = 2,  // another connection to the same peer won (simultaneous connect)
  Refused = 3,
};
const char* toString(CloseCode c);

struct Close {
  CloseCode code = CloseCode::Shutdown;
  std::string reason;
  bool operator==(const Close&) const = default;
};

// One replicated entry. Which of stick/conn is meaningful follows from kind.
struct Entry {
  repl::ChangeKind kind = repl::ChangeKind::StickUpsert;
  uint64_t ageUs = 0;  // UPDATES only: time since the change, at the sender, when framed
  repl::StickEntry stick;
  repl::ConnEntry conn;
};
bool isStickKind(repl::ChangeKind k);

// Payload encoders append to `out`.
void encode(std::string& out, const Challenge& m);
void encode(std::string& out, const Hello& m);
void encode(std::string& out, const HelloReply& m);
void encode(std::string& out, const SnapshotBegin& m);
void encode(std::string& out, const SnapshotEnd& m);
void encode(std::string& out, const Resume& m);
void encode(std::string& out, const Ack& m);
void encode(std::string& out, const Heartbeat& m);
void encode(std::string& out, const TransferAck& m);
void encode(std::string& out, const Close& m);

// Entry bodies (without kind and age), as the session stores them in its resend window.
// False when a field exceeds its wire limit (the entry cannot be replicated).
bool encodeEntryBody(std::string& out, repl::ChangeKind kind, const repl::StickEntry& s,
                     const repl::ConnEntry& c);
bool encodeConnEntry(std::string& out, const repl::ConnEntry& c);

// Batches (UPDATES, SNAPSHOT_CHUNK, TRANSFER) are written as a fixed prefix, then entries; the
// count is patched at the end so the builder needs no second pass.
class BatchWriter {
 public:
  // Starts an UPDATES payload at the end of `out`; sendTimeUs is the sender's monotonic clock
  // when it frames the batch (the receiver's one-way delay estimate, spec §11).
  static BatchWriter updates(std::string& out, uint64_t firstSeq, uint64_t sendTimeUs);
  static BatchWriter snapshotChunk(std::string& out, uint32_t snapshotId);
  static BatchWriter transfer(std::string& out, uint64_t transferId);
  // UPDATES entries carry kind and age; chunk entries carry kind; transfer entries neither.
  void addUpdate(repl::ChangeKind kind, uint64_t ageUs, std::string_view body);
  void addChunkEntry(repl::ChangeKind kind, std::string_view body);
  void addTransferEntry(std::string_view connBody);
  uint32_t count() const { return count_; }
  void finish();

 private:
  BatchWriter(std::string& out, size_t countPos) : out_(out), countPos_(countPos) {}
  std::string& out_;
  size_t countPos_;
  uint32_t count_ = 0;
};

// TICKET_KEYS: nonce [12] | AES-256-GCM(count u8, count x (name [16], aes_key [32],
// hmac_key [32], age_ms varint)) | GCM tag [16]. `nonce` must never repeat under one key
// (the session draws it at random). False when there are too many keys.
bool encodeTicketKeys(std::string& out, std::span<const repl::TicketKey> keys, const Key& wrapKey,
                      std::span<const uint8_t, kTicketNonceSize> nonce);
Result<std::vector<repl::TicketKey>> decodeTicketKeys(std::span<const uint8_t> p,
                                                      const Key& wrapKey);

// Payload decoders: reject truncation, trailing bytes, out-of-range values and non-canonical
// integers, with a reason that names the field.
Result<Challenge> decodeChallenge(std::span<const uint8_t> p);
Result<Hello> decodeHello(std::span<const uint8_t> p);
Result<HelloReply> decodeHelloReply(std::span<const uint8_t> p);
Result<SnapshotBegin> decodeSnapshotBegin(std::span<const uint8_t> p);
Result<SnapshotEnd> decodeSnapshotEnd(std::span<const uint8_t> p);
Result<Resume> decodeResume(std::span<const uint8_t> p);
Result<Ack> decodeAck(std::span<const uint8_t> p);
Result<Heartbeat> decodeHeartbeat(std::span<const uint8_t> p);
Result<TransferAck> decodeTransferAck(std::span<const uint8_t> p);
Result<Close> decodeClose(std::span<const uint8_t> p);

struct Updates {
  uint64_t firstSeq = 0;
  uint64_t sendTimeUs = 0;
  std::vector<Entry> entries;
};
struct SnapshotChunk {
  uint32_t snapshotId = 0;
  std::vector<Entry> entries;
};
struct Transfer {
  uint64_t transferId = 0;
  std::vector<repl::ConnEntry> entries;
};
Result<Updates> decodeUpdates(std::span<const uint8_t> p);
Result<SnapshotChunk> decodeSnapshotChunk(std::span<const uint8_t> p);
Result<Transfer> decodeTransfer(std::span<const uint8_t> p);

// The responder reads the initiator's nonce before it can verify the HELLO's tag.
std::optional<Nonce> peekHelloNonce(std::span<const uint8_t> payload);

// Helpers shared with tests.
inline std::span<const uint8_t> bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

}  // namespace halb::statesync::wire
