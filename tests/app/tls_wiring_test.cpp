// TLS on a node: two nodes with state sync over loopback exchange their session-ticket keys,
// so a TLS session one node made resumes on the other (what a failover needs). Handshakes run
// in memory against each node's contexts; the sync link is real TCP on 127.0.0.1.
#include "app/tls_wiring.h"

#include <gtest/gtest.h>
#include <openssl/ssl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "app/node.h"
#include "app/statesync_wiring.h"
#include "tests/common/test_pki.h"

namespace halb::app {
namespace {

using namespace std::chrono_literals;

class KeyFile {
 public:
  KeyFile() : path_("/tmp/halb-tls-sync-key-" + std::to_string(::getpid())) {
    std::ofstream(path_) << "tls-wiring-test-shared-secret-0123456789\n";
    ::chmod(path_.c_str(), 0600);
  }
  ~KeyFile() { ::unlink(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

config::ConfigPtr makeConfig(const std::string& name, const std::string& keyFile,
                             std::optional<SocketAddress> peer, const halb::testing::Issued& cert) {
  auto c = std::make_shared<config::Config>();
  c->self.name = name;
  c->statesync.enabled = true;
  c->statesync.listen = *SocketAddress::parse("127.0.0.1:0");
  c->statesync.peer = peer;
  c->statesync.keyFile = keyFile;
  c->statesync.reconnectMin = 10ms;
  c->statesync.reconnectMax = 100ms;
  config::Frontend f;
  f.name = "web";
  f.mode = config::Mode::Http;
  f.tls.emplace();
  f.tls->certificates.push_back({cert.certFile, cert.keyFile, {}});
  c->frontends.push_back(f);
  return c;
}

bool pump(Node& a, Node& b, const std::function<bool()>& done, Duration limit = 5s) {
  auto end = SteadyClock::now() + limit;
  while (!done()) {
    if (SteadyClock::now() > end) return false;
    a.loop().runUntil([] { return false; }, 2ms);
    b.loop().runUntil([] { return false; }, 2ms);
  }
  return true;
}

struct Side {
  std::unique_ptr<Node> node;
  std::unique_ptr<StateSyncNode> sync;
  std::unique_ptr<TlsNode> tls;
};

void startSide(Side& s, config::ConfigPtr cfg, const std::string& name) {
  s.node = std::make_unique<Node>(std::move(cfg), "test.yaml", name);
  std::string err;
  s.tls = TlsNode::start(*s.node, nullptr, err);
  ASSERT_TRUE(s.tls) << err;
  StateSyncPorts ports;
  TlsNode* tls = s.tls.get();
  ports.onTicketKeys = [tls](std::vector<repl::TicketKey> k) { tls->onPeerKeys(std::move(k)); };
  s.sync = StateSyncNode::start(*s.node, std::move(ports), err);
  ASSERT_TRUE(s.sync) << err;
  s.tls->attach(&s.sync->service());
}

bool handshake(SSL* c, SSL* s) {
  bool cd = false, sd = false;
  for (int i = 0; i < 50 && !(cd && sd); ++i) {
    if (!cd) {
      int r = SSL_do_handshake(c);
      if (r == 1)
        cd = true;
      else if (int e = SSL_get_error(c, r); e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
        return false;
    }
    if (!sd) {
      int r = SSL_do_handshake(s);
      if (r == 1)
        sd = true;
      else if (int e = SSL_get_error(s, r); e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
        return false;
    }
  }
  return cd && sd;
}

// A TLS 1.3 connection from `client` to `server`'s frontend; returns whether it resumed and
// leaves the client's session (with its ticket) in `sess`.
bool connectOnce(SSL_CTX* client, const balancer::ServerTls& server, SSL_SESSION*& sess) {
  SSL* c = SSL_new(client);
  SSL* s = server.newSsl();
  BIO *cb = nullptr, *sb = nullptr;
  BIO_new_bio_pair(&cb, 0, &sb, 0);
  SSL_set_bio(c, cb, cb);
  SSL_set_bio(s, sb, sb);
  SSL_set_tlsext_host_name(c, "www.example.com");
  if (sess) SSL_set_session(c, sess);
  SSL_set_connect_state(c);
  bool ok = handshake(c, s);
  bool resumed = ok && SSL_session_reused(c);
  if (ok) {
    char x = 'x', y = 0;
    SSL_write(s, &x, 1);
    SSL_read(c, &y, 1);  // the NewSessionTicket arrives with it
    if (sess) SSL_SESSION_free(sess);
    sess = SSL_get1_session(c);
    SSL_shutdown(c);
  }
  SSL_free(c);
  SSL_free(s);
  return resumed;
}

TEST(TlsWiring, TicketKeysTravelOverStateSyncAndSessionsResumeOnThePeer) {
  KeyFile key;
  halb::testing::TestPki pki;
  halb::testing::CertSpec spec;
  spec.commonName = "www.example.com";
  spec.dnsNames = {"www.example.com"};
  auto cert = pki.issue("www", spec);

  Side a, b;
  startSide(a, makeConfig("lb1", key.path(), std::nullopt, cert), "lb1");
  ASSERT_TRUE(a.sync);
  startSide(b, makeConfig("lb2", key.path(), a.sync->service().listenAddress(), cert), "lb2");
  ASSERT_TRUE(b.sync);
  a.sync->service().setPeer(b.sync->service().listenAddress());

  // Each node made a key at start; after the exchange both hold both and seal with the same.
  ASSERT_TRUE(pump(*a.node, *b.node,
                   [&] {
                     auto ka = a.tls->keys()->snapshot(), kb = b.tls->keys()->snapshot();
                     return ka->keys.size() == 2 && kb->keys.size() == 2 &&
                            ka->keys[0] == kb->keys[0];
                   }))
      << a.tls->keys()->size() << " / " << b.tls->keys()->size();

  SSL_CTX* client = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_session_cache_mode(client, SSL_SESS_CACHE_CLIENT);
  SSL_SESSION* sess = nullptr;
  const auto& fa = *a.tls->contexts()->frontends[0];
  const auto& fb = *b.tls->contexts()->frontends[0];
  EXPECT_FALSE(connectOnce(client, fa, sess));  // full handshake on lb1
  EXPECT_TRUE(connectOnce(client, fb, sess));   // "failover": resumes on lb2
  EXPECT_TRUE(connectOnce(client, fa, sess));   // and back (TLS 1.3 renews every ticket)
  EXPECT_GE(b.tls->keys()->renewed.load(), 1u);
  SSL_SESSION_free(sess);
  SSL_CTX_free(client);

  // The exchange shows in the metrics.
  std::string m = a.node->metricsText();
  EXPECT_NE(m.find("halb_tls_ticket_keys 2"), std::string::npos) << m;
  EXPECT_NE(m.find("halb_statesync_ticket_key_sets_total{direction=\"received\"}"),
            std::string::npos);
}

}  // namespace
}  // namespace halb::app
