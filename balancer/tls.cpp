// TLS contexts and session-ticket keys (tls.h), over OpenSSL 3.
#include "balancer/tls.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cstring>

#include "common/crypto.h"
#include "common/log.h"
#include "config/tls_files.h"

namespace halb::balancer {

// ======================================================================== TicketKeySet

void TicketKeySet::sort() {
  std::stable_sort(keys_.begin(), keys_.end(),
                   [](const Key& a, const Key& b) { return a.created > b.created; });
  // Keys made within moments of each other (both nodes rotated at once, or started together)
  // may sort differently on the two nodes, whose view of a key's birth is off by the transfer
  // time. Among those the largest name comes first, so both nodes seal with the same key.
  if (keys_.size() < 2) return;
  const Duration window = std::min<Duration>(std::chrono::seconds(2), rotation_ / 2);
  auto end = std::find_if(keys_.begin(), keys_.end(),
                          [&](const Key& k) { return keys_[0].created - k.created > window; });
  std::sort(keys_.begin(), end,
            [](const Key& a, const Key& b) { return a.material.name > b.material.name; });
}

void TicketKeySet::expire(TimePoint now) {
  const Duration keep = rotation_ + lifetime_;
  std::erase_if(keys_, [&](const Key& k) { return now - k.created >= keep; });
  if (keys_.size() > kMaxKeys) keys_.resize(kMaxKeys);  // newest first: the oldest go
}

bool TicketKeySet::rotate(TimePoint now, const Random& random) {
  expire(now);
  if (sealing(now) != nullptr) return false;
  Key k;
  auto fill = [&](std::span<uint8_t> out) {
    if (random)
      random(out);
    else
      randomBytes(out);
  };
  fill(k.material.name);
  fill(k.material.aesKey);
  fill(k.material.hmacKey);
  k.created = now;
  keys_.insert(keys_.begin(), k);
  sort();
  expire(now);
  return true;
}

bool TicketKeySet::merge(std::span<const repl::TicketKey> keys, TimePoint now) {
  bool changed = false;
  for (const repl::TicketKey& in : keys) {
    const Duration age = std::max(in.age, Duration::zero());
    const TimePoint created = now - age;
    auto it = std::find_if(keys_.begin(), keys_.end(),
                           [&](const Key& k) { return k.material.name == in.name; });
    if (it != keys_.end()) {
      // The same key seen twice (our own coming back, or a resend): keep the earlier birth so
      // both nodes retire it at about the same time.
      if (created < it->created) {
        it->created = created;
        changed = true;
      }
      continue;
    }
    if (age >= rotation_ + lifetime_) continue;  // already useless
    Key k;
    k.material = in;
    k.material.age = Duration::zero();
    k.created = created;
    keys_.push_back(k);
    changed = true;
  }
  if (changed) sort();
  size_t before = keys_.size();
  expire(now);
  return changed || keys_.size() != before;
}

void TicketKeySet::setTimes(Duration rotation, Duration sessionLifetime) {
  rotation_ = rotation;
  lifetime_ = sessionLifetime;
}

const TicketKeySet::Key* TicketKeySet::sealing(TimePoint now) const {
  if (keys_.empty() || now - keys_[0].created >= rotation_) return nullptr;
  return &keys_[0];
}

const TicketKeySet::Key* TicketKeySet::find(std::span<const uint8_t> name, TimePoint now) const {
  if (name.size() != 16) return nullptr;
  for (const Key& k : keys_)
    if (std::memcmp(k.material.name.data(), name.data(), 16) == 0)
      return now - k.created < rotation_ + lifetime_ ? &k : nullptr;
  return nullptr;
}

std::vector<repl::TicketKey> TicketKeySet::toWire(TimePoint now) const {
  std::vector<repl::TicketKey> out;
  out.reserve(keys_.size());
  for (const Key& k : keys_) {
    repl::TicketKey t = k.material;
    t.age = now - k.created;
    out.push_back(t);
  }
  return out;
}

TimePoint TicketKeySet::nextEvent(TimePoint now) const {
  if (keys_.empty()) return now;
  TimePoint next = keys_[0].created + rotation_;                        // the sealing key retires
  next = std::min(next, keys_.back().created + rotation_ + lifetime_);  // the oldest expires
  return std::max(next, now);
}

// ======================================================================== TicketKeys

TicketKeys::TicketKeys(Duration rotation, Duration sessionLifetime, TicketKeySet::Random random)
    : set_(rotation, sessionLifetime), random_(std::move(random)) {
  published_.store(std::make_shared<const Snapshot>(), std::memory_order_release);
}

void TicketKeys::publish(TimePoint now) {
  auto snap = std::make_shared<Snapshot>();
  for (const auto& k : set_.keys()) snap->keys.push_back(k.material);
  snap->canSeal = set_.sealing(now) != nullptr;
  published_.store(std::move(snap), std::memory_order_release);
}

bool TicketKeys::tick(TimePoint now) {
  std::lock_guard lock(mu_);
  bool made = set_.rotate(now, random_);
  // Publish on every tick: a key may also have stopped sealing or expired.
  publish(now);
  return made;
}

bool TicketKeys::merge(std::span<const repl::TicketKey> keys, TimePoint now) {
  std::lock_guard lock(mu_);
  bool changed = set_.merge(keys, now);
  if (changed) publish(now);
  return changed;
}

void TicketKeys::setTimes(Duration rotation, Duration sessionLifetime, TimePoint now) {
  std::lock_guard lock(mu_);
  set_.setTimes(rotation, sessionLifetime);
  set_.rotate(now, random_);
  publish(now);
}

std::vector<repl::TicketKey> TicketKeys::toWire(TimePoint now) const {
  std::lock_guard lock(mu_);
  return set_.toWire(now);
}

TimePoint TicketKeys::nextEvent(TimePoint now) const {
  std::lock_guard lock(mu_);
  return set_.nextEvent(now);
}

size_t TicketKeys::size() const {
  std::lock_guard lock(mu_);
  return set_.keys().size();
}

// ======================================================================== SniMap

namespace {

std::string normalizeHost(std::string_view host) {
  if (!host.empty() && host.back() == '.') host.remove_suffix(1);
  std::string h(host);
  for (char& c : h) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return h;
}

}  // namespace

SniMap::SniMap(const std::vector<std::vector<std::string>>& names) {
  for (size_t i = 0; i < names.size(); ++i) {
    for (const std::string& n : names[i]) {
      if (n.size() > 2 && n[0] == '*' && n[1] == '.')
        wildcard_.emplace(n.substr(1), i);  // first certificate wins
      else
        exact_.emplace(n, i);
    }
  }
}

size_t SniMap::select(std::string_view host) const {
  if (host.empty()) return 0;
  std::string h = normalizeHost(host);
  if (auto it = exact_.find(h); it != exact_.end()) return it->second;
  // "*.example.com" stands for exactly one label: look the suffix after the first label up.
  size_t dot = h.find('.');
  if (dot != std::string::npos && dot > 0) {
    if (auto it = wildcard_.find(h.substr(dot)); it != wildcard_.end()) return it->second;
  }
  return 0;
}

// ======================================================================== OpenSSL glue

std::string lastSslError() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? std::string("unknown error") : out;
}

namespace {

// The SSL's owner, reachable from OpenSSL callbacks. Held by the SSL itself (freed with it),
// so the contexts and keys a handshake uses stay alive across a reload.
struct ServerRef {
  std::shared_ptr<const ServerTls> tls;
};
struct ClientRef {
  std::shared_ptr<const ClientTls> tls;
  uint64_t serverId = 0;
};

template <class T>
void freeRef(void* /*parent*/, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
  delete static_cast<T*>(ptr);
}

int serverRefIndex() {
  static const int idx = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, freeRef<ServerRef>);
  return idx;
}
int clientRefIndex() {
  static const int idx = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, freeRef<ClientRef>);
  return idx;
}

const ServerTls* serverOf(SSL* ssl) {
  auto* r = static_cast<ServerRef*>(SSL_get_ex_data(ssl, serverRefIndex()));
  return r ? r->tls.get() : nullptr;
}

// SNI (RFC 6066 §3): pick the certificate's context before the server's first flight.
int onServerName(SSL* ssl, int* /*alert*/, void* /*arg*/) {
  const ServerTls* tls = serverOf(ssl);
  if (!tls) return SSL_TLSEXT_ERR_OK;
  const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  SSL_CTX* want = tls->contextFor(name ? std::string_view(name) : std::string_view());
  if (want != SSL_get_SSL_CTX(ssl)) SSL_set_SSL_CTX(ssl, want);
  return SSL_TLSEXT_ERR_OK;
}

// ALPN (RFC 7301): http/1.1 when the client offers it; a client that offers only other
// protocols (h2 alone) gets no ALPN rather than a fatal alert, as nginx and HAProxy do.
int onAlpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
           unsigned int inlen, void*) {
  static const unsigned char kHttp11[] = "\x08http/1.1";
  unsigned char* sel = nullptr;
  unsigned char selLen = 0;
  if (SSL_select_next_proto(&sel, &selLen, kHttp11, sizeof kHttp11 - 1, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK;
  *out = sel;
  *outlen = selLen;
  return SSL_TLSEXT_ERR_OK;
}

EVP_CIPHER* ticketCipher() {
  static EVP_CIPHER* c = EVP_CIPHER_fetch(nullptr, "AES-256-CBC", nullptr);
  return c;
}

bool setMacKey(EVP_MAC_CTX* hctx, const std::array<uint8_t, 32>& key) {
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_octet_string(
                             OSSL_MAC_PARAM_KEY, const_cast<uint8_t*>(key.data()), key.size()),
                         OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                         OSSL_PARAM_construct_end()};
  return EVP_MAC_CTX_set_params(hctx, params) == 1;
}

// Session tickets sealed and opened with the node's shared keys (the RFC 5077 §4 layout that
// OpenSSL uses: key name, IV, AES-256-CBC, HMAC-SHA256). Returns, per OpenSSL: on sealing 1
// (sealed) or 0 (issue no ticket); on opening 1 (ok), 2 (ok, renew it with the current key),
// 0 (unknown key: full handshake), -1 (error).
int onTicket(SSL* ssl, unsigned char keyName[16], unsigned char iv[EVP_MAX_IV_LENGTH],
             EVP_CIPHER_CTX* cctx, EVP_MAC_CTX* hctx, int enc) {
  const ServerTls* tls = serverOf(ssl);
  TicketKeys* keys = tls ? tls->ticketKeys() : nullptr;
  if (!keys) return 0;  // sealing: no ticket; opening: full handshake
  auto snap = keys->snapshot();
  if (enc) {
    if (!snap->canSeal || snap->keys.empty()) return 0;
    const repl::TicketKey& k = snap->keys[0];
    std::memcpy(keyName, k.name.data(), 16);
    if (RAND_bytes(iv, 16) != 1) return -1;
    if (EVP_EncryptInit_ex(cctx, ticketCipher(), nullptr, k.aesKey.data(), iv) != 1) return -1;
    if (!setMacKey(hctx, k.hmacKey)) return -1;
    keys->sealed.fetch_add(1, std::memory_order_relaxed);
    return 1;
  }
  for (size_t i = 0; i < snap->keys.size(); ++i) {
    const repl::TicketKey& k = snap->keys[i];
    if (std::memcmp(keyName, k.name.data(), 16) != 0) continue;
    if (!setMacKey(hctx, k.hmacKey)) return -1;
    if (EVP_DecryptInit_ex(cctx, ticketCipher(), nullptr, k.aesKey.data(), iv) != 1) return -1;
    keys->opened.fetch_add(1, std::memory_order_relaxed);
    // TLS 1.3: always renew. OpenSSL issues post-handshake tickets on a resumption only when
    // asked to, and a client should not reuse a ticket (RFC 8446 §C.4: reuse links its
    // connections); a fresh one also restarts the ticket's age.
    if (i == 0 && snap->canSeal && SSL_version(ssl) != TLS1_3_VERSION) return 1;
    keys->renewed.fetch_add(1, std::memory_order_relaxed);
    return 2;
  }
  keys->unknownKey.fetch_add(1, std::memory_order_relaxed);
  return 0;
}

int toOpenSsl(config::TlsVersion v) {
  return v == config::TlsVersion::V1_3 ? TLS1_3_VERSION : TLS1_2_VERSION;
}

// Settings every context of ours shares; returns an error message or empty.
std::string configureCommon(SSL_CTX* ctx, config::TlsVersion min, const std::string& ciphers,
                            const std::string& suites) {
  SSL_CTX_set_min_proto_version(ctx, toOpenSsl(min));
  SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
  // No TLS compression (CRIME), no renegotiation (a client-driven CPU sink, and nothing in
  // HTTP/1.1 proxying needs it).
  SSL_CTX_set_options(
      ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  if (!ciphers.empty() && SSL_CTX_set_cipher_list(ctx, ciphers.c_str()) != 1)
    return "ciphers '" + ciphers + "': " + lastSslError();
  if (!suites.empty() && SSL_CTX_set_ciphersuites(ctx, suites.c_str()) != 1)
    return "ciphersuites '" + suites + "': " + lastSslError();
  return {};
}

}  // namespace

bool sessionResumed(SSL* ssl) {
  return SSL_session_reused(ssl) == 1;
}

std::string_view alpnOf(SSL* ssl) {
  const unsigned char* p = nullptr;
  unsigned int len = 0;
  SSL_get0_alpn_selected(ssl, &p, &len);
  return p ? std::string_view(reinterpret_cast<const char*>(p), len) : std::string_view();
}

// ======================================================================== ServerTls

Result<std::shared_ptr<ServerTls>> ServerTls::build(const config::Frontend& frontend,
                                                    const config::Config& config,
                                                    std::shared_ptr<TicketKeys> keys) {
  if (!frontend.tls || frontend.tls->certificates.empty())
    return Error{"frontend " + frontend.name + " has no TLS certificates"};
  const config::FrontendTls& t = *frontend.tls;
  std::vector<std::unique_ptr<config::tls::CertKeyPair>> pairs;
  std::vector<std::vector<std::string>> names;
  for (const auto& c : t.certificates) {
    auto lp = config::tls::loadCertKeyPair(c.certFile, c.keyFile);
    if (!lp) return Error{"frontend " + frontend.name + ": " + lp.error.message};
    names.push_back(lp.pair->names);
    pairs.push_back(std::move(lp.pair));
  }
  std::shared_ptr<ServerTls> out(new ServerTls(frontend.name, SniMap(names)));
  if (!config.tls.tickets.enabled) keys.reset();
  out->keys_ = std::move(keys);
  // Tickets of one frontend never resume on another (they may serve other certificates).
  Sha256Digest sid = sha256("halb frontend " + frontend.name);
  for (size_t i = 0; i < pairs.size(); ++i) {
    SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) return Error{"SSL_CTX_new: " + lastSslError()};
    out->contexts_.push_back(ctx);  // freed by ~ServerTls from here on
    std::string err = configureCommon(ctx, t.minVersion, t.ciphers, t.ciphersuites);
    if (!err.empty()) return Error{"frontend " + frontend.name + ": " + err};
    const auto& p = *pairs[i];
    const std::string& file = t.certificates[i].certFile;
    if (SSL_CTX_use_certificate(ctx, p.leaf.get()) != 1 ||
        SSL_CTX_use_PrivateKey(ctx, p.key.get()) != 1 || SSL_CTX_check_private_key(ctx) != 1)
      return Error{"frontend " + frontend.name + ": '" + file + "': " + lastSslError()};
    for (const auto& c : p.chain)
      if (SSL_CTX_add1_chain_cert(ctx, c.get()) != 1)
        return Error{"frontend " + frontend.name + ": chain of '" + file + "': " + lastSslError()};
    SSL_CTX_set_session_id_context(ctx, sid.data(), SSL_MAX_SID_CTX_LENGTH);
    // Resumption is by tickets only: a server-side session cache would be per process (the
    // peer could not use it) and takes a lock shared by all workers.
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (out->keys_) {
      SSL_CTX_set_timeout(ctx, static_cast<long>(std::chrono::duration_cast<std::chrono::seconds>(
                                                     config.tls.tickets.sessionLifetime)
                                                     .count()));
      SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, onTicket);
    } else {
      SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
      SSL_CTX_set_num_tickets(ctx, 0);
    }
    SSL_CTX_set_tlsext_servername_callback(ctx, onServerName);
    if (frontend.mode == config::Mode::Http) SSL_CTX_set_alpn_select_cb(ctx, onAlpn, nullptr);
  }
  return out;
}

ServerTls::~ServerTls() {
  for (SSL_CTX* c : contexts_) SSL_CTX_free(c);
}

SSL* ServerTls::newSsl() const {
  SSL* ssl = SSL_new(contexts_[0]);
  if (!ssl) return nullptr;
  auto* ref = new ServerRef{shared_from_this()};
  if (SSL_set_ex_data(ssl, serverRefIndex(), ref) != 1) {
    delete ref;
    SSL_free(ssl);
    return nullptr;
  }
  SSL_set_accept_state(ssl);
  return ssl;
}

// ======================================================================== ClientTls

namespace {

int onNewClientSession(SSL* ssl, SSL_SESSION* sess) {
  auto* r = static_cast<ClientRef*>(SSL_get_ex_data(ssl, clientRefIndex()));
  if (!r || !r->tls) return 0;
  r->tls->storeSession(r->serverId, sess);
  return 1;  // we keep the reference
}

}  // namespace

Result<std::shared_ptr<ClientTls>> ClientTls::build(const config::Backend& backend) {
  if (!backend.tls) return Error{"backend " + backend.name + " has no tls section"};
  const config::BackendTls& t = *backend.tls;
  std::shared_ptr<ClientTls> out(new ClientTls());
  out->verify_ = t.verify;
  out->serverName_ = t.serverName;
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) return Error{"SSL_CTX_new: " + lastSslError()};
  out->ctx_ = ctx;
  std::string err = configureCommon(ctx, t.minVersion, t.ciphers, t.ciphersuites);
  if (!err.empty()) return Error{"backend " + backend.name + ": " + err};
  if (t.verify) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    int ok = t.caFile.empty() ? SSL_CTX_set_default_verify_paths(ctx)
                              : SSL_CTX_load_verify_locations(ctx, t.caFile.c_str(), nullptr);
    if (ok != 1)
      return Error{"backend " + backend.name + ": trust anchors" +
                   (t.caFile.empty() ? std::string(" (system store)") : " '" + t.caFile + "'") +
                   ": " + lastSslError()};
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  }
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(ctx, onNewClientSession);
  return out;
}

ClientTls::~ClientTls() {
  for (auto& [id, s] : sessions_) SSL_SESSION_free(s);
  if (ctx_) SSL_CTX_free(ctx_);
}

void ClientTls::storeSession(uint64_t serverId, SSL_SESSION* s) const {
  std::lock_guard lock(sessionsMu_);
  auto [it, fresh] = sessions_.emplace(serverId, s);
  if (!fresh) {
    SSL_SESSION_free(it->second);
    it->second = s;
  }
}

SSL* ClientTls::newSsl(uint64_t serverId, const SocketAddress& server, bool alpnHttp) const {
  SSL* ssl = SSL_new(ctx_);
  if (!ssl) return nullptr;
  auto* ref = new ClientRef{shared_from_this(), serverId};
  if (SSL_set_ex_data(ssl, clientRefIndex(), ref) != 1) {
    delete ref;
    SSL_free(ssl);
    return nullptr;
  }
  bool ok = true;
  if (!serverName_.empty()) {
    ok = SSL_set_tlsext_host_name(ssl, serverName_.c_str()) == 1;
    if (verify_) {
      // RFC 6125: the name must be covered by a SAN dNSName; no partial-label wildcards.
      SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      ok = ok && SSL_set1_host(ssl, serverName_.c_str()) == 1;
    }
  } else if (verify_) {
    // No name configured: the certificate must carry the server's IP address (SAN iPAddress).
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
    ok = X509_VERIFY_PARAM_set1_ip(param, server.ip.data(), server.ip.isV4() ? 4 : 16) == 1;
  }
  if (ok && alpnHttp) {
    static const unsigned char kHttp11[] = "\x08http/1.1";
    ok = SSL_set_alpn_protos(ssl, kHttp11, sizeof kHttp11 - 1) == 0;  // 0 = success here
  }
  if (ok) {
    std::lock_guard lock(sessionsMu_);
    if (auto it = sessions_.find(serverId); it != sessions_.end()) SSL_set_session(ssl, it->second);
  }
  if (!ok) {
    SSL_free(ssl);
    return nullptr;
  }
  SSL_set_connect_state(ssl);
  return ssl;
}

Result<TlsContextsPtr> buildTlsContexts(const config::Config& config,
                                        std::shared_ptr<TicketKeys> keys) {
  auto out = std::make_shared<TlsContexts>();
  out->frontends.resize(config.frontends.size());
  for (size_t i = 0; i < config.frontends.size(); ++i) {
    const config::Frontend& f = config.frontends[i];
    if (!f.tls) continue;
    auto s = ServerTls::build(f, config, keys);
    if (!s.ok()) return Error{s.error()};
    out->frontends[i] = *s;
  }
  for (const config::Backend& b : config.backends) {
    if (!b.tls) continue;
    auto c = ClientTls::build(b);
    if (!c.ok()) return Error{c.error()};
    out->backends.emplace(b.id, *c);
  }
  return TlsContextsPtr(std::move(out));
}

std::string ClientTls::verifyError(SSL* ssl) {
  long r = SSL_get_verify_result(ssl);
  if (r == X509_V_OK) return {};
  return X509_verify_cert_error_string(r);
}

}  // namespace halb::balancer
