// Fuzz target for the state-sync wire codec and session (libFuzzer entry point; the seed
// corpus in tests/fuzz/corpus/statesync_codec also runs as an ordinary unit test).
//
// The first input byte picks what is fuzzed:
//   0..12  one payload decoder (by message), with a re-encode round trip on success
//   13     the frame reader over a byte stream, whole and byte by byte
//   14     a responder Session fed raw bytes by an unauthenticated peer
//   15     an established Session fed messages the harness seals with the right keys and
//          counters: [type u8][length u16][payload] ... ; type 0xff = advance time (payload
//          byte = milliseconds)
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "statesync/codec.h"
#include "statesync/session.h"
#include "tests/statesync/fake_tables.h"

namespace {

using namespace halb;
using namespace halb::statesync;
using namespace halb::statesync::wire;

void check(bool ok) {
  if (!ok) __builtin_trap();
}

template <class M, class Decode>
void roundTrip(std::span<const uint8_t> p, Decode decode) {
  auto m = decode(p);
  if (!m) return;
  std::string again;
  encode(again, *m);
  auto m2 = decode(bytes(again));
  check(m2.ok() && *m2 == *m);
}

std::string reencodeEntries(const std::vector<Entry>& entries, bool withAge) {
  std::string p;
  auto w = withAge ? BatchWriter::updates(p, 1, 0) : BatchWriter::snapshotChunk(p, 1);
  for (const auto& e : entries) {
    std::string body;
    check(encodeEntryBody(body, e.kind, e.stick, e.conn));
    withAge ? w.addUpdate(e.kind, e.ageUs, body) : w.addChunkEntry(e.kind, body);
  }
  w.finish();
  return p;
}

void fuzzDecoder(uint8_t which, std::span<const uint8_t> p) {
  switch (which) {
    case 0:
      return roundTrip<Challenge>(p, decodeChallenge);
    case 1:
      return roundTrip<Hello>(p, decodeHello);
    case 2:
      return roundTrip<HelloReply>(p, decodeHelloReply);
    case 3:
      return roundTrip<SnapshotBegin>(p, decodeSnapshotBegin);
    case 4: {
      auto m = decodeSnapshotChunk(p);
      if (m)
        check(decodeSnapshotChunk(bytes(reencodeEntries(m->entries, false)))->entries.size() ==
              m->entries.size());
      return;
    }
    case 5:
      return roundTrip<SnapshotEnd>(p, decodeSnapshotEnd);
    case 6:
      return roundTrip<Resume>(p, decodeResume);
    case 7: {
      auto m = decodeUpdates(p);
      if (m)
        check(decodeUpdates(bytes(reencodeEntries(m->entries, true)))->entries.size() ==
              m->entries.size());
      return;
    }
    case 8:
      return roundTrip<Ack>(p, decodeAck);
    case 9:
      return roundTrip<Heartbeat>(p, decodeHeartbeat);
    case 10: {
      auto m = decodeTransfer(p);
      if (!m) return;
      std::string again;
      auto w = BatchWriter::transfer(again, m->transferId);
      for (const auto& e : m->entries) {
        std::string body;
        check(encodeConnEntry(body, e));
        w.addTransferEntry(body);
      }
      w.finish();
      check(decodeTransfer(bytes(again))->entries.size() == m->entries.size());
      return;
    }
    case 11:
      return roundTrip<TransferAck>(p, decodeTransferAck);
    case 12:
      return roundTrip<Close>(p, decodeClose);
  }
}

void fuzzReader(std::span<const uint8_t> p) {
  auto frames = [](FrameReader& r, std::vector<Header>& out) {
    for (;;) {
      auto f = r.next();
      if (!f || !f.value()) return f.ok();
      out.push_back(f.value()->header);
    }
  };
  FrameReader whole;
  whole.feed(p);
  std::vector<Header> a;
  bool okA = frames(whole, a);
  FrameReader bytewise;
  std::vector<Header> b;
  bool okB = true;
  for (size_t i = 0; i < p.size() && okB; ++i) {
    bytewise.feed(p.subspan(i, 1));
    okB = frames(bytewise, b);
  }
  // Feeding whole or in pieces finds the same frames and the same verdict.
  check(a == b && okA == okB);
}

// A transport that remembers what the session sent and never connects anywhere.
struct Capture : Transport {
  std::vector<std::string> frames;
  ConnId connect() override { return 0; }
  void send(ConnId, std::string f) override { frames.push_back(std::move(f)); }
  size_t queuedBytes(ConnId) const override { return 0; }
  void close(ConnId) override { closed = true; }
  bool closed = false;
};

const std::string kKey = "fuzz-shared-secret-key";

Settings fuzzSettings() {
  Settings s;
  s.nodeName = "lb2";
  s.fingerprint = sha256(std::string_view("fp"));
  s.key.assign(kKey.begin(), kKey.end());
  s.connectToPeer = false;
  s.seed = 1;
  s.random = [](std::span<uint8_t> out) {
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<uint8_t>(i + 1);
  };
  return s;
}

void fuzzSession(std::span<const uint8_t> p, bool authenticated) {
  ManualClock clock;
  test::FakeTables tables;
  tables.clock = &clock;
  tables.upsert(1, "k", 2, std::chrono::seconds(60), clock.now());
  ConnReplica replica;
  Events events;
  Capture t;
  Session s(fuzzSettings(), t, tables, tables, replica, events, clock.now());
  s.onAccepted(1, clock.now());
  if (!authenticated) {
    // Raw bytes in small pieces, time moving on.
    for (size_t i = 0; i < p.size(); i += 7) {
      s.onData(1, p.subspan(i, std::min<size_t>(7, p.size() - i)), clock.now());
      clock.advance(std::chrono::milliseconds(3));
      s.onTick(clock.now());
    }
    return;
  }
  // Play the initiator: answer the CHALLENGE with a valid HELLO.
  if (t.frames.empty()) return;
  std::string challenge =
      t.frames[0].substr(kHeaderSize, t.frames[0].size() - kHeaderSize - kTagSize);
  Hello h;
  h.nonce.fill(0x5a);
  h.nodeName = "lb1";
  h.fingerprint = sha256(std::string_view("fp"));
  h.incarnation = 99;
  SessionKeys keys = deriveSessionKeys(bytes(kKey), bytes(challenge), h.nonce);
  std::string hello;
  encode(hello, h);
  std::string f = sealFrame(1, MsgType::Hello, 0, hello, keys.initiatorToResponder);
  s.onData(1, bytes(f), clock.now());
  check(s.peerConnected());
  uint64_t counter = 1;
  size_t i = 0;
  while (i + 3 <= p.size() && s.peerConnected()) {
    uint8_t type = p[i];
    size_t len = static_cast<size_t>(p[i + 1] << 8 | p[i + 2]);
    i += 3;
    len = std::min(len, p.size() - i);
    auto payload = p.subspan(i, len);
    i += len;
    if (type == 0xff) {
      clock.advance(std::chrono::milliseconds(len ? payload[0] : 1));
      s.onTick(clock.now());
      continue;
    }
    if (!isKnown(type)) continue;
    std::string frame =
        sealFrame(1, static_cast<MsgType>(type), counter++,
                  std::string_view(reinterpret_cast<const char*>(payload.data()), payload.size()),
                  keys.initiatorToResponder);
    s.onData(1, bytes(frame), clock.now());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::span<const uint8_t> rest(data + 1, size - 1);
  uint8_t mode = data[0] % 16;
  if (mode <= 12)
    fuzzDecoder(mode, rest);
  else if (mode == 13)
    fuzzReader(rest);
  else
    fuzzSession(rest, mode == 15);
  return 0;
}
