#include "statesync/codec.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cstring>
#include <limits>

namespace halb::statesync::wire {

using repl::ChangeKind;
using repl::ConnEntry;
using repl::StickEntry;
using repl::TcpRepairState;

namespace {

// Encoders clamp times to these (so they never produce what a decoder refuses); decoders
// refuse larger values, which no honest sender produces.
constexpr uint64_t kMaxTtlMs = 100ull * 24 * 3600 * 1000;  // 100 days
constexpr uint64_t kMaxAgeUs = 3600ull * 1000 * 1000;      // 1 hour
constexpr uint8_t kMaxWscale = 14;                         // RFC 7323 §2.3

// --------------------------------------------------------------------------- writing

void putU8(std::string& o, uint8_t v) {
  o.push_back(static_cast<char>(v));
}
void putU16(std::string& o, uint16_t v) {
  putU8(o, static_cast<uint8_t>(v >> 8));
  putU8(o, static_cast<uint8_t>(v));
}
void putU32(std::string& o, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) putU8(o, static_cast<uint8_t>(v >> s));
}
void putU64(std::string& o, uint64_t v) {
  for (int s = 56; s >= 0; s -= 8) putU8(o, static_cast<uint8_t>(v >> s));
}
void putVarint(std::string& o, uint64_t v) {
  while (v >= 0x80) {
    putU8(o, static_cast<uint8_t>(v | 0x80));
    v >>= 7;
  }
  putU8(o, static_cast<uint8_t>(v));
}
void putRaw(std::string& o, std::span<const uint8_t> b) {
  o.append(reinterpret_cast<const char*>(b.data()), b.size());
}
void putBlob(std::string& o, std::string_view s) {
  putVarint(o, s.size());
  o.append(s);
}
void putVersion(std::string& o, const repl::Version& v) {
  putVarint(o, v.epoch);
  putVarint(o, v.seq);
}
void putAddress(std::string& o, const SocketAddress& a) {
  putU8(o, a.ip.isV4() ? 4 : 6);
  putRaw(o, {a.ip.data(), a.ip.size()});
  putU16(o, a.port);
}
void patchU32(std::string& o, size_t pos, uint32_t v) {
  for (int i = 0; i < 4; ++i)
    o[pos + static_cast<size_t>(i)] = static_cast<char>(v >> (24 - 8 * i));
}

uint64_t ttlMillis(Duration d) {
  if (d.count() <= 0) return 0;
  auto ms = static_cast<uint64_t>(std::chrono::duration_cast<milliseconds>(d).count());
  return std::min(ms, kMaxTtlMs);
}

uint8_t kindToWire(ChangeKind k) {
  return static_cast<uint8_t>(static_cast<uint8_t>(k) + 1);
}
std::optional<ChangeKind> kindFromWire(uint8_t v) {
  if (v < 1 || v > 6) return std::nullopt;
  return static_cast<ChangeKind>(v - 1);
}

// --------------------------------------------------------------------------- reading

// A bounds-checked cursor. The first failure records a reason and makes every later read
// fail too, so decoders can read a whole message and check once.
class Reader {
 public:
  explicit Reader(std::span<const uint8_t> b) : b_(b) {}
  bool ok() const { return err_.empty(); }
  const std::string& error() const { return err_; }
  bool fail(std::string why) {
    if (err_.empty()) err_ = std::move(why);
    return false;
  }
  bool need(size_t n, const char* what) {
    if (!ok()) return false;
    if (b_.size() - pos_ < n) return fail(std::string(what) + ": truncated");
    return true;
  }
  uint8_t u8(const char* what) {
    if (!need(1, what)) return 0;
    return b_[pos_++];
  }
  uint16_t u16(const char* what) {
    if (!need(2, what)) return 0;
    uint16_t v = static_cast<uint16_t>((b_[pos_] << 8) | b_[pos_ + 1]);
    pos_ += 2;
    return v;
  }
  uint32_t u32(const char* what) {
    if (!need(4, what)) return 0;
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v = (v << 8) | b_[pos_++];
    return v;
  }
  uint64_t u64(const char* what) {
    if (!need(8, what)) return 0;
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | b_[pos_++];
    return v;
  }
  // Canonical LEB128: at most 10 bytes, no overflow, no redundant trailing zero group.
  uint64_t varint(const char* what, uint64_t max = std::numeric_limits<uint64_t>::max()) {
    uint64_t v = 0;
    for (int i = 0; i < 10; ++i) {
      if (!need(1, what)) return 0;
      uint8_t byte = b_[pos_++];
      if (i == 9 && byte > 1) return fail(std::string(what) + ": integer overflows 64 bits"), 0;
      v |= static_cast<uint64_t>(byte & 0x7f) << (7 * i);
      if (!(byte & 0x80)) {
        if (byte == 0 && i > 0) return fail(std::string(what) + ": non-canonical integer"), 0;
        if (v > max)
          return fail(std::string(what) + ": " + std::to_string(v) + " exceeds " +
                      std::to_string(max)),
                 0;
        return v;
      }
    }
    return fail(std::string(what) + ": integer longer than 10 bytes"), 0;
  }
  template <size_t N>
  void raw(std::array<uint8_t, N>& out, const char* what) {
    if (!need(N, what)) return;
    std::memcpy(out.data(), b_.data() + pos_, N);
    pos_ += N;
  }
  std::string blob(const char* what, size_t max) {
    uint64_t n = varint(what, max);
    if (!need(n, what)) return {};
    std::string s(reinterpret_cast<const char*>(b_.data() + pos_), n);
    pos_ += n;
    return s;
  }
  repl::Version version(const char* what) {
    repl::Version v;
    v.epoch = static_cast<uint32_t>(varint(what, std::numeric_limits<uint32_t>::max()));
    v.seq = varint(what);
    return v;
  }
  SocketAddress address(const char* what) {
    SocketAddress a;
    uint8_t fam = u8(what);
    if (!ok()) return a;
    size_t len = fam == 4 ? 4 : fam == 6 ? 16 : 0;
    if (len == 0) return fail(std::string(what) + ": address family " + std::to_string(fam)), a;
    if (!need(len, what)) return a;
    a.ip = IpAddress::fromBytes(b_.data() + pos_, len);
    pos_ += len;
    a.port = u16(what);
    return a;
  }
  bool atEnd() const { return pos_ == b_.size(); }
  // Every decoder ends with this: a message with trailing bytes is malformed.
  bool finish(const char* msg) {
    if (ok() && !atEnd())
      fail(std::string(msg) + ": " + std::to_string(b_.size() - pos_) + " trailing bytes");
    return ok();
  }

 private:
  std::span<const uint8_t> b_;
  size_t pos_ = 0;
  std::string err_;
};

template <class T>
Result<T> done(Reader& r, const char* msg, T value) {
  if (!r.finish(msg)) return Error{r.error()};
  return value;
}

bool validName(const std::string& n) {
  if (n.empty() || n.size() > kMaxNodeName) return false;
  return std::all_of(n.begin(), n.end(), [](char c) { return c > 0x20 && c < 0x7f; });
}

std::string readName(Reader& r) {
  uint8_t len = r.u8("node name");
  std::string s;
  if (!r.need(len, "node name")) return s;
  for (int i = 0; i < len; ++i) s.push_back(static_cast<char>(r.u8("node name")));
  if (r.ok() && !validName(s)) r.fail("node name: must be 1..64 printable characters");
  return s;
}

void putName(std::string& o, const std::string& n) {
  size_t len = std::min(n.size(), kMaxNodeName);
  putU8(o, static_cast<uint8_t>(len));
  o.append(n, 0, len);
}

TcpRepairState readTcp(Reader& r) {
  TcpRepairState t;
  t.sndSeq = r.u32("tcp.snd_seq");
  t.rcvSeq = r.u32("tcp.rcv_seq");
  t.mss = r.u32("tcp.mss");
  t.options = r.u8("tcp.options");
  t.sndWscale = r.u8("tcp.snd_wscale");
  t.rcvWscale = r.u8("tcp.rcv_wscale");
  if (r.ok() && (t.sndWscale > kMaxWscale || t.rcvWscale > kMaxWscale))
    r.fail("tcp: window scale above 14");
  t.tsval = r.u32("tcp.tsval");
  t.sndWl1 = r.u32("tcp.snd_wl1");
  t.sndWnd = r.u32("tcp.snd_wnd");
  t.maxWindow = r.u32("tcp.max_window");
  t.rcvWnd = r.u32("tcp.rcv_wnd");
  t.rcvWup = r.u32("tcp.rcv_wup");
  t.sendQueue = r.blob("tcp.send_queue", kMaxQueueBytes);
  t.recvQueue = r.blob("tcp.recv_queue", kMaxQueueBytes);
  return t;
}

bool putTcp(std::string& o, const TcpRepairState& t) {
  if (t.sendQueue.size() > kMaxQueueBytes || t.recvQueue.size() > kMaxQueueBytes) return false;
  if (t.sndWscale > kMaxWscale || t.rcvWscale > kMaxWscale) return false;
  putU32(o, t.sndSeq);
  putU32(o, t.rcvSeq);
  putU32(o, t.mss);
  putU8(o, t.options);
  putU8(o, t.sndWscale);
  putU8(o, t.rcvWscale);
  putU32(o, t.tsval);
  putU32(o, t.sndWl1);
  putU32(o, t.sndWnd);
  putU32(o, t.maxWindow);
  putU32(o, t.rcvWnd);
  putU32(o, t.rcvWup);
  putBlob(o, t.sendQueue);
  putBlob(o, t.recvQueue);
  return true;
}

constexpr uint8_t kHasClientTcp = 1;
constexpr uint8_t kHasServerTcp = 2;

ConnEntry readConn(Reader& r) {
  ConnEntry c;
  c.id = r.u64("conn.id");
  c.frontendId = r.u64("conn.frontend_id");
  c.backendId = r.u64("conn.backend_id");
  c.serverId = r.u64("conn.server_id");
  c.client = r.address("conn.client");
  c.frontend = r.address("conn.frontend");
  c.serverLocal = r.address("conn.server_local");
  c.server = r.address("conn.server");
  c.startedUnixMs =
      static_cast<int64_t>(r.varint("conn.started", std::numeric_limits<int64_t>::max()));
  c.bytesIn = r.varint("conn.bytes_in");
  c.bytesOut = r.varint("conn.bytes_out");
  uint8_t phase = r.u8("conn.phase");
  if (r.ok() && phase > static_cast<uint8_t>(repl::ConnPhase::Closed))
    r.fail("conn.phase: unknown value");
  c.phase = static_cast<repl::ConnPhase>(phase);
  uint8_t flags = r.u8("conn.flags");
  if (r.ok() && (flags & ~(kHasClientTcp | kHasServerTcp))) r.fail("conn.flags: unknown bits");
  if (r.ok() && (flags & kHasClientTcp)) c.clientTcp = readTcp(r);
  if (r.ok() && (flags & kHasServerTcp)) c.serverTcp = readTcp(r);
  c.appState = r.blob("conn.app_state", kMaxAppState);
  c.version = r.version("conn.version");
  return c;
}

StickEntry readStick(Reader& r, bool withTarget) {
  StickEntry s;
  s.backendId = r.u64("stick.backend_id");
  s.key = r.blob("stick.key", kMaxKey);
  if (withTarget) {
    s.serverId = r.u64("stick.server_id");
    s.ttlLeft = milliseconds(r.varint("stick.ttl", kMaxTtlMs));
  }
  s.version = r.version("stick.version");
  return s;
}

Entry readEntryBody(Reader& r, ChangeKind kind) {
  Entry e;
  e.kind = kind;
  switch (kind) {
    case ChangeKind::StickUpsert:
    case ChangeKind::StickTouch:
      e.stick = readStick(r, true);
      break;
    case ChangeKind::StickDelete:
      e.stick = readStick(r, false);
      break;
    case ChangeKind::ConnOpen:
    case ChangeKind::ConnUpdate:
      e.conn = readConn(r);
      break;
    case ChangeKind::ConnClose:
      e.conn.id = r.u64("conn.id");
      e.conn.phase = repl::ConnPhase::Closed;
      e.conn.version = r.version("conn.version");
      break;
  }
  return e;
}

uint32_t readCount(Reader& r, const char* what) {
  uint32_t n = r.u32(what);
  if (r.ok() && (n == 0 || n > kMaxBatch))
    r.fail(std::string(what) + ": must be 1.." + std::to_string(kMaxBatch));
  return n;
}

}  // namespace

// ------------------------------------------------------------------------------ names

const char* toString(MsgType t) {
  switch (t) {
    case MsgType::Challenge:
      return "CHALLENGE";
    case MsgType::Hello:
      return "HELLO";
    case MsgType::HelloReply:
      return "HELLO_REPLY";
    case MsgType::SnapshotBegin:
      return "SNAPSHOT_BEGIN";
    case MsgType::SnapshotChunk:
      return "SNAPSHOT_CHUNK";
    case MsgType::SnapshotEnd:
      return "SNAPSHOT_END";
    case MsgType::Resume:
      return "RESUME";
    case MsgType::Updates:
      return "UPDATES";
    case MsgType::Ack:
      return "ACK";
    case MsgType::Heartbeat:
      return "HEARTBEAT";
    case MsgType::Transfer:
      return "TRANSFER";
    case MsgType::TransferAck:
      return "TRANSFER_ACK";
    case MsgType::TicketKeys:
      return "TICKET_KEYS";
    case MsgType::Close:
      return "CLOSE";
  }
  return "?";
}

bool isKnown(uint8_t t) {
  switch (static_cast<MsgType>(t)) {
    case MsgType::Challenge:
    case MsgType::Hello:
    case MsgType::HelloReply:
    case MsgType::SnapshotBegin:
    case MsgType::SnapshotChunk:
    case MsgType::SnapshotEnd:
    case MsgType::Resume:
    case MsgType::Updates:
    case MsgType::Ack:
    case MsgType::Heartbeat:
    case MsgType::Transfer:
    case MsgType::TransferAck:
    case MsgType::TicketKeys:
    case MsgType::Close:
      return true;
  }
  return false;
}

const char* toString(HelloStatus s) {
  switch (s) {
    case HelloStatus::Ok:
      return "ok";
    case HelloStatus::FingerprintMismatch:
      return "config fingerprint mismatch";
    case HelloStatus::SameNodeName:
      return "both nodes have the same name";
    case HelloStatus::VersionUnsupported:
      return "protocol version unsupported";
  }
  return "?";
}

const char* toString(SnapshotReason r) {
  switch (r) {
    case SnapshotReason::NewSession:
      return "new_session";
    case SnapshotReason::Resync:
      return "resync";
  }
  return "?";
}

const char* toString(CloseCode c) {
  switch (c) {
    case CloseCode::Shutdown:
      return "shutdown";
    case CloseCode::ProtocolError:
      return "protocol_error";
    case CloseCode::Replaced:
      return "replaced";
    case CloseCode::Refused:
      return "refused";
  }
  return "?";
}

bool isStickKind(ChangeKind k) {
  return k == ChangeKind::StickUpsert || k == ChangeKind::StickTouch ||
         k == ChangeKind::StickDelete;
}

// ------------------------------------------------------------------------------ keys

namespace {
std::span<const uint8_t> label(std::string_view s) {
  return bytes(s);
}
}  // namespace

Key challengeKey(std::span<const uint8_t> k) {
  return hmacSha256(k, label("halb statesync v1 challenge"));
}

SessionKeys deriveSessionKeys(std::span<const uint8_t> k, std::span<const uint8_t> challengePayload,
                              const Nonce& initiatorNonce) {
  // Binding the whole CHALLENGE payload (the responder's nonce and version range) into the
  // session key means a tampered CHALLENGE yields keys the responder does not have.
  Key session = hmacSha256(k, {label("halb statesync v1 session"), challengePayload,
                               std::span<const uint8_t>(initiatorNonce)});
  SessionKeys out;
  out.initiatorToResponder = hmacSha256(session, label("initiator to responder"));
  out.responderToInitiator = hmacSha256(session, label("responder to initiator"));
  return out;
}

// ------------------------------------------------------------------------------ frames

void encodeHeader(const Header& h, uint8_t out[kHeaderSize]) {
  out[0] = static_cast<uint8_t>(kMagic >> 8);
  out[1] = static_cast<uint8_t>(kMagic);
  out[2] = h.version;
  out[3] = static_cast<uint8_t>(h.type);
  for (int i = 0; i < 4; ++i) out[4 + i] = static_cast<uint8_t>(h.length >> (24 - 8 * i));
  for (int i = 0; i < 8; ++i) out[8 + i] = static_cast<uint8_t>(h.counter >> (56 - 8 * i));
}

Result<Header> decodeHeader(std::span<const uint8_t> b, size_t maxPayload) {
  if (b.size() < kHeaderSize) return Error{"header: truncated"};
  uint16_t magic = static_cast<uint16_t>((b[0] << 8) | b[1]);
  if (magic != kMagic) return Error{"header: bad magic (not a halb state-sync peer)"};
  Header h;
  h.version = b[2];
  if (h.version < kVersionMin || h.version > kVersionMax)
    return Error{"header: unsupported frame version " + std::to_string(h.version)};
  if (!isKnown(b[3])) return Error{"header: unknown message type " + std::to_string(b[3])};
  h.type = static_cast<MsgType>(b[3]);
  for (int i = 0; i < 4; ++i) h.length = (h.length << 8) | b[4 + static_cast<size_t>(i)];
  for (int i = 0; i < 8; ++i) h.counter = (h.counter << 8) | b[8 + static_cast<size_t>(i)];
  if (h.length > maxPayload)
    return Error{"header: payload of " + std::to_string(h.length) + " bytes exceeds " +
                 std::to_string(maxPayload)};
  return h;
}

std::string FrameBuilder::seal(uint8_t version, MsgType type, uint64_t counter, const Key& key) && {
  Header h{version, type, static_cast<uint32_t>(buf_.size() - kHeaderSize), counter};
  encodeHeader(h, reinterpret_cast<uint8_t*>(buf_.data()));
  Tag tag = hmacSha256(key, bytes(buf_));
  buf_.append(reinterpret_cast<const char*>(tag.data()), tag.size());
  return std::move(buf_);
}

std::string sealFrame(uint8_t version, MsgType type, uint64_t counter, std::string_view payload,
                      const Key& key) {
  FrameBuilder b;
  b.payload().append(payload);
  return std::move(b).seal(version, type, counter, key);
}

bool verifyFrame(const RawFrame& f, const Key& key) {
  Tag t = hmacSha256(key, {f.headerBytes, f.payload});
  return constantTimeEqual(t, f.tag);
}

void FrameReader::feed(std::span<const uint8_t> data) {
  // Compact before growing so the buffer holds at most one frame plus one read.
  if (off_ > 0 && (off_ == buf_.size() || off_ > buf_.size() / 2)) {
    buf_.erase(0, off_);
    off_ = 0;
  }
  buf_.append(reinterpret_cast<const char*>(data.data()), data.size());
}

Result<std::optional<RawFrame>> FrameReader::next() {
  auto avail = std::span(reinterpret_cast<const uint8_t*>(buf_.data()) + off_, buf_.size() - off_);
  if (avail.size() < kHeaderSize) {
    // Check the magic early: garbage (an HTTP client, a scanner) is refused at byte 2.
    if (avail.size() >= 2 && ((avail[0] << 8) | avail[1]) != kMagic)
      return Error{"header: bad magic (not a halb state-sync peer)"};
    return std::optional<RawFrame>{};
  }
  auto h = decodeHeader(avail, maxPayload_);
  if (!h) return Error{h.error()};
  size_t total = kHeaderSize + h->length + kTagSize;
  if (avail.size() < total) return std::optional<RawFrame>{};
  RawFrame f;
  f.header = *h;
  f.headerBytes = avail.subspan(0, kHeaderSize);
  f.payload = avail.subspan(kHeaderSize, h->length);
  f.tag = avail.subspan(kHeaderSize + h->length, kTagSize);
  off_ += total;
  return std::optional<RawFrame>{f};
}

// ------------------------------------------------------------------------------ encoders

void encode(std::string& o, const Challenge& m) {
  putU8(o, m.versionMin);
  putU8(o, m.versionMax);
  putRaw(o, m.nonce);
}

void encode(std::string& o, const Hello& m) {
  putRaw(o, m.nonce);
  putU8(o, m.version);
  putName(o, m.nodeName);
  putRaw(o, m.fingerprint);
  putU64(o, m.incarnation);
  putU32(o, m.epoch);
  putU64(o, m.resume.incarnation);
  putU64(o, m.resume.seq);
}

void encode(std::string& o, const HelloReply& m) {
  putU8(o, static_cast<uint8_t>(m.status));
  putName(o, m.nodeName);
  putRaw(o, m.fingerprint);
  putU64(o, m.incarnation);
  putU32(o, m.epoch);
  putU64(o, m.resume.incarnation);
  putU64(o, m.resume.seq);
}

void encode(std::string& o, const SnapshotBegin& m) {
  putU32(o, m.snapshotId);
  putU64(o, m.nextSeq);
  putU8(o, static_cast<uint8_t>(m.reason));
}

void encode(std::string& o, const SnapshotEnd& m) {
  putU32(o, m.snapshotId);
  putU64(o, m.entries);
}

void encode(std::string& o, const Resume& m) {
  putU64(o, m.nextSeq);
}
void encode(std::string& o, const Ack& m) {
  putU64(o, m.seq);
}

void encode(std::string& o, const Heartbeat& m) {
  putU64(o, m.timeUs);
  putU64(o, m.echoTimeUs);
  putU32(o, m.echoDelayUs);
  putU32(o, m.epoch);
}

void encode(std::string& o, const TransferAck& m) {
  putU64(o, m.transferId);
  putU32(o, m.applied);
  putU8(o, m.status);
}

void encode(std::string& o, const Close& m) {
  putU8(o, static_cast<uint8_t>(m.code));
  putBlob(o, std::string_view(m.reason).substr(0, kMaxReason));
}

bool encodeConnEntry(std::string& o, const ConnEntry& c) {
  if (c.appState.size() > kMaxAppState) return false;
  size_t start = o.size();
  putU64(o, c.id);
  putU64(o, c.frontendId);
  putU64(o, c.backendId);
  putU64(o, c.serverId);
  putAddress(o, c.client);
  putAddress(o, c.frontend);
  putAddress(o, c.serverLocal);
  putAddress(o, c.server);
  putVarint(o, static_cast<uint64_t>(std::max<int64_t>(0, c.startedUnixMs)));
  putVarint(o, c.bytesIn);
  putVarint(o, c.bytesOut);
  putU8(o, static_cast<uint8_t>(c.phase));
  putU8(o, static_cast<uint8_t>((c.clientTcp ? kHasClientTcp : 0) |
                                (c.serverTcp ? kHasServerTcp : 0)));
  if ((c.clientTcp && !putTcp(o, *c.clientTcp)) || (c.serverTcp && !putTcp(o, *c.serverTcp))) {
    o.resize(start);
    return false;
  }
  putBlob(o, c.appState);
  putVersion(o, c.version);
  return true;
}

bool encodeEntryBody(std::string& o, ChangeKind kind, const StickEntry& s, const ConnEntry& c) {
  switch (kind) {
    case ChangeKind::StickUpsert:
    case ChangeKind::StickTouch:
    case ChangeKind::StickDelete:
      if (s.key.size() > kMaxKey) return false;
      putU64(o, s.backendId);
      putBlob(o, s.key);
      if (kind != ChangeKind::StickDelete) {
        putU64(o, s.serverId);
        putVarint(o, ttlMillis(s.ttlLeft));
      }
      putVersion(o, s.version);
      return true;
    case ChangeKind::ConnOpen:
    case ChangeKind::ConnUpdate:
      return encodeConnEntry(o, c);
    case ChangeKind::ConnClose:
      putU64(o, c.id);
      putVersion(o, c.version);
      return true;
  }
  return false;
}

BatchWriter BatchWriter::updates(std::string& out, uint64_t firstSeq, uint64_t sendTimeUs) {
  putU64(out, firstSeq);
  putU64(out, sendTimeUs);
  size_t pos = out.size();
  putU32(out, 0);
  return BatchWriter(out, pos);
}

BatchWriter BatchWriter::snapshotChunk(std::string& out, uint32_t snapshotId) {
  putU32(out, snapshotId);
  size_t pos = out.size();
  putU32(out, 0);
  return BatchWriter(out, pos);
}

BatchWriter BatchWriter::transfer(std::string& out, uint64_t transferId) {
  putU64(out, transferId);
  size_t pos = out.size();
  putU32(out, 0);
  return BatchWriter(out, pos);
}

void BatchWriter::addUpdate(ChangeKind kind, uint64_t ageUs, std::string_view body) {
  putU8(out_, kindToWire(kind));
  putVarint(out_, std::min(ageUs, kMaxAgeUs));
  out_.append(body);
  ++count_;
}

void BatchWriter::addChunkEntry(ChangeKind kind, std::string_view body) {
  putU8(out_, kindToWire(kind));
  out_.append(body);
  ++count_;
}

void BatchWriter::addTransferEntry(std::string_view body) {
  out_.append(body);
  ++count_;
}

void BatchWriter::finish() {
  patchU32(out_, countPos_, count_);
}

// ------------------------------------------------------------------------------ decoders

Result<Challenge> decodeChallenge(std::span<const uint8_t> p) {
  Reader r(p);
  Challenge m;
  m.versionMin = r.u8("challenge.version_min");
  m.versionMax = r.u8("challenge.version_max");
  if (r.ok() && (m.versionMin == 0 || m.versionMin > m.versionMax))
    r.fail("challenge: bad version range");
  r.raw(m.nonce, "challenge.nonce");
  return done(r, "CHALLENGE", m);
}

std::optional<Nonce> peekHelloNonce(std::span<const uint8_t> p) {
  if (p.size() < kNonceSize) return std::nullopt;
  Nonce n;
  std::memcpy(n.data(), p.data(), kNonceSize);
  return n;
}

Result<Hello> decodeHello(std::span<const uint8_t> p) {
  Reader r(p);
  Hello m;
  r.raw(m.nonce, "hello.nonce");
  m.version = r.u8("hello.version");
  m.nodeName = readName(r);
  r.raw(m.fingerprint, "hello.fingerprint");
  m.incarnation = r.u64("hello.incarnation");
  m.epoch = r.u32("hello.epoch");
  m.resume.incarnation = r.u64("hello.resume_incarnation");
  m.resume.seq = r.u64("hello.resume_seq");
  if (r.ok() && m.incarnation == 0) r.fail("hello.incarnation: must not be 0");
  return done(r, "HELLO", m);
}

Result<HelloReply> decodeHelloReply(std::span<const uint8_t> p) {
  Reader r(p);
  HelloReply m;
  uint8_t st = r.u8("hello_reply.status");
  if (r.ok() && st > static_cast<uint8_t>(HelloStatus::VersionUnsupported))
    r.fail("hello_reply.status: unknown value");
  m.status = static_cast<HelloStatus>(st);
  m.nodeName = readName(r);
  r.raw(m.fingerprint, "hello_reply.fingerprint");
  m.incarnation = r.u64("hello_reply.incarnation");
  m.epoch = r.u32("hello_reply.epoch");
  m.resume.incarnation = r.u64("hello_reply.resume_incarnation");
  m.resume.seq = r.u64("hello_reply.resume_seq");
  if (r.ok() && m.incarnation == 0) r.fail("hello_reply.incarnation: must not be 0");
  return done(r, "HELLO_REPLY", m);
}

Result<SnapshotBegin> decodeSnapshotBegin(std::span<const uint8_t> p) {
  Reader r(p);
  SnapshotBegin m;
  m.snapshotId = r.u32("snapshot_begin.id");
  m.nextSeq = r.u64("snapshot_begin.next_seq");
  uint8_t reason = r.u8("snapshot_begin.reason");
  if (r.ok() && reason > 1) r.fail("snapshot_begin.reason: unknown value");
  m.reason = static_cast<SnapshotReason>(reason);
  if (r.ok() && m.nextSeq == 0) r.fail("snapshot_begin.next_seq: must not be 0");
  return done(r, "SNAPSHOT_BEGIN", m);
}

Result<SnapshotEnd> decodeSnapshotEnd(std::span<const uint8_t> p) {
  Reader r(p);
  SnapshotEnd m;
  m.snapshotId = r.u32("snapshot_end.id");
  m.entries = r.u64("snapshot_end.entries");
  return done(r, "SNAPSHOT_END", m);
}

Result<Resume> decodeResume(std::span<const uint8_t> p) {
  Reader r(p);
  Resume m;
  m.nextSeq = r.u64("resume.next_seq");
  if (r.ok() && m.nextSeq == 0) r.fail("resume.next_seq: must not be 0");
  return done(r, "RESUME", m);
}

Result<Ack> decodeAck(std::span<const uint8_t> p) {
  Reader r(p);
  Ack m;
  m.seq = r.u64("ack.seq");
  return done(r, "ACK", m);
}

// ------------------------------------------------------------------------------- ticket keys

namespace {

constexpr uint64_t kMaxTicketAgeMs = 30ull * 24 * 3600 * 1000;  // 30 days
constexpr size_t kTicketKeyBytes = 16 + 32 + 32;

struct CipherCtxFree {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};

EVP_CIPHER* aesGcm() {
  static EVP_CIPHER* c = EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr);
  return c;
}

}  // namespace

Key ticketWrapKey(const Key& directionKey) {
  static constexpr std::string_view kLabel = "halb statesync v2 ticket keys";
  return hmacSha256(directionKey, bytes(kLabel));
}

bool encodeTicketKeys(std::string& out, std::span<const repl::TicketKey> keys, const Key& wrapKey,
                      std::span<const uint8_t, kTicketNonceSize> nonce) {
  if (keys.size() > kMaxTicketKeys) return false;
  std::string plain;
  plain.reserve(1 + keys.size() * (kTicketKeyBytes + 5));
  putU8(plain, static_cast<uint8_t>(keys.size()));
  for (const auto& k : keys) {
    putRaw(plain, k.name);
    putRaw(plain, k.aesKey);
    putRaw(plain, k.hmacKey);
    uint64_t ms =
        k.age.count() <= 0
            ? 0
            : static_cast<uint64_t>(std::chrono::duration_cast<milliseconds>(k.age).count());
    putVarint(plain, std::min(ms, kMaxTicketAgeMs));
  }
  std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree> ctx(EVP_CIPHER_CTX_new());
  size_t base = out.size();
  out.resize(base + kTicketNonceSize + plain.size() + kTicketTagSize);
  auto* dst = reinterpret_cast<unsigned char*>(out.data() + base);
  std::memcpy(dst, nonce.data(), kTicketNonceSize);
  int len = 0, fin = 0;
  bool ok = ctx &&
            EVP_EncryptInit_ex2(ctx.get(), aesGcm(), wrapKey.data(), nonce.data(), nullptr) == 1 &&
            EVP_EncryptUpdate(ctx.get(), dst + kTicketNonceSize, &len,
                              reinterpret_cast<const unsigned char*>(plain.data()),
                              static_cast<int>(plain.size())) == 1 &&
            EVP_EncryptFinal_ex(ctx.get(), dst + kTicketNonceSize + len, &fin) == 1 &&
            EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTicketTagSize,
                                dst + kTicketNonceSize + plain.size()) == 1;
  OPENSSL_cleanse(plain.data(), plain.size());
  if (!ok) out.resize(base);
  return ok;
}

Result<std::vector<repl::TicketKey>> decodeTicketKeys(std::span<const uint8_t> p,
                                                      const Key& wrapKey) {
  if (p.size() < kTicketNonceSize + 1 + kTicketTagSize) return Error{"TICKET_KEYS: truncated"};
  const size_t clen = p.size() - kTicketNonceSize - kTicketTagSize;
  std::vector<uint8_t> plain(clen);
  std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree> ctx(EVP_CIPHER_CTX_new());
  int len = 0, fin = 0;
  std::array<uint8_t, kTicketTagSize> tag{};
  std::memcpy(tag.data(), p.data() + kTicketNonceSize + clen, kTicketTagSize);
  bool ok = ctx &&
            EVP_DecryptInit_ex2(ctx.get(), aesGcm(), wrapKey.data(), p.data(), nullptr) == 1 &&
            EVP_DecryptUpdate(ctx.get(), plain.data(), &len, p.data() + kTicketNonceSize,
                              static_cast<int>(clen)) == 1 &&
            EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kTicketTagSize, tag.data()) == 1 &&
            EVP_DecryptFinal_ex(ctx.get(), plain.data() + len, &fin) == 1;
  if (!ok) return Error{"TICKET_KEYS: does not decrypt (wrong key or damaged)"};
  Reader r(plain);
  std::vector<repl::TicketKey> keys;
  size_t n = r.u8("ticket_keys.count");
  if (r.ok() && n > kMaxTicketKeys)
    r.fail("ticket_keys.count: " + std::to_string(n) + " exceeds " +
           std::to_string(kMaxTicketKeys));
  for (size_t i = 0; i < n && r.ok(); ++i) {
    repl::TicketKey k;
    r.raw(k.name, "ticket_keys.name");
    r.raw(k.aesKey, "ticket_keys.aes_key");
    r.raw(k.hmacKey, "ticket_keys.hmac_key");
    k.age = milliseconds(r.varint("ticket_keys.age", kMaxTicketAgeMs));
    keys.push_back(k);
  }
  bool good = r.finish("TICKET_KEYS");
  std::string why = r.error();
  OPENSSL_cleanse(plain.data(), plain.size());
  if (!good) return Error{why};
  return keys;
}

Result<Heartbeat> decodeHeartbeat(std::span<const uint8_t> p) {
  Reader r(p);
  Heartbeat m;
  m.timeUs = r.u64("heartbeat.time");
  m.echoTimeUs = r.u64("heartbeat.echo_time");
  m.echoDelayUs = r.u32("heartbeat.echo_delay");
  m.epoch = r.u32("heartbeat.epoch");
  return done(r, "HEARTBEAT", m);
}

Result<TransferAck> decodeTransferAck(std::span<const uint8_t> p) {
  Reader r(p);
  TransferAck m;
  m.transferId = r.u64("transfer_ack.id");
  m.applied = r.u32("transfer_ack.applied");
  m.status = r.u8("transfer_ack.status");
  return done(r, "TRANSFER_ACK", m);
}

Result<Close> decodeClose(std::span<const uint8_t> p) {
  Reader r(p);
  Close m;
  uint8_t code = r.u8("close.code");
  if (r.ok() && code > static_cast<uint8_t>(CloseCode::Refused))
    r.fail("close.code: unknown value");
  m.code = static_cast<CloseCode>(code);
  m.reason = r.blob("close.reason", kMaxReason);
  return done(r, "CLOSE", m);
}

Result<Updates> decodeUpdates(std::span<const uint8_t> p) {
  Reader r(p);
  Updates m;
  m.firstSeq = r.u64("updates.first_seq");
  m.sendTimeUs = r.u64("updates.send_time");
  uint32_t n = readCount(r, "updates.count");
  if (r.ok() && (m.firstSeq == 0 || m.firstSeq > std::numeric_limits<uint64_t>::max() - n))
    r.fail("updates.first_seq: out of range");
  if (r.ok()) m.entries.reserve(std::min<size_t>(n, p.size() / 8));
  for (uint32_t i = 0; i < n && r.ok(); ++i) {
    auto kind = kindFromWire(r.u8("updates.kind"));
    if (r.ok() && !kind) {
      r.fail("updates.kind: unknown entry kind");
      break;
    }
    uint64_t age = r.varint("updates.age", kMaxAgeUs);
    if (!r.ok()) break;
    Entry e = readEntryBody(r, *kind);
    e.ageUs = age;
    m.entries.push_back(std::move(e));
  }
  return done(r, "UPDATES", std::move(m));
}

Result<SnapshotChunk> decodeSnapshotChunk(std::span<const uint8_t> p) {
  Reader r(p);
  SnapshotChunk m;
  m.snapshotId = r.u32("snapshot_chunk.id");
  uint32_t n = readCount(r, "snapshot_chunk.count");
  if (r.ok()) m.entries.reserve(std::min<size_t>(n, p.size() / 8));
  for (uint32_t i = 0; i < n && r.ok(); ++i) {
    auto kind = kindFromWire(r.u8("snapshot_chunk.kind"));
    // A snapshot states what exists: only whole entries, no touches or deletions.
    if (r.ok() && kind != ChangeKind::StickUpsert && kind != ChangeKind::ConnOpen) {
      r.fail("snapshot_chunk.kind: only stick and connection entries");
      break;
    }
    if (!r.ok()) break;
    m.entries.push_back(readEntryBody(r, *kind));
  }
  return done(r, "SNAPSHOT_CHUNK", std::move(m));
}

Result<Transfer> decodeTransfer(std::span<const uint8_t> p) {
  Reader r(p);
  Transfer m;
  m.transferId = r.u64("transfer.id");
  uint32_t n = readCount(r, "transfer.count");
  if (r.ok()) m.entries.reserve(std::min<size_t>(n, p.size() / 16));
  for (uint32_t i = 0; i < n && r.ok(); ++i) m.entries.push_back(readConn(r));
  return done(r, "TRANSFER", std::move(m));
}

}  // namespace halb::statesync::wire
