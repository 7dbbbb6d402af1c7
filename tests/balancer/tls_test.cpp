// TLS contexts and ticket keys, with handshakes run in memory (two SSL objects joined by a BIO
// pair): no sockets, no timing. Certificates come from a throw-away PKI made by the test.
#include "balancer/tls.h"

#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <memory>

#include "config/loader.h"
#include "tests/common/test_pki.h"

namespace halb::balancer {
namespace {

using namespace std::chrono_literals;
using halb::testing::CertSpec;
using halb::testing::Issued;
using halb::testing::TestPki;

// ------------------------------------------------------------------ ticket key logic

std::function<void(std::span<uint8_t>)> counterRandom() {
  auto n = std::make_shared<uint8_t>(0);
  return [n](std::span<uint8_t> out) {
    ++*n;
    for (auto& b : out) b = *n;
  };
}

TEST(TicketKeySet, RotatesAndKeepsOldKeysForTheSessionLifetime) {
  ManualClock clock;
  TicketKeySet set(1h, 2h);
  auto rnd = counterRandom();
  EXPECT_EQ(set.sealing(clock.now()), nullptr);
  EXPECT_TRUE(set.rotate(clock.now(), rnd));
  ASSERT_NE(set.sealing(clock.now()), nullptr);
  auto first = set.sealing(clock.now())->material.name;
  EXPECT_FALSE(set.rotate(clock.now() + 59min, rnd));  // still sealing
  EXPECT_EQ(set.nextEvent(clock.now()), clock.now() + 1h);

  clock.advance(1h);
  EXPECT_EQ(set.sealing(clock.now()), nullptr);      // too old to seal...
  ASSERT_NE(set.find(first, clock.now()), nullptr);  // ...still opens
  EXPECT_TRUE(set.rotate(clock.now(), rnd));
  EXPECT_EQ(set.keys().size(), 2u);
  EXPECT_NE(set.sealing(clock.now())->material.name, first);

  clock.advance(2h);  // the first key is now rotation + lifetime old
  EXPECT_TRUE(set.rotate(clock.now(), rnd));
  EXPECT_EQ(set.find(first, clock.now()), nullptr);
  EXPECT_EQ(set.keys().size(), 2u);  // second (3h... 2h old) and third
}

TEST(TicketKeySet, TwoNodesConvergeOnTheNewestKey) {
  ManualClock clock;
  TicketKeySet a(1h, 2h), b(1h, 2h);
  a.rotate(clock.now(), counterRandom());
  clock.advance(10s);
  auto rb = [](std::span<uint8_t> out) {
    for (auto& x : out) x = 0xbb;
  };
  b.rotate(clock.now(), rb);  // b did not hear of a's key yet and made its own
  // Exchange (ages travel; each side converts to its own clock).
  EXPECT_TRUE(a.merge(b.toWire(clock.now()), clock.now()));
  EXPECT_TRUE(b.merge(a.toWire(clock.now()), clock.now()));
  ASSERT_EQ(a.keys().size(), 2u);
  ASSERT_EQ(b.keys().size(), 2u);
  EXPECT_EQ(a.sealing(clock.now())->material, b.sealing(clock.now())->material);
  // The same keys again change nothing; the earlier birth time is kept.
  EXPECT_FALSE(a.merge(b.toWire(clock.now()), clock.now()));
  EXPECT_EQ(a.keys()[1].created, clock.now() - 10s);
  // b's key retires 1 h after its birth on both nodes; a makes none meanwhile.
  clock.advance(59min);
  EXPECT_FALSE(a.rotate(clock.now(), counterRandom()));
  clock.advance(1min);
  EXPECT_TRUE(a.rotate(clock.now(), counterRandom()));
}

TEST(TicketKeySet, KeysMadeAtTheSameMomentSortTheSameOnBothNodes) {
  ManualClock clock;
  TicketKeySet a(1h, 2h), b(1h, 2h);
  auto fillWith = [](uint8_t v) {
    return [v](std::span<uint8_t> out) {
      for (auto& x : out) x = v;
    };
  };
  a.rotate(clock.now(), fillWith(0x10));
  clock.advance(300ms);
  b.rotate(clock.now(), fillWith(0x05));  // later, but a smaller name
  // Each side's view of the other's key is off by the transfer time (here 50 ms).
  clock.advance(50ms);
  auto wa = a.toWire(clock.now()), wb = b.toWire(clock.now());
  for (auto& k : wa) k.age -= 50ms;
  a.merge(wb, clock.now());
  b.merge(wa, clock.now());
  EXPECT_EQ(a.sealing(clock.now())->material.name[0], 0x10);
  EXPECT_EQ(b.sealing(clock.now())->material.name[0], 0x10);
  // A key made by a later rotation is newer by far: it seals.
  clock.advance(1h);
  a.rotate(clock.now(), fillWith(0x01));
  EXPECT_EQ(a.sealing(clock.now())->material.name[0], 0x01);
}

TEST(TicketKeySet, IgnoresPeerKeysTooOldToOpenAnything) {
  ManualClock clock;
  TicketKeySet set(1h, 2h);
  repl::TicketKey old;
  old.name.fill(7);
  old.age = 3h;
  EXPECT_FALSE(set.merge(std::span(&old, 1), clock.now()));
  EXPECT_TRUE(set.keys().empty());
  old.age = 2h + 59min;
  EXPECT_TRUE(set.merge(std::span(&old, 1), clock.now()));
  EXPECT_EQ(set.sealing(clock.now()), nullptr);  // opens, never seals
  EXPECT_NE(set.find(old.name, clock.now()), nullptr);
  clock.advance(1min);
  set.rotate(clock.now(), counterRandom());
  EXPECT_EQ(set.find(old.name, clock.now()), nullptr);
}

TEST(TicketKeys, SnapshotFollowsTheSet) {
  ManualClock clock;
  TicketKeys keys(1h, 2h, counterRandom());
  EXPECT_FALSE(keys.snapshot()->canSeal);
  EXPECT_TRUE(keys.tick(clock.now()));
  auto snap = keys.snapshot();
  ASSERT_EQ(snap->keys.size(), 1u);
  EXPECT_TRUE(snap->canSeal);
  clock.advance(1h);
  EXPECT_TRUE(keys.tick(clock.now()));
  EXPECT_EQ(keys.snapshot()->keys.size(), 2u);
  EXPECT_EQ(snap->keys.size(), 1u);  // an older snapshot is immutable
}

// ------------------------------------------------------------------ SNI selection

TEST(SniMap, ExactBeforeWildcardElseDefault) {
  SniMap m({{"default.example.com"}, {"*.b.example.com"}, {"x.b.example.com", "a.example.com"}});
  EXPECT_EQ(m.select("a.example.com"), 2u);
  EXPECT_EQ(m.select("A.Example.COM."), 2u);
  EXPECT_EQ(m.select("x.b.example.com"), 2u);  // exact beats the wildcard
  EXPECT_EQ(m.select("y.b.example.com"), 1u);
  EXPECT_EQ(m.select("b.example.com"), 0u);      // a wildcard needs a label
  EXPECT_EQ(m.select("z.y.b.example.com"), 0u);  // ...exactly one
  EXPECT_EQ(m.select("default.example.com"), 0u);
  EXPECT_EQ(m.select(""), 0u);
  EXPECT_EQ(m.select("nothing.test"), 0u);
}

// ------------------------------------------------------------------ in-memory handshakes

struct SslFree {
  void operator()(SSL* s) const { SSL_free(s); }
};
using SslPtr = std::unique_ptr<SSL, SslFree>;
struct CtxFree {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
using CtxPtr = std::unique_ptr<SSL_CTX, CtxFree>;
struct SessFree {
  void operator()(SSL_SESSION* s) const { SSL_SESSION_free(s); }
};
using SessPtr = std::unique_ptr<SSL_SESSION, SessFree>;

void join(SSL* client, SSL* server) {
  BIO *cb = nullptr, *sb = nullptr;
  ASSERT_EQ(BIO_new_bio_pair(&cb, 0, &sb, 0), 1);
  SSL_set_bio(client, cb, cb);
  SSL_set_bio(server, sb, sb);
}

// Steps both sides until both finished (true) or one failed (false).
bool handshake(SSL* client, SSL* server) {
  bool cDone = false, sDone = false;
  for (int i = 0; i < 50 && !(cDone && sDone); ++i) {
    if (!cDone) {
      int r = SSL_do_handshake(client);
      if (r == 1)
        cDone = true;
      else if (int e = SSL_get_error(client, r);
               e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
        return false;
    }
    if (!sDone) {
      int r = SSL_do_handshake(server);
      if (r == 1)
        sDone = true;
      else if (int e = SSL_get_error(server, r);
               e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
        return false;
    }
  }
  return cDone && sDone;
}

// Moves a byte server -> client so the client also processes what follows the handshake
// (TLS 1.3 NewSessionTicket messages).
void exchangeByte(SSL* client, SSL* server) {
  char b = 'x';
  ASSERT_EQ(SSL_write(server, &b, 1), 1);
  char got = 0;
  ASSERT_EQ(SSL_read(client, &got, 1), 1);
  EXPECT_EQ(got, 'x');
}

std::string peerCn(SSL* ssl) {
  X509* x = SSL_get1_peer_certificate(ssl);
  if (!x) return "";
  char buf[256] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, buf, sizeof buf);
  X509_free(x);
  return buf;
}

CtxPtr clientCtx(int maxVersion = TLS1_3_VERSION, int minVersion = TLS1_VERSION) {
  CtxPtr c(SSL_CTX_new(TLS_client_method()));
  SSL_CTX_set_min_proto_version(c.get(), minVersion);
  SSL_CTX_set_max_proto_version(c.get(), maxVersion);
  // Old versions need the lowest security level in OpenSSL 3.
  SSL_CTX_set_security_level(c.get(), 0);
  SSL_CTX_set_cipher_list(c.get(), "DEFAULT:@SECLEVEL=0");
  return c;
}

SslPtr clientSsl(SSL_CTX* ctx, const char* sni = nullptr, const std::string& alpn = "") {
  SslPtr s(SSL_new(ctx));
  if (sni) SSL_set_tlsext_host_name(s.get(), sni);
  if (!alpn.empty())
    SSL_set_alpn_protos(s.get(), reinterpret_cast<const unsigned char*>(alpn.data()),
                        static_cast<unsigned>(alpn.size()));
  SSL_set_connect_state(s.get());
  return s;
}

CertSpec named(const std::string& cn, std::vector<std::string> names) {
  CertSpec s;
  s.commonName = cn;
  s.dnsNames = std::move(names);
  return s;
}

class TlsHandshake : public ::testing::Test {
 protected:
  // A configuration with one https frontend serving the given certificates.
  config::ConfigPtr makeConfig(const std::vector<Issued>& certs, const std::string& tlsExtra = "",
                               const std::string& top = "") {
    std::string yaml =
        top +
        "frontends:\n  - name: web\n    bind: 127.0.0.1:8443\n    default_backend: b\n"
        "    tls:\n" +
        tlsExtra + "      certificates:\n";
    for (const auto& c : certs)
      yaml += "        - { cert: " + c.certFile + ", key: " + c.keyFile + " }\n";
    yaml += "backends: [{ name: b, servers: [{ name: s, address: 127.0.0.1:9 }] }]\n";
    config::LoadOptions opt;
    opt.node = "lb1";
    auto r = config::loadConfigString(yaml, pki_.dir() + "/t.yaml", opt);
    EXPECT_TRUE(r.ok()) << (r.errors.empty() ? "" : r.errors[0].toString());
    return r.config;
  }

  std::shared_ptr<ServerTls> server(const config::ConfigPtr& c, std::shared_ptr<TicketKeys> keys) {
    auto r = ServerTls::build(c->frontends[0], *c, std::move(keys));
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error());
    return r.ok() ? *r : nullptr;
  }

  TestPki pki_;
};

TEST_F(TlsHandshake, SniPicksTheCertificate) {
  auto def = pki_.issue("def", named("default", {"default.example.com"}));
  auto a = pki_.issue("a", named("a", {"a.example.com"}));
  auto wild = pki_.issue("wild", named("wild", {"*.b.example.com"}));
  auto cfg = makeConfig({def, a, wild});
  auto tls = server(cfg, nullptr);
  ASSERT_TRUE(tls);
  EXPECT_EQ(tls->certificateCount(), 3u);
  auto cctx = clientCtx();
  struct Case {
    const char* sni;
    const char* cn;
  } cases[] = {{"a.example.com", "a"},       {"A.EXAMPLE.COM", "a"},    {"x.b.example.com", "wild"},
               {"b.example.com", "default"}, {"other.test", "default"}, {nullptr, "default"}};
  for (const auto& c : cases) {
    SslPtr cl = clientSsl(cctx.get(), c.sni);
    SslPtr sv(tls->newSsl());
    join(cl.get(), sv.get());
    ASSERT_TRUE(handshake(cl.get(), sv.get()))
        << (c.sni ? c.sni : "(no sni)") << ": " << lastSslError();
    EXPECT_EQ(peerCn(cl.get()), c.cn) << (c.sni ? c.sni : "(no sni)");
  }
}

TEST_F(TlsHandshake, AlpnHttp11OrNone) {
  auto a = pki_.issue("a", named("a", {"a.example.com"}));
  auto tls = server(makeConfig({a}), nullptr);
  auto cctx = clientCtx();
  {
    SslPtr cl = clientSsl(cctx.get(), "a.example.com", std::string("\x02h2\x08http/1.1", 12));
    SslPtr sv(tls->newSsl());
    join(cl.get(), sv.get());
    ASSERT_TRUE(handshake(cl.get(), sv.get()));
    EXPECT_EQ(alpnOf(sv.get()), "http/1.1");
    EXPECT_EQ(alpnOf(cl.get()), "http/1.1");
  }
  {
    SslPtr cl = clientSsl(cctx.get(), "a.example.com", std::string("\x02h2", 3));
    SslPtr sv(tls->newSsl());
    join(cl.get(), sv.get());
    ASSERT_TRUE(handshake(cl.get(), sv.get()));  // no common protocol: no ALPN, no failure
    EXPECT_EQ(alpnOf(sv.get()), "");
  }
}

TEST_F(TlsHandshake, OnlyTls12And13) {
  auto a = pki_.issue("a", named("a", {"a.example.com"}));
  auto tls = server(makeConfig({a}), nullptr);
  for (int v : {TLS1_VERSION, TLS1_1_VERSION}) {
    auto cctx = clientCtx(v, v);
    SslPtr cl = clientSsl(cctx.get(), "a.example.com");
    SslPtr sv(tls->newSsl());
    join(cl.get(), sv.get());
    EXPECT_FALSE(handshake(cl.get(), sv.get())) << "version " << v;
    ERR_clear_error();
  }
  for (int v : {TLS1_2_VERSION, TLS1_3_VERSION}) {
    auto cctx = clientCtx(v, v);
    SslPtr cl = clientSsl(cctx.get(), "a.example.com");
    SslPtr sv(tls->newSsl());
    join(cl.get(), sv.get());
    EXPECT_TRUE(handshake(cl.get(), sv.get())) << "version " << v << ": " << lastSslError();
    EXPECT_EQ(SSL_version(sv.get()), v);
  }
  // min_version 1.3 refuses a 1.2-only client.
  auto tls13 = server(makeConfig({a}, "      min_version: 1.3\n"), nullptr);
  auto cctx = clientCtx(TLS1_2_VERSION, TLS1_2_VERSION);
  SslPtr cl = clientSsl(cctx.get(), "a.example.com");
  SslPtr sv(tls13->newSsl());
  join(cl.get(), sv.get());
  EXPECT_FALSE(handshake(cl.get(), sv.get()));
  ERR_clear_error();
}

// One full handshake against `first`, then a resumption attempt against `second`; returns
// whether it resumed.
bool resumesAcross(ServerTls& first, ServerTls& second, int version) {
  auto cctx = clientCtx(version, version);
  SSL_CTX_set_session_cache_mode(cctx.get(), SSL_SESS_CACHE_CLIENT);
  SessPtr sess;
  {
    SslPtr cl = clientSsl(cctx.get(), "a.example.com");
    SslPtr sv(first.newSsl());
    join(cl.get(), sv.get());
    if (!handshake(cl.get(), sv.get())) return false;
    exchangeByte(cl.get(), sv.get());
    if (SSL_session_reused(cl.get())) return false;
    sess.reset(SSL_get1_session(cl.get()));
    SSL_shutdown(cl.get());  // a connection closed without close_notify loses its session
  }
  if (!sess || !SSL_SESSION_is_resumable(sess.get())) return false;
  SslPtr cl = clientSsl(cctx.get(), "a.example.com");
  SSL_set_session(cl.get(), sess.get());
  SslPtr sv(second.newSsl());
  join(cl.get(), sv.get());
  if (!handshake(cl.get(), sv.get())) return false;
  exchangeByte(cl.get(), sv.get());
  return SSL_session_reused(cl.get()) == 1 && sessionResumed(sv.get());
}

TEST_F(TlsHandshake, TicketsResumeOnThePeerOnceKeysAreShared) {
  auto a = pki_.issue("a", named("a", {"a.example.com"}));
  auto cfg = makeConfig({a});
  ManualClock clock;
  auto keysA = std::make_shared<TicketKeys>(1h, 2h);
  auto keysB = std::make_shared<TicketKeys>(1h, 2h);
  keysA->tick(clock.now());
  keysB->tick(clock.now());  // each node made its own key
  auto nodeA = server(cfg, keysA);
  auto nodeB = server(cfg, keysB);
  for (int v : {TLS1_2_VERSION, TLS1_3_VERSION}) {
    EXPECT_TRUE(resumesAcross(*nodeA, *nodeA, v)) << v;   // same node
    EXPECT_FALSE(resumesAcross(*nodeA, *nodeB, v)) << v;  // keys not shared yet
  }
  // State sync: each side hands its keys to the other.
  keysB->merge(keysA->toWire(clock.now()), clock.now());
  keysA->merge(keysB->toWire(clock.now()), clock.now());
  for (int v : {TLS1_2_VERSION, TLS1_3_VERSION}) {
    EXPECT_TRUE(resumesAcross(*nodeA, *nodeB, v)) << v;
    EXPECT_TRUE(resumesAcross(*nodeB, *nodeA, v)) << v;
  }
  EXPECT_GT(keysA->sealed.load(), 0u);
  EXPECT_GT(keysB->opened.load(), 0u);
  EXPECT_GT(keysA->unknownKey.load() + keysB->unknownKey.load(), 0u);
}

TEST_F(TlsHandshake, RotatedKeyStillOpensAndRenews) {
  auto a = pki_.issue("a", named("a", {"a.example.com"}));
  auto cfg = makeConfig({a});
  ManualClock clock;
  auto keys = std::make_shared<TicketKeys>(1h, 2h);
  keys->tick(clock.now());
  auto node = server(cfg, keys);
  auto cctx = clientCtx(TLS1_2_VERSION, TLS1_2_VERSION);
  SessPtr sess;
  {
    SslPtr cl = clientSsl(cctx.get(), "a.example.com");
    SslPtr sv(node->newSsl());
    join(cl.get(), sv.get());
    ASSERT_TRUE(handshake(cl.get(), sv.get()));
    sess.reset(SSL_get1_session(cl.get()));
    SSL_shutdown(cl.get());
  }
  clock.advance(1h);
  ASSERT_TRUE(keys->tick(clock.now()));  // a new key seals; the old one opens
  {
    SslPtr cl = clientSsl(cctx.get(), "a.example.com");
    SSL_set_session(cl.get(), sess.get());
    SslPtr sv(node->newSsl());
    join(cl.get(), sv.get());
    ASSERT_TRUE(handshake(cl.get(), sv.get()));
    EXPECT_TRUE(SSL_session_reused(cl.get()));
    EXPECT_EQ(keys->renewed.load(), 1u);
  }
  clock.advance(2h);
  keys->tick(clock.now());  // the first key is gone: a full handshake
  {
    SslPtr cl = clientSsl(cctx.get(), "a.example.com");
    SSL_set_session(cl.get(), sess.get());
    SslPtr sv(node->newSsl());
    join(cl.get(), sv.get());
    ASSERT_TRUE(handshake(cl.get(), sv.get()));
    EXPECT_FALSE(SSL_session_reused(cl.get()));
  }
}

TEST_F(TlsHandshake, TicketsOffMeansNoResumption) {
  auto a = pki_.issue("a", named("a", {"a.example.com"}));
  auto cfg = makeConfig({a}, "", "tls: { session_tickets: false }\n");
  auto keys = std::make_shared<TicketKeys>(1h, 2h);
  keys->tick(TimePoint{});
  auto node = server(cfg, keys);
  for (int v : {TLS1_2_VERSION, TLS1_3_VERSION}) EXPECT_FALSE(resumesAcross(*node, *node, v)) << v;
  EXPECT_EQ(keys->sealed.load(), 0u);
}

TEST_F(TlsHandshake, AConnectionOutlivesTheContextItStartedWith) {
  auto a = pki_.issue("a", named("a", {"a.example.com"}));
  auto b = pki_.issue("b", named("b", {"b.example.com"}));
  auto cfg = makeConfig({a, b});
  auto node = server(cfg, nullptr);
  auto cctx = clientCtx();
  SslPtr cl = clientSsl(cctx.get(), "b.example.com");
  SslPtr sv(node->newSsl());
  join(cl.get(), sv.get());
  // The client hello is on its way when a reload replaces the contexts.
  ASSERT_EQ(SSL_do_handshake(cl.get()), -1);
  node.reset();  // the SSL keeps what it needs (checked under ASan)
  ASSERT_TRUE(handshake(cl.get(), sv.get())) << lastSslError();
  EXPECT_EQ(peerCn(cl.get()), "b");
  exchangeByte(cl.get(), sv.get());
}

// ------------------------------------------------------------------ client side

class ClientTlsTest : public TlsHandshake {
 protected:
  std::shared_ptr<ClientTls> client(const std::string& tlsYaml) {
    std::string yaml =
        "frontends: [{ name: f, bind: ':80', default_backend: b }]\n"
        "backends: [{ name: b, health: { type: tcp }, servers: [{ name: s, address: 127.0.0.1:9 "
        "}], tls: " +
        tlsYaml + " }]\n";
    config::LoadOptions opt;
    opt.node = "lb1";
    auto r = config::loadConfigString(yaml, pki_.dir() + "/c.yaml", opt);
    EXPECT_TRUE(r.ok()) << (r.errors.empty() ? "" : r.errors[0].toString());
    auto c = ClientTls::build(r.config->backends[0]);
    EXPECT_TRUE(c.ok()) << (c.ok() ? "" : c.error());
    return *c;
  }

  // Handshake of `cl` against a server presenting `cert`; returns success.
  bool against(const Issued& cert, ClientTls& cl, const SocketAddress& addr, uint64_t serverId = 1,
               bool* resumed = nullptr) {
    auto cfg = makeConfig({cert});
    auto srv = server(cfg, nullptr);
    SslPtr c(cl.newSsl(serverId, addr, true));
    SslPtr s(srv->newSsl());
    join(c.get(), s.get());
    bool ok = handshake(c.get(), s.get());
    if (ok) exchangeByte(c.get(), s.get());
    if (resumed) *resumed = ok && SSL_session_reused(c.get());
    if (!ok) lastError_ = ClientTls::verifyError(c.get()) + " " + lastSslError();
    return ok;
  }
  std::string lastError_;
};

TEST_F(ClientTlsTest, VerifiesNameOrIpAgainstTheCa) {
  const SocketAddress addr = *SocketAddress::parse("127.0.0.1:443");
  auto named1 = pki_.issue("api", named("api", {"api.internal"}));
  auto byIp = pki_.issue("ip", [] {
    CertSpec s;
    s.commonName = "ip";
    s.ips = {"127.0.0.1"};
    return s;
  }());
  CertSpec selfSpec = named("self", {"api.internal"});
  selfSpec.selfSigned = true;
  auto self = pki_.issue("self", selfSpec);

  auto byName = client("{ ca_file: " + pki_.caFile() + ", server_name: api.internal }");
  EXPECT_TRUE(against(named1, *byName, addr)) << lastError_;
  EXPECT_FALSE(against(byIp, *byName, addr));  // no such DNS name
  EXPECT_NE(lastError_.find("hostname mismatch"), std::string::npos) << lastError_;
  EXPECT_FALSE(against(self, *byName, addr));  // not signed by the CA
  EXPECT_NE(lastError_.find("self-signed"), std::string::npos) << lastError_;

  auto byAddress = client("{ ca_file: " + pki_.caFile() + " }");
  EXPECT_TRUE(against(byIp, *byAddress, addr)) << lastError_;
  EXPECT_FALSE(against(named1, *byAddress, addr));  // carries no IP
  EXPECT_FALSE(against(byIp, *byAddress, *SocketAddress::parse("127.0.0.2:443")));

  auto unverified = client("{ verify: false }");
  EXPECT_TRUE(against(self, *unverified, addr)) << lastError_;
}

TEST_F(ClientTlsTest, ResumesPerServer) {
  const SocketAddress addr = *SocketAddress::parse("127.0.0.1:443");
  auto cert = pki_.issue("api", named("api", {"api.internal"}));
  auto cfg = makeConfig({cert});
  auto keys = std::make_shared<TicketKeys>(1h, 2h);
  keys->tick(TimePoint{});
  auto srv = server(cfg, keys);
  auto cl = client("{ ca_file: " + pki_.caFile() + ", server_name: api.internal }");
  auto connect = [&](uint64_t id) {
    SslPtr c(cl->newSsl(id, addr, false));
    SslPtr s(srv->newSsl());
    join(c.get(), s.get());
    EXPECT_TRUE(handshake(c.get(), s.get()));
    exchangeByte(c.get(), s.get());  // the TLS 1.3 ticket arrives
    SSL_shutdown(c.get());
    return SSL_session_reused(c.get()) == 1;
  };
  EXPECT_FALSE(connect(1));
  EXPECT_TRUE(connect(1));
  EXPECT_FALSE(connect(2));  // another server has its own session
}

}  // namespace
}  // namespace halb::balancer
