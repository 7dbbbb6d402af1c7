// The state-sync wire codec: golden vectors (bytes derived from docs/statesync-protocol.md by
// hand; tags and keys computed with an independent HMAC implementation, Python's hmac),
// round trips, and rejection of every kind of malformed input.
#include "statesync/codec.h"

#include <gtest/gtest.h>

#include <functional>

namespace halb::statesync::wire {
namespace {

using repl::ChangeKind;

std::string hex(std::string_view s) {
  return toHex(bytes(s));
}
std::string unhex(std::string_view h) {
  std::string out;
  for (size_t i = 0; i + 1 < h.size(); i += 2) {
    if (h[i] == ' ') {
      --i;
      continue;
    }
    out.push_back(static_cast<char>(std::stoi(std::string(h.substr(i, 2)), nullptr, 16)));
  }
  return out;
}
std::string strip(std::string_view h) {
  std::string out;
  for (char c : h)
    if (c != ' ') out += c;
  return out;
}
template <class M>
std::string enc(const M& m) {
  std::string out;
  encode(out, m);
  return out;
}
Nonce seqNonce(uint8_t first) {
  Nonce n;
  for (size_t i = 0; i < n.size(); ++i) n[i] = static_cast<uint8_t>(first + i);
  return n;
}

// ------------------------------------------------------------------------------ golden

struct Golden {
  const char* name;
  std::string bytes;
  const char* hex;
};

TEST(CodecGolden, FixedMessages) {
  Sha256Digest fp;
  fp.fill(0xaa);
  const Golden cases[] = {
      {"ACK", enc(Ack{.seq = 0x0102030405060708}), "0102030405060708"},
      {"HEARTBEAT", enc(Heartbeat{.timeUs = 1, .echoTimeUs = 2, .echoDelayUs = 3, .epoch = 4}),
       "0000000000000001 0000000000000002 00000003 00000004"},
      {"SNAPSHOT_BEGIN",
       enc(SnapshotBegin{.snapshotId = 7, .nextSeq = 300, .reason = SnapshotReason::Resync}),
       "00000007 000000000000012c 01"},
      {"SNAPSHOT_END", enc(SnapshotEnd{.snapshotId = 7, .entries = 2}),
       "00000007 0000000000000002"},
      {"RESUME", enc(Resume{.nextSeq = 17}), "0000000000000011"},
      {"TRANSFER_ACK", enc(TransferAck{.transferId = 5, .applied = 3, .status = 0}),
       "0000000000000005 00000003 00"},
      {"CLOSE", enc(Close{.code = CloseCode::Replaced, .reason = "dup"}), "02 03 647570"},
      {"CHALLENGE", enc(Challenge{.versionMin = 1, .versionMax = 1, .nonce = seqNonce(0)}),
       "01 01 000102030405060708090a0b0c0d0e0f"},
      {"HELLO",
       enc(Hello{.nonce = seqNonce(0xf0),
                 .version = 1,
                 .nodeName = "lb1",
                 .fingerprint = fp,
                 .incarnation = 0x1122334455667788,
                 .epoch = 5,
                 .resume = {.incarnation = 0x99, .seq = 10}}),
       "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff 01 03 6c6231"
       " aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
       " 1122334455667788 00000005 0000000000000099 000000000000000a"},
      {"HELLO_REPLY",
       enc(HelloReply{.status = HelloStatus::FingerprintMismatch,
                      .nodeName = "lb2",
                      .fingerprint = fp,
                      .incarnation = 1,
                      .epoch = 0,
                      .resume = {}}),
       "01 03 6c6232 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
       " 0000000000000001 00000000 0000000000000000 0000000000000000"},
  };
  for (const auto& c : cases) EXPECT_EQ(hex(c.bytes), strip(c.hex)) << c.name;
}

// A stick upsert: backend 1, key "k", server 2, 30 s to live, version (3, 300).
const char* kStickBody = "0000000000000001 01 6b 0000000000000002 b0ea01 03 ac02";

TEST(CodecGolden, EntryBodies) {
  repl::StickEntry s{.backendId = 1,
                     .key = "k",
                     .serverId = 2,
                     .ttlLeft = milliseconds(30000),
                     .version = {3, 300}};
  std::string body;
  ASSERT_TRUE(encodeEntryBody(body, ChangeKind::StickUpsert, s, {}));
  EXPECT_EQ(hex(body), strip(kStickBody));

  body.clear();
  ASSERT_TRUE(encodeEntryBody(body, ChangeKind::StickDelete, s, {}));
  EXPECT_EQ(hex(body), strip("0000000000000001 01 6b 03 ac02"));

  repl::ConnEntry close{.id = 0x42, .version = {1, 2}};
  body.clear();
  ASSERT_TRUE(encodeEntryBody(body, ChangeKind::ConnClose, {}, close));
  EXPECT_EQ(hex(body), strip("0000000000000042 01 02"));

  repl::ConnEntry c{
      .id = 1,
      .frontendId = 2,
      .backendId = 3,
      .serverId = 4,
      .client = *SocketAddress::parse("10.0.0.1:40000"),
      .frontend = *SocketAddress::parse("192.0.2.100:80"),
      .serverLocal = *SocketAddress::parse("10.0.1.1:0"),
      .server = *SocketAddress::parse("[2001:db8::1]:8080"),
      .phase = repl::ConnPhase::Idle,
      .version = {1, 1},
  };
  body.clear();
  ASSERT_TRUE(encodeEntryBody(body, ChangeKind::ConnOpen, {}, c));
  EXPECT_EQ(hex(body), strip("0000000000000001 0000000000000002 0000000000000003 0000000000000004"
                             " 04 0a000001 9c40  04 c0000264 0050  04 0a000101 0000"
                             " 06 20010db8000000000000000000000001 1f90"
                             " 00 00 00  01 00  00  01 01"));
}

TEST(CodecGolden, UpdatesBatch) {
  std::string payload;
  auto w = BatchWriter::updates(payload, 5, 0x0a0b);
  w.addUpdate(ChangeKind::StickUpsert, 1500, unhex(kStickBody));
  w.finish();
  EXPECT_EQ(hex(payload),
            strip(std::string("0000000000000005 0000000000000a0b 00000001 01 dc0b ") + kStickBody));
  auto d = decodeUpdates(bytes(payload));
  ASSERT_TRUE(d) << d.error();
  EXPECT_EQ(d->firstSeq, 5u);
  EXPECT_EQ(d->sendTimeUs, 0xa0bu);
  ASSERT_EQ(d->entries.size(), 1u);
  EXPECT_EQ(d->entries[0].ageUs, 1500u);
  EXPECT_EQ(d->entries[0].stick.key, "k");
  EXPECT_EQ(d->entries[0].stick.ttlLeft, milliseconds(30000));
  EXPECT_EQ(d->entries[0].stick.version, (repl::Version{3, 300}));
}

TEST(CodecGolden, SealedFrame) {
  Key key;
  key.fill(0x0b);
  std::string frame = sealFrame(1, MsgType::Ack, 3, enc(Ack{.seq = 9}), key);
  EXPECT_EQ(hex(frame), strip("4853 01 21 00000008 0000000000000003"
                              " 0000000000000009"
                              " 109b86a8f557bf1b559ac54323b63b12d73651952d9427614841cd43625f42d5"));
}

TEST(CodecGolden, KeySchedule) {
  std::string k = "0123456789abcdef";
  EXPECT_EQ(toHex(challengeKey(bytes(k))),
            "fb9abd3ddbc4846351efcb771e3048246b7d73d0b01d5b50bf33837dcc6194c8");
  std::string challenge = enc(Challenge{.versionMin = 1, .versionMax = 1, .nonce = seqNonce(0)});
  SessionKeys sk = deriveSessionKeys(bytes(k), bytes(challenge), seqNonce(0xf0));
  EXPECT_EQ(toHex(sk.initiatorToResponder),
            "2dcc349e66c13d8d3c7014b93b5909f80e55b3427e8eb373fc2f09abc7f46267");
  EXPECT_EQ(toHex(sk.responderToInitiator),
            "da03367dcf917cb5dcbcd1a40ee1a23364f84d64a31d3af3a7c7b5cf0e90287d");
}

// ------------------------------------------------------------------------------ round trips

repl::TcpRepairState tcpState(uint32_t base) {
  return repl::TcpRepairState{.sndSeq = base,
                              .rcvSeq = base + 1,
                              .mss = 1460,
                              .options = 7,
                              .sndWscale = 7,
                              .rcvWscale = 10,
                              .tsval = 0xdeadbeef,
                              .sndWl1 = 1,
                              .sndWnd = 2,
                              .maxWindow = 3,
                              .rcvWnd = 4,
                              .rcvWup = 5,
                              .sendQueue = "pong 30\n",
                              .recvQueue = std::string(1000, 'x')};
}

repl::ConnEntry fullConn() {
  return repl::ConnEntry{
      .id = 0x8000000000000001,
      .frontendId = 11,
      .backendId = 12,
      .serverId = 13,
      .client = *SocketAddress::parse("[2001:db8::10]:51000"),
      .frontend = *SocketAddress::parse("[2001:db8::100]:443"),
      .serverLocal = *SocketAddress::parse("10.0.0.100:34567"),
      .server = *SocketAddress::parse("10.0.1.11:8080"),
      .startedUnixMs = 1700000000123,
      .bytesIn = 1ull << 40,
      .bytesOut = 12345,
      .phase = repl::ConnPhase::Idle,
      .clientTcp = tcpState(1000),
      .serverTcp = tcpState(5000),
      .appState = std::string("\0keep-alive\xff", 12),
      .version = {0xffffffff, 0xffffffffffffffff},
  };
}

void expectConnEq(const repl::ConnEntry& a, const repl::ConnEntry& b) {
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.frontendId, b.frontendId);
  EXPECT_EQ(a.backendId, b.backendId);
  EXPECT_EQ(a.serverId, b.serverId);
  EXPECT_EQ(a.client, b.client);
  EXPECT_EQ(a.frontend, b.frontend);
  EXPECT_EQ(a.serverLocal, b.serverLocal);
  EXPECT_EQ(a.server, b.server);
  EXPECT_EQ(a.startedUnixMs, b.startedUnixMs);
  EXPECT_EQ(a.bytesIn, b.bytesIn);
  EXPECT_EQ(a.bytesOut, b.bytesOut);
  EXPECT_EQ(a.phase, b.phase);
  EXPECT_EQ(a.clientTcp.has_value(), b.clientTcp.has_value());
  EXPECT_EQ(a.serverTcp.has_value(), b.serverTcp.has_value());
  for (auto [x, y] :
       {std::pair{&a.clientTcp, &b.clientTcp}, std::pair{&a.serverTcp, &b.serverTcp}}) {
    if (!*x || !*y) continue;
    EXPECT_EQ((*x)->sndSeq, (*y)->sndSeq);
    EXPECT_EQ((*x)->rcvSeq, (*y)->rcvSeq);
    EXPECT_EQ((*x)->mss, (*y)->mss);
    EXPECT_EQ((*x)->options, (*y)->options);
    EXPECT_EQ((*x)->sndWscale, (*y)->sndWscale);
    EXPECT_EQ((*x)->rcvWscale, (*y)->rcvWscale);
    EXPECT_EQ((*x)->tsval, (*y)->tsval);
    EXPECT_EQ((*x)->sndWl1, (*y)->sndWl1);
    EXPECT_EQ((*x)->sndWnd, (*y)->sndWnd);
    EXPECT_EQ((*x)->maxWindow, (*y)->maxWindow);
    EXPECT_EQ((*x)->rcvWnd, (*y)->rcvWnd);
    EXPECT_EQ((*x)->rcvWup, (*y)->rcvWup);
    EXPECT_EQ((*x)->sendQueue, (*y)->sendQueue);
    EXPECT_EQ((*x)->recvQueue, (*y)->recvQueue);
  }
  EXPECT_EQ(a.appState, b.appState);
  EXPECT_EQ(a.version, b.version);
}

TEST(CodecRoundTrip, HandshakeAndControlMessages) {
  Hello h{.nonce = seqNonce(9),
          .version = 1,
          .nodeName = "node-a.example",
          .incarnation = 77,
          .epoch = 3,
          .resume = {.incarnation = 5, .seq = 6}};
  h.fingerprint = sha256(std::string_view("x"));
  auto hd = decodeHello(bytes(enc(h)));
  ASSERT_TRUE(hd) << hd.error();
  EXPECT_EQ(*hd, h);
  HelloReply r{.status = HelloStatus::SameNodeName, .nodeName = "b", .incarnation = 1, .epoch = 9};
  auto rd = decodeHelloReply(bytes(enc(r)));
  ASSERT_TRUE(rd) << rd.error();
  EXPECT_EQ(*rd, r);
  Close c{.code = CloseCode::ProtocolError, .reason = std::string(kMaxReason, 'r')};
  auto cd = decodeClose(bytes(enc(c)));
  ASSERT_TRUE(cd) << cd.error();
  EXPECT_EQ(*cd, c);
  EXPECT_EQ(*decodeTransferAck(bytes(enc(TransferAck{1, 2, 0}))), (TransferAck{1, 2, 0}));
  EXPECT_EQ(*decodeChallenge(bytes(enc(Challenge{.nonce = seqNonce(3)}))),
            (Challenge{.nonce = seqNonce(3)}));
}

TEST(CodecRoundTrip, EveryEntryKindInUpdates) {
  repl::StickEntry s{.backendId = 9,
                     .key = std::string("\x0a\x00\x00\x01", 4),
                     .serverId = 3,
                     .ttlLeft = milliseconds(1800000),
                     .version = {2, 1}};
  repl::ConnEntry c = fullConn();
  std::string payload;
  auto w = BatchWriter::updates(payload, 1000, 77);
  for (ChangeKind k : {ChangeKind::StickUpsert, ChangeKind::StickTouch, ChangeKind::StickDelete,
                       ChangeKind::ConnOpen, ChangeKind::ConnUpdate, ChangeKind::ConnClose}) {
    std::string body;
    ASSERT_TRUE(encodeEntryBody(body, k, s, c)) << toString(k);
    w.addUpdate(k, static_cast<uint64_t>(k) * 1000, body);
  }
  w.finish();
  auto d = decodeUpdates(bytes(payload));
  ASSERT_TRUE(d) << d.error();
  ASSERT_EQ(d->entries.size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    const Entry& e = d->entries[i];
    EXPECT_EQ(static_cast<size_t>(e.kind), i);
    EXPECT_EQ(e.ageUs, i * 1000);
  }
  EXPECT_EQ(d->entries[0].stick.key, s.key);
  EXPECT_EQ(d->entries[1].stick.serverId, 3u);
  EXPECT_EQ(d->entries[2].stick.version, s.version);
  expectConnEq(d->entries[3].conn, c);
  expectConnEq(d->entries[4].conn, c);
  EXPECT_EQ(d->entries[5].conn.id, c.id);
  EXPECT_EQ(d->entries[5].conn.phase, repl::ConnPhase::Closed);
}

TEST(CodecRoundTrip, SnapshotChunkAndTransfer) {
  std::string payload;
  auto w = BatchWriter::snapshotChunk(payload, 42);
  std::string body;
  ASSERT_TRUE(encodeEntryBody(body, ChangeKind::ConnOpen, {}, fullConn()));
  w.addChunkEntry(ChangeKind::ConnOpen, body);
  w.addChunkEntry(ChangeKind::StickUpsert, unhex(kStickBody));
  w.finish();
  auto d = decodeSnapshotChunk(bytes(payload));
  ASSERT_TRUE(d) << d.error();
  EXPECT_EQ(d->snapshotId, 42u);
  ASSERT_EQ(d->entries.size(), 2u);
  expectConnEq(d->entries[0].conn, fullConn());

  payload.clear();
  auto t = BatchWriter::transfer(payload, 7);
  t.addTransferEntry(body);
  t.addTransferEntry(body);
  t.finish();
  auto td = decodeTransfer(bytes(payload));
  ASSERT_TRUE(td) << td.error();
  EXPECT_EQ(td->transferId, 7u);
  ASSERT_EQ(td->entries.size(), 2u);
  expectConnEq(td->entries[1], fullConn());
}

TEST(CodecRoundTrip, EncoderClampsWhatADecoderWouldRefuse) {
  repl::StickEntry s{.backendId = 1, .key = "k", .ttlLeft = std::chrono::hours(24 * 365)};
  std::string body;
  ASSERT_TRUE(encodeEntryBody(body, ChangeKind::StickUpsert, s, {}));
  std::string payload;
  auto w = BatchWriter::updates(payload, 1, 0);
  w.addUpdate(ChangeKind::StickUpsert, UINT64_MAX, body);
  w.finish();
  auto d = decodeUpdates(bytes(payload));
  ASSERT_TRUE(d) << d.error();
  EXPECT_EQ(d->entries[0].stick.ttlLeft, std::chrono::hours(24 * 100));
  EXPECT_EQ(d->entries[0].ageUs, 3600ull * 1000 * 1000);
}

TEST(CodecRoundTrip, EncoderRefusesOversizedFields) {
  std::string body;
  repl::StickEntry s{.key = std::string(kMaxKey + 1, 'k')};
  EXPECT_FALSE(encodeEntryBody(body, ChangeKind::StickUpsert, s, {}));
  repl::ConnEntry c;
  c.appState.assign(kMaxAppState + 1, 'a');
  EXPECT_FALSE(encodeConnEntry(body, c));
  c.appState.clear();
  c.clientTcp = repl::TcpRepairState{.sendQueue = std::string(kMaxQueueBytes + 1, 'q')};
  EXPECT_FALSE(encodeConnEntry(body, c));
  EXPECT_TRUE(body.empty()) << "a refused entry leaves nothing behind";
}

// ------------------------------------------------------------------------------ rejection

// Every proper prefix of a valid message is rejected, and so is any trailing byte.
template <class Decode>
void expectStrict(const std::string& valid, Decode decode, const char* what) {
  ASSERT_TRUE(decode(bytes(valid))) << what;
  for (size_t n = 0; n < valid.size(); ++n)
    EXPECT_FALSE(decode(bytes(std::string_view(valid).substr(0, n))))
        << what << " truncated to " << n;
  EXPECT_FALSE(decode(bytes(valid + '\0'))) << what << " with a trailing byte";
}

TEST(CodecReject, TruncationAndTrailingBytes) {
  expectStrict(enc(Challenge{}), decodeChallenge, "CHALLENGE");
  expectStrict(enc(Hello{.nodeName = "a", .incarnation = 1}), decodeHello, "HELLO");
  expectStrict(enc(HelloReply{.nodeName = "a", .incarnation = 1}), decodeHelloReply, "HELLO_REPLY");
  expectStrict(enc(SnapshotBegin{.nextSeq = 1}), decodeSnapshotBegin, "SNAPSHOT_BEGIN");
  expectStrict(enc(SnapshotEnd{}), decodeSnapshotEnd, "SNAPSHOT_END");
  expectStrict(enc(Resume{.nextSeq = 1}), decodeResume, "RESUME");
  expectStrict(enc(Ack{}), decodeAck, "ACK");
  expectStrict(enc(Heartbeat{}), decodeHeartbeat, "HEARTBEAT");
  expectStrict(enc(TransferAck{}), decodeTransferAck, "TRANSFER_ACK");
  expectStrict(enc(Close{.reason = "x"}), decodeClose, "CLOSE");
  std::string updates;
  auto w = BatchWriter::updates(updates, 1, 99);
  std::string body;
  ASSERT_TRUE(encodeEntryBody(body, ChangeKind::ConnOpen, {}, fullConn()));
  w.addUpdate(ChangeKind::ConnOpen, 5, body);
  w.addUpdate(ChangeKind::StickUpsert, 5, unhex(kStickBody));
  w.finish();
  expectStrict(updates, decodeUpdates, "UPDATES");
  std::string transfer;
  auto t = BatchWriter::transfer(transfer, 1);
  t.addTransferEntry(body);
  t.finish();
  expectStrict(transfer, decodeTransfer, "TRANSFER");
}

TEST(CodecReject, OutOfRangeFields) {
  struct Case {
    const char* name;
    std::function<bool()> accepted;
  };
  auto updatesWith = [](uint8_t kind, std::string body, uint64_t first = 1, uint32_t count = 1) {
    std::string p;
    for (int s = 56; s >= 0; s -= 8) p.push_back(static_cast<char>(first >> s));
    p.append(8, '\0');  // send time
    for (int s = 24; s >= 0; s -= 8) p.push_back(static_cast<char>(count >> s));
    p.push_back(static_cast<char>(kind));
    p.push_back(0);  // age 0
    p += body;
    return p;
  };
  std::string stick = unhex(kStickBody);
  std::string conn;
  ASSERT_TRUE(encodeEntryBody(conn, ChangeKind::ConnOpen, {}, fullConn()));
  // Offsets inside the connection body (see the spec's layout).
  const size_t clientFamily = 32, phaseOffset = 32 + 19 + 19 + 7 + 7 + 6 + 6 + 2;
  Case cases[] = {
      {"unknown kind 0", [&] { return decodeUpdates(bytes(updatesWith(0, stick))).ok(); }},
      {"unknown kind 7", [&] { return decodeUpdates(bytes(updatesWith(7, stick))).ok(); }},
      {"count 0",
       [&] { return decodeUpdates(bytes(updatesWith(1, "", 1, 0).substr(0, 20))).ok(); }},
      {"count above limit",
       [&] { return decodeUpdates(bytes(updatesWith(1, stick, 1, kMaxBatch + 1))).ok(); }},
      {"first_seq 0", [&] { return decodeUpdates(bytes(updatesWith(1, stick, 0))).ok(); }},
      {"first_seq wraps",
       [&] { return decodeUpdates(bytes(updatesWith(1, stick, UINT64_MAX))).ok(); }},
      {"non-canonical varint",
       [&] {
         std::string b = unhex("0000000000000001 01 6b 0000000000000002 b0ea8100 03 ac02");
         return decodeUpdates(bytes(updatesWith(1, b))).ok();
       }},
      {"varint over 64 bits",
       [&] {
         std::string b =
             unhex("0000000000000001 01 6b 0000000000000002 ffffffffffffffffff7f 03 ac02");
         return decodeUpdates(bytes(updatesWith(1, b))).ok();
       }},
      {"ttl above 100 days",
       [&] {
         std::string b = unhex("0000000000000001 01 6b 0000000000000002 80a0e5e420 03 ac02");
         return decodeUpdates(bytes(updatesWith(1, b))).ok();
       }},
      {"epoch above 32 bits",
       [&] {
         std::string b = unhex("0000000000000001 01 6b 0000000000000002 01 8080808010 01");
         return decodeUpdates(bytes(updatesWith(1, b))).ok();
       }},
      {"key longer than 1024",
       [&] {
         std::string b = unhex("0000000000000001 8108") + std::string(1025, 'k') +
                         unhex("0000000000000002 01 01 01");
         return decodeUpdates(bytes(updatesWith(1, b))).ok();
       }},
      {"address family 5",
       [&] {
         std::string b = conn;
         b[clientFamily] = 5;
         return decodeUpdates(bytes(updatesWith(4, b))).ok();
       }},
      {"phase 4",
       [&] {
         std::string b = conn;
         b[phaseOffset] = 4;
         return decodeUpdates(bytes(updatesWith(4, b))).ok();
       }},
      {"unknown flag bits",
       [&] {
         std::string b = conn;
         b[phaseOffset + 1] |= 4;
         return decodeUpdates(bytes(updatesWith(4, b))).ok();
       }},
      {"window scale 15",
       [&] {
         std::string b = conn;
         b[phaseOffset + 2 + 12 + 1] = 15;  // client tcp: snd_wscale
         return decodeUpdates(bytes(updatesWith(4, b))).ok();
       }},
      {"snapshot chunk with a delete",
       [&] {
         std::string p = unhex("00000001 00000001 03 0000000000000001 01 6b 03 ac02");
         return decodeSnapshotChunk(bytes(p)).ok();
       }},
      {"empty node name",
       [&] { return decodeHello(bytes(enc(Hello{.nodeName = "", .incarnation = 1}))).ok(); }},
      {"node name with a space",
       [&] { return decodeHello(bytes(enc(Hello{.nodeName = "a b", .incarnation = 1}))).ok(); }},
      {"node name with a control byte",
       [&] { return decodeHello(bytes(enc(Hello{.nodeName = "a\x01", .incarnation = 1}))).ok(); }},
      {"incarnation 0",
       [&] { return decodeHello(bytes(enc(Hello{.nodeName = "a", .incarnation = 0}))).ok(); }},
      {"hello_reply status 9",
       [&] {
         std::string p = enc(HelloReply{.nodeName = "a", .incarnation = 1});
         p[0] = 9;
         return decodeHelloReply(bytes(p)).ok();
       }},
      {"challenge version range 2..1",
       [&] {
         return decodeChallenge(bytes(enc(Challenge{.versionMin = 2, .versionMax = 1}))).ok();
       }},
      {"challenge version 0",
       [&] {
         return decodeChallenge(bytes(enc(Challenge{.versionMin = 0, .versionMax = 1}))).ok();
       }},
      {"snapshot reason 2",
       [&] { return decodeSnapshotBegin(bytes(unhex("00000001 0000000000000001 02"))).ok(); }},
      {"snapshot next_seq 0",
       [&] { return decodeSnapshotBegin(bytes(unhex("00000001 0000000000000000 00"))).ok(); }},
      {"close code 4", [&] { return decodeClose(bytes(unhex("04 00"))).ok(); }},
      {"close reason over 256",
       [&] { return decodeClose(bytes(unhex("00 8102") + std::string(257, 'r'))).ok(); }},
      {"resume 0", [&] { return decodeResume(bytes(unhex("0000000000000000"))).ok(); }},
  };
  for (auto& c : cases) EXPECT_FALSE(c.accepted()) << c.name;
}

TEST(CodecReject, Headers) {
  Key key{};
  std::string good = sealFrame(1, MsgType::Ack, 0, enc(Ack{}), key);
  ASSERT_TRUE(decodeHeader(bytes(good), kMaxPayload));
  auto with = [&](size_t i, char v) {
    std::string f = good;
    f[i] = v;
    return decodeHeader(bytes(f), kMaxPayload).ok();
  };
  EXPECT_FALSE(with(0, 'G'));  // "GET ..." is not a peer
  EXPECT_FALSE(with(2, 2));    // frame version 2
  EXPECT_FALSE(with(2, 0));
  EXPECT_FALSE(with(3, 0x55));                      // unknown type
  EXPECT_FALSE(with(4, 1));                         // length 16 MiB + 8
  EXPECT_FALSE(decodeHeader(bytes(good), 4).ok());  // over the caller's limit
}

// ------------------------------------------------------------------------------ frames

TEST(FrameReader, ReassemblesFramesFedByteByByte) {
  Key key;
  key.fill(1);
  std::string stream = sealFrame(1, MsgType::Ack, 0, enc(Ack{.seq = 1}), key) +
                       sealFrame(1, MsgType::Heartbeat, 1, enc(Heartbeat{.timeUs = 5}), key) +
                       sealFrame(1, MsgType::Ack, 2, enc(Ack{.seq = 2}), key);
  FrameReader r;
  std::vector<std::pair<MsgType, uint64_t>> got;
  for (char c : stream) {
    r.feed(bytes(std::string_view(&c, 1)));
    for (;;) {
      auto f = r.next();
      ASSERT_TRUE(f) << f.error();
      if (!f.value()) break;
      EXPECT_TRUE(verifyFrame(**f, key));
      got.emplace_back(f.value()->header.type, f.value()->header.counter);
    }
  }
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[1], (std::pair{MsgType::Heartbeat, uint64_t{1}}));
  EXPECT_EQ(r.buffered(), 0u);
}

TEST(FrameReader, RefusesGarbageAndOversizeBeforeBuffering) {
  FrameReader r;
  r.feed(bytes("GET / HTTP/1.1\r\n"));
  EXPECT_FALSE(r.next().ok());

  FrameReader small(kMaxHandshakePayload);
  std::string big =
      sealFrame(1, MsgType::Hello, 0, std::string(kMaxHandshakePayload + 1, 'x'), Key{});
  small.feed(bytes(big.substr(0, kHeaderSize)));  // the header alone condemns it
  auto f = small.next();
  EXPECT_FALSE(f.ok());
}

TEST(FrameReader, DetectsAnyFlippedBit) {
  Key key;
  key.fill(7);
  std::string frame = sealFrame(1, MsgType::Resume, 4, enc(Resume{.nextSeq = 3}), key);
  for (size_t i = 0; i < frame.size(); ++i) {
    std::string bad = frame;
    bad[i] ^= 0x10;
    FrameReader r;
    r.feed(bytes(bad));
    auto f = r.next();
    if (!f || !f.value()) continue;  // the header check caught it already
    EXPECT_FALSE(verifyFrame(**f, key)) << "bit flip at byte " << i;
  }
  Key other = key;
  other[0] ^= 1;
  FrameReader r;
  r.feed(bytes(frame));
  auto f = r.next();
  ASSERT_TRUE(f && f.value());
  EXPECT_FALSE(verifyFrame(**f, other));
}

}  // namespace
}  // namespace halb::statesync::wire
