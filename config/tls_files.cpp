#include "config/tls_files.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>

namespace halb::config::tls {

void X509Free::operator()(X509* x) const {
  X509_free(x);
}
void PkeyFree::operator()(EVP_PKEY* k) const {
  EVP_PKEY_free(k);
}

namespace {

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;

// The reason of the most recent OpenSSL error (and clears the queue, so an old error never
// shows up in a later message).
std::string sslError() {
  unsigned long e = ERR_peek_last_error();
  std::string s;
  if (e != 0) {
    const char* r = ERR_reason_error_string(e);
    s = r ? r : "error " + std::to_string(e);
  }
  ERR_clear_error();
  return s.empty() ? std::string("unknown error") : s;
}

// Without this callback OpenSSL asks for a passphrase on the terminal, which would hang a
// daemon or `halb check` under a service manager.
int noPassphrase(char*, int, int, void*) {
  return -1;
}

BioPtr openFile(const std::string& path, std::string& error) {
  errno = 0;
  BioPtr b(BIO_new_file(path.c_str(), "r"));
  if (!b) {
    error = errno ? std::strerror(errno) : sslError();
    ERR_clear_error();
  }
  return b;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

std::string subjectLine(X509* x) {
  char buf[512];
  X509_NAME_oneline(X509_get_subject_name(x), buf, sizeof buf);
  return buf;
}

int64_t toUnix(const ASN1_TIME* t) {
  struct tm tm {};
  if (ASN1_TIME_to_tm(t, &tm) != 1) return 0;
  return static_cast<int64_t>(timegm(&tm));
}

std::vector<std::string> dnsNames(X509* x) {
  std::vector<std::string> out;
  auto* sans =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(x, NID_subject_alt_name, nullptr, nullptr));
  if (sans) {
    for (int i = 0; i < sk_GENERAL_NAME_num(sans); ++i) {
      const GENERAL_NAME* g = sk_GENERAL_NAME_value(sans, i);
      if (g->type != GEN_DNS) continue;
      const ASN1_IA5STRING* s = g->d.dNSName;
      out.push_back(lower(std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                                      static_cast<size_t>(ASN1_STRING_length(s)))));
    }
    GENERAL_NAMES_free(sans);
  }
  if (out.empty()) {
    // RFC 6125 §6.4.4: the CN only counts when there is no DNS name in the SAN.
    X509_NAME* subj = X509_get_subject_name(x);
    int idx = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
    if (idx >= 0) {
      ASN1_STRING* d = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, idx));
      unsigned char* utf8 = nullptr;
      int len = ASN1_STRING_to_UTF8(&utf8, d);
      if (len > 0) out.push_back(lower(std::string(reinterpret_cast<char*>(utf8), size_t(len))));
      OPENSSL_free(utf8);
    }
  }
  // Names with characters no host name has (a CN that is a description) cannot match SNI.
  std::erase_if(out, [](const std::string& n) {
    return n.empty() || !std::all_of(n.begin(), n.end(), [](unsigned char c) {
             return std::isalnum(c) || c == '-' || c == '.' || c == '*' || c == '_';
           });
  });
  return out;
}

}  // namespace

std::string formatUnixTime(int64_t unixSeconds) {
  std::time_t t = static_cast<std::time_t>(unixSeconds);
  struct tm tm {};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

LoadedPair loadCertKeyPair(const std::string& certFile, const std::string& keyFile) {
  LoadedPair out;
  auto fail = [&](File f, std::string msg) {
    out.pair.reset();
    out.error = LoadError{f, std::move(msg)};
    ERR_clear_error();
    return std::move(out);
  };
  auto p = std::make_unique<CertKeyPair>();
  {
    std::string err;
    BioPtr b = openFile(certFile, err);
    if (!b) return fail(File::Cert, "cannot read certificate file '" + certFile + "': " + err);
    p->leaf.reset(PEM_read_bio_X509_AUX(b.get(), nullptr, noPassphrase, nullptr));
    if (!p->leaf)
      return fail(File::Cert, "'" + certFile + "' holds no PEM certificate (" + sslError() + ")");
    for (;;) {
      X509* x = PEM_read_bio_X509(b.get(), nullptr, noPassphrase, nullptr);
      if (!x) {
        // The end of the file is a "no start line" error; anything else is a damaged block.
        unsigned long e = ERR_peek_last_error();
        if (e != 0 && !(ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE))
          return fail(File::Cert, "'" + certFile + "': certificate #" +
                                      std::to_string(p->chain.size() + 2) + " does not parse (" +
                                      sslError() + ")");
        ERR_clear_error();
        break;
      }
      p->chain.emplace_back(x);
    }
  }
  {
    std::string err;
    BioPtr b = openFile(keyFile, err);
    if (!b) return fail(File::Key, "cannot read key file '" + keyFile + "': " + err);
    p->key.reset(PEM_read_bio_PrivateKey(b.get(), nullptr, noPassphrase, nullptr));
    if (!p->key)
      return fail(File::Key, "'" + keyFile +
                                 "' holds no usable PEM private key (encrypted keys are not "
                                 "supported) (" +
                                 sslError() + ")");
  }
  if (X509_check_private_key(p->leaf.get(), p->key.get()) != 1)
    return fail(File::Key,
                "key '" + keyFile + "' does not match the certificate in '" + certFile + "'");
  p->names = dnsNames(p->leaf.get());
  p->subject = subjectLine(p->leaf.get());
  p->notBefore = toUnix(X509_get0_notBefore(p->leaf.get()));
  p->notAfter = toUnix(X509_get0_notAfter(p->leaf.get()));
  ERR_clear_error();
  out.pair = std::move(p);
  return out;
}

std::string validityProblem(const CertKeyPair& p, const std::string& certFile, int64_t nowUnix) {
  auto check = [&](X509* x, const std::string& which) -> std::string {
    int64_t nb = toUnix(X509_get0_notBefore(x)), na = toUnix(X509_get0_notAfter(x));
    if (nowUnix > na)
      return which + " in '" + certFile + "' (" + subjectLine(x) + ") expired on " +
             formatUnixTime(na);
    if (nowUnix < nb)
      return which + " in '" + certFile + "' (" + subjectLine(x) + ") is not valid before " +
             formatUnixTime(nb);
    return {};
  };
  if (std::string s = check(p.leaf.get(), "the certificate"); !s.empty()) return s;
  for (size_t i = 0; i < p.chain.size(); ++i)
    if (std::string s = check(p.chain[i].get(), "chain certificate #" + std::to_string(i + 2));
        !s.empty())
      return s;
  return {};
}

std::string expiryWarning(const CertKeyPair& p, const std::string& certFile, int64_t nowUnix,
                          int64_t warnSeconds) {
  if (p.notAfter - nowUnix >= warnSeconds) return {};
  int64_t days = (p.notAfter - nowUnix) / 86400;
  return "the certificate in '" + certFile + "' expires on " + formatUnixTime(p.notAfter) +
         " (in " + std::to_string(days) + (days == 1 ? " day)" : " days)");
}

std::string caFileProblem(const std::string& caFile) {
  std::string err;
  BioPtr b = openFile(caFile, err);
  if (!b) return "cannot read CA file '" + caFile + "': " + err;
  size_t n = 0;
  for (;;) {
    X509* x = PEM_read_bio_X509(b.get(), nullptr, noPassphrase, nullptr);
    if (!x) break;
    X509_free(x);
    ++n;
  }
  unsigned long e = ERR_peek_last_error();
  bool eof = e == 0 || (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE);
  std::string why = eof ? std::string() : sslError();
  ERR_clear_error();
  if (!eof)
    return "CA file '" + caFile + "': certificate #" + std::to_string(n + 1) + " does not parse (" +
           why + ")";
  if (n == 0) return "CA file '" + caFile + "' holds no PEM certificate";
  return {};
}

std::string cipherProblem(const std::string& list, bool tls13) {
  if (list.empty()) return {};
  SSL_CTX* ctx = SSL_CTX_new(TLS_method());
  if (!ctx) return "cannot create an OpenSSL context: " + sslError();
  int ok = tls13 ? SSL_CTX_set_ciphersuites(ctx, list.c_str())
                 : SSL_CTX_set_cipher_list(ctx, list.c_str());
  std::string why = ok == 1 ? std::string() : sslError();
  SSL_CTX_free(ctx);
  ERR_clear_error();
  if (ok == 1) return {};
  return std::string(tls13 ? "no TLS 1.3 suite" : "no TLS 1.2 cipher") +
         " in this list is known to OpenSSL (" + why + ")";
}

bool nameMatches(const std::string& certName, const std::string& host) {
  if (certName.size() > 2 && certName[0] == '*' && certName[1] == '.') {
    // "*.example.com" covers "a.example.com", not "example.com" nor "a.b.example.com".
    std::string_view suffix(certName.data() + 1, certName.size() - 1);  // ".example.com"
    if (host.size() <= suffix.size()) return false;
    if (std::string_view(host).substr(host.size() - suffix.size()) != suffix) return false;
    std::string_view label(host.data(), host.size() - suffix.size());
    return !label.empty() && label.find('.') == std::string_view::npos;
  }
  return certName == host;
}

}  // namespace halb::config::tls
