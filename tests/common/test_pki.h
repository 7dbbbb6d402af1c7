#pragma once
// A short-lived test PKI in a temporary directory: a CA and the certificates a test asks for,
// generated with the OpenSSL API on the spot (no private key is ever committed). The directory
// and everything in it is removed when the object goes.
#include <cstdint>
#include <string>
#include <vector>

namespace halb::testing {

enum class KeyType { EcP256, Rsa2048 };

struct Issued {
  std::string certFile;  // PEM: the certificate (then the CA's when withChain)
  std::string keyFile;   // PEM: its private key (unencrypted, mode 0600)
};

struct CertSpec {
  std::string commonName;
  std::vector<std::string> dnsNames;  // subjectAltName dNSName entries
  std::vector<std::string> ips;       // subjectAltName iPAddress entries
  int64_t notBeforeOffset = -3600;    // seconds relative to now
  int64_t notAfterOffset = 30 * 86400;
  KeyType key = KeyType::EcP256;
  bool selfSigned = false;  // else signed by the PKI's CA
  bool withChain = false;   // append the CA certificate to the certificate file
};

class TestPki {
 public:
  TestPki();
  ~TestPki();
  TestPki(const TestPki&) = delete;
  TestPki& operator=(const TestPki&) = delete;

  const std::string& dir() const { return dir_; }
  const std::string& caFile() const { return caCert_; }  // the CA certificate (trust anchor)

  // Writes <name>.pem and <name>.key.
  Issued issue(const std::string& name, const CertSpec& spec);
  // A file with `text` in it (malformed inputs).
  std::string writeFile(const std::string& name, const std::string& text, int mode = 0600);

 private:
  std::string dir_;
  std::string caCert_;
  void* caKey_ = nullptr;   // EVP_PKEY*
  void* caX509_ = nullptr;  // X509*
};

}  // namespace halb::testing
