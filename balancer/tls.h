#pragma once
// TLS with OpenSSL, without Boost.Asio (the data plane wraps the SSL objects made here in
// asio::ssl::stream in its own translation units).
//
//   ServerTls     one per frontend with `tls:` and per configuration: one SSL_CTX per
//                 certificate, the one whose names match the client's SNI serves the
//                 handshake (exact names before wildcards, else the first certificate);
//                 TLS 1.2 and 1.3 only, ALPN http/1.1 on http frontends, stateless session
//                 tickets sealed with the node's TicketKeys. A reload builds new ones: new
//                 handshakes use them, established connections keep the SSL_CTX they hold a
//                 reference to.
//   ClientTls     one per backend with `tls:`: TLS towards its servers, with verification of
//                 the chain (CA file or system store) and of the name (server_name, else the
//                 server's IP address), SNI, and session resumption per server.
//   TicketKeys    the session-ticket keys: made and rotated on the control thread, merged
//                 with the peer's (state sync), read by every worker's handshakes through an
//                 atomically published snapshot.
//
// Threads: build() and TicketKeys' mutators run on the control thread; newSsl()/newClientSsl()
// and the OpenSSL callbacks run on workers, concurrently.
#include <openssl/types.h>

// SSL_SESSION is declared by ssl.h only; a forward declaration keeps that header out.
typedef struct ssl_session_st SSL_SESSION;

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/net.h"
#include "common/replication.h"
#include "common/result.h"
#include "common/time.h"
#include "config/config.h"

namespace halb::balancer {

// ------------------------------------------------------------------------ ticket keys

// The pure part of ticket-key management: which keys exist, which one seals, which ones still
// open tickets, and how the peer's keys merge in. Times are the local monotonic clock; keys
// travel between nodes with their age (common/replication.h), so the nodes' clocks need not
// agree.
//
// Lifecycle of a key: it seals new tickets while it is the newest key and younger than
// `rotation`; it opens tickets until it is `rotation + sessionLifetime` old (a ticket sealed
// at the last moment stays usable for the whole session lifetime); then it is dropped. A
// ticket opened with a key that no longer seals is renewed (the client gets a fresh ticket).
// Both nodes may make keys (whichever finds no sealing key first); the merged set is the
// union, and each node seals with the newest key it holds, so the pair converges on one.
class TicketKeySet {
 public:
  struct Key {
    repl::TicketKey material;  // `age` unused here: `created` is authoritative
    TimePoint created{};
  };
  using Random = std::function<void(std::span<uint8_t>)>;

  TicketKeySet(Duration rotation, Duration sessionLifetime)
      : rotation_(rotation), lifetime_(sessionLifetime) {}

  // Drops keys too old to open anything and makes a new key when none may seal. Returns true
  // when a key was made (the peer should hear of it).
  bool rotate(TimePoint now, const Random& random);
  // Adds the peer's keys (unknown names; a known name keeps the earlier creation time) and
  // drops what is too old. Returns true when the set changed.
  bool merge(std::span<const repl::TicketKey> keys, TimePoint now);
  // New durations (reload); keys are kept.
  void setTimes(Duration rotation, Duration sessionLifetime);

  // The key that seals new tickets, or nullptr (none young enough).
  const Key* sealing(TimePoint now) const;
  const Key* find(std::span<const uint8_t> name, TimePoint now) const;
  // Newest first.
  const std::vector<Key>& keys() const { return keys_; }
  // The set as sent to the peer (ages at `now`).
  std::vector<repl::TicketKey> toWire(TimePoint now) const;
  // When rotate() next has work (a key stops sealing or expires).
  TimePoint nextEvent(TimePoint now) const;

  Duration rotation() const { return rotation_; }
  Duration sessionLifetime() const { return lifetime_; }
  // At most this many keys are kept (the loader bounds lifetime / rotation by 64).
  static constexpr size_t kMaxKeys = 80;

 private:
  void expire(TimePoint now);
  void sort();

  Duration rotation_;
  Duration lifetime_;
  std::vector<Key> keys_;  // newest first
};

// Thread-safe holder: the control thread changes the set and publishes an immutable snapshot
// that handshakes on any worker read without locking each other out.
class TicketKeys {
 public:
  struct Snapshot {
    // Keys that still open tickets, newest first; sealing (if any) is keys[0].
    std::vector<repl::TicketKey> keys;
    bool canSeal = false;
  };

  TicketKeys(Duration rotation, Duration sessionLifetime, TicketKeySet::Random random = {});

  // ---- control thread
  // Rotation and expiry; true when a new key was made (send toWire() to the peer).
  bool tick(TimePoint now);
  bool merge(std::span<const repl::TicketKey> keys, TimePoint now);
  void setTimes(Duration rotation, Duration sessionLifetime, TimePoint now);
  std::vector<repl::TicketKey> toWire(TimePoint now) const;
  TimePoint nextEvent(TimePoint now) const;
  size_t size() const;

  // ---- any thread
  std::shared_ptr<const Snapshot> snapshot() const {
    return published_.load(std::memory_order_acquire);
  }
  // Counters for /metrics.
  std::atomic<uint64_t> sealed{0}, opened{0}, renewed{0}, unknownKey{0};

 private:
  void publish(TimePoint now);

  mutable std::mutex mu_;  // the set (control thread; tests may call from several)
  TicketKeySet set_;
  TicketKeySet::Random random_;
  std::atomic<std::shared_ptr<const Snapshot>> published_;
};

// ------------------------------------------------------------------------ SNI

// Which certificate serves a host name: exact names first, then "*.suffix" wildcards (one
// label), else the default (index 0). Pure; built from the certificates' names.
class SniMap {
 public:
  // names[i]: the names of certificate i (lower case; "*.example.com" for wildcards). A name
  // that appears twice keeps its first certificate.
  explicit SniMap(const std::vector<std::vector<std::string>>& names);
  // `host`: the SNI as the client sent it (any case, maybe a trailing dot).
  size_t select(std::string_view host) const;

 private:
  std::unordered_map<std::string, size_t> exact_;
  std::unordered_map<std::string, size_t> wildcard_;  // key: ".example.com"
};

// ------------------------------------------------------------------------ server side

class ServerTls : public std::enable_shared_from_this<ServerTls> {
 public:
  // Loads every certificate of `frontend.tls` (checked as the loader checks them) and builds
  // the contexts. `keys` may be null (tickets off).
  static Result<std::shared_ptr<ServerTls>> build(const config::Frontend& frontend,
                                                  const config::Config& config,
                                                  std::shared_ptr<TicketKeys> keys);
  ~ServerTls();
  ServerTls(const ServerTls&) = delete;
  ServerTls& operator=(const ServerTls&) = delete;

  // A new server-side SSL for one client connection (SSL_free'd by whoever owns it; it holds
  // its own reference to the SSL_CTX, so this object may go while the connection lives).
  // nullptr on allocation failure.
  SSL* newSsl() const;

  size_t certificateCount() const { return contexts_.size(); }
  // The certificate index a host name selects (tests, logs).
  size_t select(std::string_view host) const { return sni_.select(host); }
  const std::string& frontendName() const { return frontend_; }
  TicketKeys* ticketKeys() const { return keys_.get(); }
  // OpenSSL callbacks (tls.cpp) reach the object through the SSL's ex_data.
  SSL_CTX* contextFor(std::string_view host) const { return contexts_[sni_.select(host)]; }

 private:
  ServerTls(std::string frontend, SniMap sni)
      : frontend_(std::move(frontend)), sni_(std::move(sni)) {}
  std::string frontend_;
  SniMap sni_;
  std::vector<SSL_CTX*> contexts_;  // one per certificate, same settings
  std::shared_ptr<TicketKeys> keys_;
};

// ------------------------------------------------------------------------ client side

class ClientTls : public std::enable_shared_from_this<ClientTls> {
 public:
  static Result<std::shared_ptr<ClientTls>> build(const config::Backend& backend);
  ~ClientTls();
  ClientTls(const ClientTls&) = delete;
  ClientTls& operator=(const ClientTls&) = delete;

  // A client-side SSL for a connection to `server` (id for session resumption): SNI, name or
  // IP verification, the server's last session when there is one. nullptr on failure.
  SSL* newSsl(uint64_t serverId, const SocketAddress& server, bool alpnHttp) const;
  // After a failed verification: why (for logs).
  static std::string verifyError(SSL* ssl);

  bool verify() const { return verify_; }
  // The new-session callback (tls.cpp): remember `s` (a reference is taken) for `serverId`.
  void storeSession(uint64_t serverId, SSL_SESSION* s) const;

 private:
  ClientTls() = default;
  SSL_CTX* ctx_ = nullptr;
  bool verify_ = true;
  std::string serverName_;
  // Last session per server (TLS 1.3 tickets arrive after the handshake: captured by the
  // new-session callback). Guarded: workers connect concurrently (new server connections
  // only, so not on the per-request path).
  mutable std::mutex sessionsMu_;
  mutable std::unordered_map<uint64_t, SSL_SESSION*> sessions_;
};

// ------------------------------------------------------------------------ per configuration

// Every TLS context one configuration needs: per frontend with `tls:` (by index in
// config.frontends) and per backend with `tls:` (by backend id). Built on the control thread
// at start and on reload, then handed to the data plane, which uses the new set for new
// connections while established ones keep theirs.
struct TlsContexts {
  std::vector<std::shared_ptr<ServerTls>> frontends;  // index = frontend index; null = no TLS
  std::unordered_map<uint64_t, std::shared_ptr<ClientTls>> backends;
  const ClientTls* backend(uint64_t id) const {
    auto it = backends.find(id);
    return it == backends.end() ? nullptr : it->second.get();
  }
};
using TlsContextsPtr = std::shared_ptr<const TlsContexts>;
// Fails (naming the frontend or backend and the file) when a file cannot be used.
Result<TlsContextsPtr> buildTlsContexts(const config::Config& config,
                                        std::shared_ptr<TicketKeys> keys);

// Whether the handshake resumed a session.
bool sessionResumed(SSL* ssl);
// The negotiated ALPN protocol ("" when none).
std::string_view alpnOf(SSL* ssl);
// OpenSSL's reason for the last failure on this thread (and clears the queue).
std::string lastSslError();

}  // namespace halb::balancer
