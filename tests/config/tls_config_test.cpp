// TLS settings in the configuration, and the certificate checks `halb check` makes: every
// certificate and key is generated here, in a temporary directory, for the test only.
#include <gtest/gtest.h>

#include <ctime>

#include "config/loader.h"
#include "config/tls_files.h"
#include "tests/common/test_pki.h"

namespace halb::config {
namespace {

using namespace std::chrono_literals;
using halb::testing::CertSpec;
using halb::testing::Issued;
using halb::testing::TestPki;

std::string errors(const LoadResult& r) {
  std::string s;
  for (const auto& e : r.errors) s += e.toString() + "\n";
  for (const auto& e : r.warnings) s += e.toString() + "\n";
  return s;
}

const ConfigError* findError(const std::vector<ConfigError>& v, const std::string& path) {
  for (const auto& e : v)
    if (e.path == path) return &e;
  return nullptr;
}

// A frontend with the given certificates, written as a file next to them so relative paths
// resolve and error positions are real.
LoadResult loadWith(TestPki& pki, const std::vector<Issued>& certs, const std::string& extra = "") {
  std::string yaml =
      "frontends:\n"
      "  - name: web\n"
      "    bind: 127.0.0.1:8443\n"
      "    default_backend: app\n"
      "    tls:\n"
      "      certificates:\n";
  for (const auto& c : certs)
    yaml += "        - cert: " + c.certFile + "\n          key: " + c.keyFile + "\n";
  yaml += extra;
  yaml +=
      "backends:\n"
      "  - name: app\n"
      "    servers: [{ name: a, address: 127.0.0.1:9001 }]\n";
  std::string file = pki.writeFile("halb.yaml", yaml);
  LoadOptions opt;
  opt.node = "lb1";
  return loadConfigFile(file, opt);
}

CertSpec named(std::vector<std::string> names) {
  CertSpec s;
  s.commonName = names.empty() ? "" : names[0];
  s.dnsNames = std::move(names);
  return s;
}

TEST(TlsConfig, GoodCertificatesLoadWithDefaults) {
  TestPki pki;
  auto a = pki.issue("a", named({"a.example.com", "*.a.example.com"}));
  auto b = pki.issue("b", named({"b.example.com"}));
  auto r = loadWith(pki, {a, b});
  ASSERT_TRUE(r.ok()) << errors(r);
  EXPECT_TRUE(r.warnings.empty()) << errors(r);
  const FrontendTls& t = *r.config->frontends[0].tls;
  ASSERT_EQ(t.certificates.size(), 2u);
  EXPECT_EQ(t.certificates[0].certFile, a.certFile);
  EXPECT_EQ(t.minVersion, TlsVersion::V1_2);
  EXPECT_TRUE(r.config->tls.tickets.enabled);
  EXPECT_EQ(r.config->tls.tickets.rotation, 1h);
  EXPECT_EQ(r.config->timeouts.tlsHandshake, 10s);
}

TEST(TlsConfig, ExpiredCertificateIsAnErrorAtTheCertKey) {
  TestPki pki;
  CertSpec s = named({"old.example.com"});
  s.notBeforeOffset = -10 * 86400;
  s.notAfterOffset = -86400;
  auto old = pki.issue("old", s);
  auto r = loadWith(pki, {old});
  ASSERT_FALSE(r.ok());
  const ConfigError* e = findError(r.errors, "frontends[0].tls.certificates[0].cert");
  ASSERT_NE(e, nullptr) << errors(r);
  // The position is the value of `cert:` in the file (line 7, after "        - cert: ").
  EXPECT_EQ(e->line, 7);
  EXPECT_EQ(e->column, 17);
  EXPECT_NE(e->message.find("'" + old.certFile + "'"), std::string::npos) << e->message;
  EXPECT_NE(e->message.find("expired on"), std::string::npos) << e->message;
  EXPECT_NE(e->toString().find(pki.dir() + "/halb.yaml:7:17: "), std::string::npos)
      << e->toString();
}

TEST(TlsConfig, NotYetValidCertificateIsAnError) {
  TestPki pki;
  CertSpec s = named({"new.example.com"});
  s.notBeforeOffset = 86400;
  s.notAfterOffset = 10 * 86400;
  auto c = pki.issue("new", s);
  auto r = loadWith(pki, {c});
  ASSERT_FALSE(r.ok());
  const ConfigError* e = findError(r.errors, "frontends[0].tls.certificates[0].cert");
  ASSERT_NE(e, nullptr) << errors(r);
  EXPECT_NE(e->message.find("is not valid before"), std::string::npos) << e->message;
}

TEST(TlsConfig, CheckTimeIsInjectable) {
  TestPki pki;
  auto c = pki.issue("c", named({"c.example.com"}));  // valid for 30 days from now
  std::string yaml =
      "frontends: [{ name: w, bind: ':443', default_backend: b, tls: { certificates: [{ cert: " +
      c.certFile + ", key: " + c.keyFile +
      " }] } }]\nbackends: [{ name: b, servers: [{ name: s, address: 10.0.0.1:80 }] }]\n";
  LoadOptions opt;
  opt.node = "lb1";
  opt.nowUnix = static_cast<int64_t>(::time(nullptr)) + 60 * 86400;
  auto r = loadConfigString(yaml, "t.yaml", opt);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(errors(r).find("expired on"), std::string::npos) << errors(r);
  opt.nowUnix = static_cast<int64_t>(::time(nullptr)) + 20 * 86400;  // 10 days left: a warning
  r = loadConfigString(yaml, "t.yaml", opt);
  ASSERT_TRUE(r.ok()) << errors(r);
  ASSERT_EQ(r.warnings.size(), 1u) << errors(r);
  EXPECT_NE(r.warnings[0].message.find("expires on"), std::string::npos) << errors(r);
}

TEST(TlsConfig, KeyOfAnotherCertificateIsAnErrorAtTheKeyKey) {
  TestPki pki;
  auto a = pki.issue("a", named({"a.example.com"}));
  auto b = pki.issue("b", named({"b.example.com"}));
  Issued mixed{a.certFile, b.keyFile};
  auto r = loadWith(pki, {mixed});
  ASSERT_FALSE(r.ok());
  const ConfigError* e = findError(r.errors, "frontends[0].tls.certificates[0].key");
  ASSERT_NE(e, nullptr) << errors(r);
  EXPECT_EQ(e->line, 8);
  EXPECT_EQ(e->column, 16);
  EXPECT_NE(e->message.find("key '" + b.keyFile + "' does not match the certificate in '" +
                            a.certFile + "'"),
            std::string::npos)
      << e->message;
}

TEST(TlsConfig, MismatchedKeyTypeIsAnError) {
  TestPki pki;
  CertSpec rsa = named({"r.example.com"});
  rsa.key = halb::testing::KeyType::Rsa2048;
  auto a = pki.issue("rsa", rsa);
  auto b = pki.issue("ec", named({"e.example.com"}));
  auto r = loadWith(pki, {Issued{a.certFile, b.keyFile}});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(errors(r).find("does not match"), std::string::npos) << errors(r);
}

TEST(TlsConfig, UnreadableAndMalformedFilesAreErrorsNamingTheFile) {
  TestPki pki;
  auto good = pki.issue("good", named({"g.example.com"}));
  std::string garbage = pki.writeFile("garbage.pem", "this is not PEM\n");
  std::string truncated = pki.writeFile(
      "trunc.pem",
      "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIC\n-----END CERTIFICATE-----\n");
  std::string badKey =
      pki.writeFile("bad.key", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
  std::string missing = pki.dir() + "/missing.pem";
  auto r = loadWith(pki, {Issued{garbage, good.keyFile}, Issued{truncated, good.keyFile},
                          Issued{good.certFile, badKey}, Issued{missing, good.keyFile}});
  ASSERT_FALSE(r.ok());
  std::string e = errors(r);
  const ConfigError* e0 = findError(r.errors, "frontends[0].tls.certificates[0].cert");
  ASSERT_NE(e0, nullptr) << e;
  EXPECT_NE(e0->message.find("'" + garbage + "' holds no PEM certificate"), std::string::npos) << e;
  const ConfigError* e1 = findError(r.errors, "frontends[0].tls.certificates[1].cert");
  ASSERT_NE(e1, nullptr) << e;
  EXPECT_NE(e1->message.find(truncated), std::string::npos) << e;
  const ConfigError* e2 = findError(r.errors, "frontends[0].tls.certificates[2].key");
  ASSERT_NE(e2, nullptr) << e;
  EXPECT_NE(e2->message.find("'" + badKey + "' holds no usable PEM private key"), std::string::npos)
      << e;
  const ConfigError* e3 = findError(r.errors, "frontends[0].tls.certificates[3].cert");
  ASSERT_NE(e3, nullptr) << e;
  EXPECT_NE(e3->message.find("cannot read certificate file '" + missing + "': No such file"),
            std::string::npos)
      << e;
}

TEST(TlsConfig, EncryptedKeyIsRefusedWithoutPrompting) {
  TestPki pki;
  auto good = pki.issue("good", named({"g.example.com"}));
  // An encrypted PEM header is enough: the loader must fail, not wait for a passphrase.
  std::string enc =
      pki.writeFile("enc.key",
                    "-----BEGIN ENCRYPTED PRIVATE KEY-----\n"
                    "MIGbMFcGCSqGSIb3DQEFDTBKMCkGCSqGSIb3DQEFDDAcBAhJ0oZ4bGTn0QICCAAw\n"
                    "-----END ENCRYPTED PRIVATE KEY-----\n");
  auto r = loadWith(pki, {Issued{good.certFile, enc}});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(errors(r).find("encrypted keys are not supported"), std::string::npos) << errors(r);
}

TEST(TlsConfig, ExpiredChainCertificateIsAnError) {
  TestPki pki;
  CertSpec s = named({"x.example.com"});
  s.withChain = true;  // the CA (valid) follows the leaf: fine
  auto ok = pki.issue("chain", s);
  auto r = loadWith(pki, {ok});
  EXPECT_TRUE(r.ok()) << errors(r);
  // A chain whose second certificate expired: an expired self-signed one appended.
  CertSpec old = named({"old.example.com"});
  old.selfSigned = true;
  old.notBeforeOffset = -5 * 86400;
  old.notAfterOffset = -86400;
  auto expired = pki.issue("expired", old);
  std::string both = pki.writeFile("both.pem", [&] {
    std::string text;
    for (const auto& f : {ok.certFile, expired.certFile}) {
      FILE* in = std::fopen(f.c_str(), "r");
      char buf[4096];
      size_t n;
      while ((n = std::fread(buf, 1, sizeof buf, in)) > 0) text.append(buf, n);
      std::fclose(in);
    }
    return text;
  }());
  r = loadWith(pki, {Issued{both, ok.keyFile}});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(errors(r).find("chain certificate #3"), std::string::npos) << errors(r);
}

TEST(TlsConfig, WarningsForGroupReadableKeyAndDuplicateNames) {
  TestPki pki;
  auto a = pki.issue("a", named({"same.example.com"}));
  auto b = pki.issue("b", named({"same.example.com", "other.example.com"}));
  ::chmod(b.keyFile.c_str(), 0640);
  auto r = loadWith(pki, {a, b});
  ASSERT_TRUE(r.ok()) << errors(r);
  std::string w = errors(r);
  EXPECT_NE(
      w.find("certificates[1].key: warning: key file '" + b.keyFile + "' is accessible by group"),
      std::string::npos)
      << w;
  EXPECT_NE(w.find("'same.example.com' is also served by frontends[0].tls.certificates[0]"),
            std::string::npos)
      << w;
}

TEST(TlsConfig, SettingsAndTheirErrors) {
  TestPki pki;
  auto a = pki.issue("a", named({"a.example.com"}));
  auto r = loadWith(pki, {a},
                    "      min_version: 1.1\n"
                    "      ciphers: NOT-A-CIPHER\n"
                    "      ciphersuites: TLS_FAKE\n"
                    "tls: { ticket_rotation: 1m, session_lifetime: 2h }\n");
  ASSERT_FALSE(r.ok());
  std::string e = errors(r);
  EXPECT_NE(e.find("frontends[0].tls.min_version: must be one of 1.2, 1.3, got '1.1'"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("frontends[0].tls.ciphers: no TLS 1.2 cipher"), std::string::npos) << e;
  EXPECT_NE(e.find("frontends[0].tls.ciphersuites: no TLS 1.3 suite"), std::string::npos) << e;
  EXPECT_NE(e.find("tls.session_lifetime: must not exceed 64 x ticket_rotation"), std::string::npos)
      << e;

  r = loadWith(pki, {a},
               "      min_version: 1.3\n"
               "      ciphers: ECDHE-ECDSA-AES128-GCM-SHA256\n"
               "      ciphersuites: TLS_AES_128_GCM_SHA256\n"
               "tls: { session_tickets: off, ticket_rotation: 30m, session_lifetime: 12h }\n");
  ASSERT_TRUE(r.ok()) << errors(r);
  EXPECT_EQ(r.config->frontends[0].tls->minVersion, TlsVersion::V1_3);
  EXPECT_EQ(r.config->frontends[0].tls->ciphers, "ECDHE-ECDSA-AES128-GCM-SHA256");
  EXPECT_FALSE(r.config->tls.tickets.enabled);
  EXPECT_EQ(r.config->tls.tickets.rotation, 30min);
  EXPECT_EQ(r.config->tls.tickets.sessionLifetime, 12h);
}

TEST(TlsConfig, ContinuityCannotCarryTls) {
  TestPki pki;
  auto a = pki.issue("a", named({"a.example.com"}));
  std::string yaml =
      "frontends: [{ name: w, bind: ':443', default_backend: b, continuity: true, tls: { "
      "certificates: [{ cert: " +
      a.certFile + ", key: " + a.keyFile +
      " }] } }]\n"
      "backends: [{ name: b, servers: [{ name: s, address: 10.0.0.1:80 }] }]\n";
  LoadOptions opt;
  opt.node = "lb1";
  auto r = loadConfigString(yaml, "t.yaml", opt);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(errors(r).find("frontends[0].continuity: cannot carry TLS connections"),
            std::string::npos)
      << errors(r);
}

TEST(TlsConfig, BackendTls) {
  TestPki pki;
  std::string notCa = pki.writeFile("notca.pem", "nothing here\n");
  std::string yaml = R"(
frontends: [{ name: f, bind: ":80", default_backend: b }]
backends:
  - name: b
    servers: [{ name: s, address: 10.0.0.1:443 }]
    health: { type: tcp }
    tls: { ca_file: )" +
                     pki.caFile() + R"(, server_name: API.internal, min_version: 1.3 }
  - name: c
    servers: [{ name: s, address: 10.0.0.2:443 }]
    tls: { verify: false }
  - name: d
    servers: [{ name: s, address: 10.0.0.3:443 }]
    health: { type: http }
    tls: { ca_file: )" +
                     notCa + R"(, server_name: "bad name" }
  - name: e
    servers: [{ name: s, address: 10.0.0.4:443 }]
    tls: { verify: false, ca_file: )" +
                     pki.caFile() + R"( }
)";
  LoadOptions opt;
  opt.node = "lb1";
  auto r = loadConfigString(yaml, "t.yaml", opt);
  std::string e = errors(r);
  EXPECT_NE(e.find("backends[2].tls.ca_file: CA file '" + notCa + "' holds no PEM certificate"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("backends[2].tls.server_name: must be a DNS host name"), std::string::npos) << e;
  EXPECT_NE(e.find("backends[2].tls: http health checks do not speak TLS"), std::string::npos) << e;
  EXPECT_NE(e.find("backends[3].tls.ca_file: has no use with verify: false"), std::string::npos)
      << e;
  EXPECT_EQ(r.errors.size(), 4u) << e;

  yaml = yaml.substr(0, yaml.find("  - name: d"));
  r = loadConfigString(yaml, "t.yaml", opt);
  ASSERT_TRUE(r.ok()) << errors(r);
  const BackendTls& t = *r.config->backends[0].tls;
  EXPECT_TRUE(t.verify);
  EXPECT_EQ(t.caFile, pki.caFile());
  EXPECT_EQ(t.serverName, "api.internal");
  EXPECT_EQ(t.minVersion, TlsVersion::V1_3);
  EXPECT_FALSE(r.config->backends[1].tls->verify);
  EXPECT_FALSE(r.config->backends[0].tls->caFile.empty());
}

TEST(TlsFiles, NamesComeFromSanElseCn) {
  TestPki pki;
  auto a = pki.issue("a", named({"A.Example.com", "*.b.example.com"}));
  CertSpec cnOnly;
  cnOnly.commonName = "cn.example.com";
  auto b = pki.issue("b", cnOnly);
  auto la = tls::loadCertKeyPair(a.certFile, a.keyFile);
  ASSERT_TRUE(la) << la.error.message;
  EXPECT_EQ(la.pair->names, (std::vector<std::string>{"a.example.com", "*.b.example.com"}));
  auto lb = tls::loadCertKeyPair(b.certFile, b.keyFile);
  ASSERT_TRUE(lb) << lb.error.message;
  EXPECT_EQ(lb.pair->names, (std::vector<std::string>{"cn.example.com"}));
}

TEST(TlsFiles, WildcardCoversExactlyOneLabel) {
  EXPECT_TRUE(tls::nameMatches("*.example.com", "a.example.com"));
  EXPECT_FALSE(tls::nameMatches("*.example.com", "example.com"));
  EXPECT_FALSE(tls::nameMatches("*.example.com", "a.b.example.com"));
  EXPECT_FALSE(tls::nameMatches("*.example.com", ".example.com"));
  EXPECT_FALSE(tls::nameMatches("*.example.com", "aexample.com"));
  EXPECT_TRUE(tls::nameMatches("www.example.com", "www.example.com"));
  EXPECT_FALSE(tls::nameMatches("www.example.com", "ww.example.com"));
}

}  // namespace
}  // namespace halb::config
