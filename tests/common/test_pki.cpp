#include "tests/common/test_pki.h"

#include <arpa/inet.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace halb::testing {
namespace {

EVP_PKEY* makeKey(KeyType t) {
  EVP_PKEY* k = t == KeyType::Rsa2048 ? EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{2048})
                                      : EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  if (!k) throw std::runtime_error("key generation failed");
  return k;
}

void addExt(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ex = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (!ex) throw std::runtime_error("bad extension " + value);
  X509_add_ext(cert, ex, -1);
  X509_EXTENSION_free(ex);
}

X509* makeCert(const std::string& cn, EVP_PKEY* key, X509* issuer, EVP_PKEY* issuerKey,
               const CertSpec& spec, bool ca) {
  static long serial = 1000;
  X509* x = X509_new();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), ++serial);
  X509_gmtime_adj(X509_getm_notBefore(x), spec.notBeforeOffset);
  X509_gmtime_adj(X509_getm_notAfter(x), spec.notAfterOffset);
  X509_set_pubkey(x, key);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("halb test"), -1, -1, 0);
  if (!cn.empty())
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
  X509* iss = issuer ? issuer : x;
  if (ca) {
    addExt(x, iss, NID_basic_constraints, "critical,CA:TRUE");
    addExt(x, iss, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    addExt(x, iss, NID_basic_constraints, "CA:FALSE");
    addExt(x, iss, NID_ext_key_usage, "serverAuth,clientAuth");
  }
  addExt(x, iss, NID_subject_key_identifier, "hash");
  std::string san;
  for (const auto& d : spec.dnsNames) san += (san.empty() ? "" : ",") + std::string("DNS:") + d;
  for (const auto& i : spec.ips) san += (san.empty() ? "" : ",") + std::string("IP:") + i;
  if (!san.empty()) addExt(x, iss, NID_subject_alt_name, san);
  if (X509_sign(x, issuerKey ? issuerKey : key, EVP_sha256()) == 0)
    throw std::runtime_error("signing failed");
  return x;
}

void writePem(const std::string& path, X509* cert, X509* extra) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (!f) throw std::runtime_error("cannot write " + path);
  PEM_write_X509(f, cert);
  if (extra) PEM_write_X509(f, extra);
  std::fclose(f);
}

void writeKey(const std::string& path, EVP_PKEY* key) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (!f) throw std::runtime_error("cannot write " + path);
  PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr);
  std::fclose(f);
  ::chmod(path.c_str(), 0600);
}

}  // namespace

TestPki::TestPki() {
  char tmpl[] = "/tmp/halb-pki-XXXXXX";
  if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
  dir_ = tmpl;
  EVP_PKEY* key = makeKey(KeyType::EcP256);
  CertSpec spec;
  spec.notAfterOffset = 365 * 86400;
  X509* ca = makeCert("halb test CA", key, nullptr, nullptr, spec, true);
  caCert_ = dir_ + "/ca.pem";
  writePem(caCert_, ca, nullptr);
  caKey_ = key;
  caX509_ = ca;
}

TestPki::~TestPki() {
  EVP_PKEY_free(static_cast<EVP_PKEY*>(caKey_));
  X509_free(static_cast<X509*>(caX509_));
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

Issued TestPki::issue(const std::string& name, const CertSpec& spec) {
  EVP_PKEY* key = makeKey(spec.key);
  X509* ca = static_cast<X509*>(caX509_);
  X509* cert = spec.selfSigned ? makeCert(spec.commonName, key, nullptr, nullptr, spec, false)
                               : makeCert(spec.commonName, key, ca, static_cast<EVP_PKEY*>(caKey_),
                                          spec, false);
  Issued out{dir_ + "/" + name + ".pem", dir_ + "/" + name + ".key"};
  writePem(out.certFile, cert, spec.withChain ? ca : nullptr);
  writeKey(out.keyFile, key);
  X509_free(cert);
  EVP_PKEY_free(key);
  return out;
}

std::string TestPki::writeFile(const std::string& name, const std::string& text, int mode) {
  std::string path = dir_ + "/" + name;
  std::ofstream(path) << text;
  ::chmod(path.c_str(), static_cast<mode_t>(mode));
  return path;
}

}  // namespace halb::testing
