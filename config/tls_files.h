#pragma once
// The certificate and key files a configuration names: read once, checked (they parse, the key
// belongs to the certificate, every certificate of the chain is within its validity period),
// and their server names extracted. The loader uses it so that `halb check`, start and reload
// refuse a bad file with the YAML position and the file named; balancer/tls.cpp builds its
// SSL_CTXs from the same loaded objects, so what was checked is what is served.
//
// OpenSSL types appear here, so include this only where OpenSSL is used anyway.
#include <openssl/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace halb::config::tls {

struct X509Free {
  void operator()(X509* x) const;
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const;
};
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

// A certificate file (leaf first, then its intermediates) and the leaf's private key.
struct CertKeyPair {
  X509Ptr leaf;
  std::vector<X509Ptr> chain;  // intermediates, in file order
  PkeyPtr key;
  // DNS names the leaf is valid for, lower case: its subjectAltName dNSNames, or the subject
  // CN when there are none (RFC 6125 §6.4.4). Wildcards stay as written ("*.example.com").
  std::vector<std::string> names;
  std::string subject;    // one line, for messages
  int64_t notBefore = 0;  // leaf validity, unix seconds
  int64_t notAfter = 0;
};

// Which file a problem is in, so the loader can point at the right YAML key.
enum class File { Cert, Key };

struct LoadError {
  File file = File::Cert;
  std::string message;  // names the file
};

// Reads and parses both files and checks that the key belongs to the leaf. Never prompts for
// a passphrase: an encrypted key is an error.
struct LoadedPair {
  std::unique_ptr<CertKeyPair> pair;  // null on error
  LoadError error;
  explicit operator bool() const { return pair != nullptr; }
};
LoadedPair loadCertKeyPair(const std::string& certFile, const std::string& keyFile);

// Why the pair cannot be served at `nowUnix` (a certificate of the chain expired or not yet
// valid), or empty.
std::string validityProblem(const CertKeyPair& p, const std::string& certFile, int64_t nowUnix);
// The leaf's expiry is less than `warnSeconds` away: a message for a warning, or empty.
std::string expiryWarning(const CertKeyPair& p, const std::string& certFile, int64_t nowUnix,
                          int64_t warnSeconds);

// The whole chain of a PEM file of CA certificates (trust anchors) parses: empty, or why not.
std::string caFileProblem(const std::string& caFile);

// OpenSSL accepts this TLS 1.2 cipher list (tls13 = false) or TLS 1.3 suite list: empty, or
// why not.
std::string cipherProblem(const std::string& list, bool tls13);

// Whether `host` (lower case, no trailing dot) is covered by a certificate name: exact, or a
// "*.example.com" wildcard standing for exactly one leftmost label (RFC 6125 §6.4.3).
bool nameMatches(const std::string& certName, const std::string& host);

// "2026-01-31 12:00:00 UTC"
std::string formatUnixTime(int64_t unixSeconds);

}  // namespace halb::config::tls
