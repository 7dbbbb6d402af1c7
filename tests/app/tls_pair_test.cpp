// Two real `halb run` processes on loopback with state sync between them: a TLS session made
// on one resumes on the other, also after the first was killed (what a failover needs); and
// `halb check` refuses expired and mismatched certificates, naming the file and the line.
// Everything binds 127.0.0.1; the processes are ended by PID, whatever the outcome.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <thread>

#include "tests/balancer/test_backends.h"
#include "tests/balancer/tls_peers.h"
#include "tests/common/test_pki.h"

namespace halb {
namespace {

using namespace std::chrono_literals;
using testing::TestPki;

uint16_t freePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

// Runs `halb` with `args`, output to `log`; returns the exit status (waits) or the PID.
pid_t spawn(const std::vector<std::string>& args, const std::string& log) {
  pid_t pid = ::fork();
  if (pid == 0) {
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(HALB_BINARY));
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(HALB_BINARY, argv.data());
    ::_exit(127);
  }
  return pid;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

int runToEnd(const std::vector<std::string>& args, const std::string& log) {
  pid_t pid = spawn(args, log);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// A halb process that is always ended (SIGKILL at the latest) and reaped.
struct Proc {
  pid_t pid = -1;
  ~Proc() { kill(SIGKILL); }
  void kill(int sig) {
    if (pid <= 0) return;
    ::kill(pid, sig);
    int status = 0;
    ::waitpid(pid, &status, 0);
    pid = -1;
  }
};

std::string metricsOf(uint16_t adminPort) {
  auto r = testing::get(adminPort, "/metrics");
  return r.body;
}

bool waitFor(const std::function<bool()>& done, std::chrono::milliseconds limit) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (done()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return done();
}

class TlsPair : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::CertSpec spec;
    spec.commonName = "www.example.com";
    spec.dnsNames = {"www.example.com"};
    cert_ = pki_.issue("www", spec);
    key_ = pki_.writeFile("sync.key", "tls-pair-test-shared-secret-0123456789\n");
    web_ = std::make_unique<testing::HttpBackend>("web1");
  }

  // One node's file: its own ports, the same backends and keys.
  std::string config(const std::string& self, uint16_t https, uint16_t admin, uint16_t syncListen,
                     uint16_t syncPeer) {
    std::string y =
        "nodes:\n  lb1: {}\n  lb2: {}\n"
        "workers: 1\n"
        "admin: { listen: 127.0.0.1:" +
        std::to_string(admin) +
        " }\n"
        "statesync:\n  listen: 127.0.0.1:" +
        std::to_string(syncListen) + "\n  peer: 127.0.0.1:" + std::to_string(syncPeer) +
        "\n  key_file: " + key_ +
        "\n  reconnect_min: 10ms\n  reconnect_max: 200ms\n"
        "frontends:\n  - name: https\n    bind: 127.0.0.1:" +
        std::to_string(https) +
        "\n    default_backend: web\n    tls:\n      certificates:\n        - { cert: " +
        cert_.certFile + ", key: " + cert_.keyFile +
        " }\n"
        "backends:\n  - name: web\n    health: { type: none }\n"
        "    servers: [{ name: w1, address: 127.0.0.1:" +
        std::to_string(web_->port()) + " }]\n";
    return pki_.writeFile(self + ".yaml", y);
  }

  TestPki pki_;
  testing::Issued cert_;
  std::string key_;
  std::unique_ptr<testing::HttpBackend> web_;
};

TEST_F(TlsPair, SessionResumesOnThePeerAfterTheFirstNodeDies) {
  const uint16_t httpsA = freePort(), httpsB = freePort(), adminA = freePort(), adminB = freePort(),
                 syncA = freePort(), syncB = freePort();
  std::string fileA = config("lb1", httpsA, adminA, syncA, syncB);
  std::string fileB = config("lb2", httpsB, adminB, syncB, syncA);
  ASSERT_EQ(runToEnd({"check", "-q", "-c", fileA, "--node", "lb1"}, pki_.dir() + "/check.log"), 0)
      << slurp(pki_.dir() + "/check.log");

  Proc a, b;
  a.pid = spawn({"run", "-c", fileA, "--node", "lb1"}, pki_.dir() + "/lb1.log");
  b.pid = spawn({"run", "-c", fileB, "--node", "lb2"}, pki_.dir() + "/lb2.log");
  // Each node made a ticket key at start; in sync, each holds both.
  ASSERT_TRUE(waitFor(
      [&] {
        return metricsOf(adminA).find("halb_tls_ticket_keys 2") != std::string::npos &&
               metricsOf(adminB).find("halb_tls_ticket_keys 2") != std::string::npos;
      },
      10s))
      << slurp(pki_.dir() + "/lb1.log") << slurp(pki_.dir() + "/lb2.log");

  for (int version : {TLS1_2_VERSION, TLS1_3_VERSION}) {
    testing::TlsClientOptions o;
    o.sni = "www.example.com";
    o.maxVersion = version;
    SSL_SESSION* sess = nullptr;
    {
      testing::TlsClient c(httpsA, o);
      ASSERT_TRUE(c.ok()) << c.error();
      ASSERT_EQ(c.request("GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n").status, 200);
      EXPECT_FALSE(c.resumed());
      sess = c.session();
      c.close();
    }
    o.session = sess;
    testing::TlsClient c2(httpsB, o);
    ASSERT_TRUE(c2.ok()) << c2.error();
    EXPECT_TRUE(c2.resumed()) << "TLS version " << std::hex << version;
    EXPECT_EQ(c2.request("GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n").status, 200);
    c2.close();
    if (version == TLS1_3_VERSION) {
      // The first node dies (no goodbye): the session still resumes on the survivor.
      a.kill(SIGKILL);
      testing::TlsClient c3(httpsB, o);
      ASSERT_TRUE(c3.ok()) << c3.error();
      EXPECT_TRUE(c3.resumed());
      EXPECT_EQ(c3.request("GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n").status, 200);
      c3.close();
    }
    SSL_SESSION_free(sess);
  }
  std::string m = metricsOf(adminB);
  EXPECT_NE(m.find("halb_tls_handshakes_total{result=\"resumed\"} 3"), std::string::npos) << m;
  // Both nodes seal with the same key: a TLS 1.2 ticket from lb1 needs no renewal on lb2
  // (TLS 1.3 tickets are always renewed).
  EXPECT_NE(m.find("halb_tls_tickets_total{result=\"renewed\"} 2"), std::string::npos) << m;
  EXPECT_NE(m.find("halb_statesync_ticket_key_sets_total{direction=\"received\"}"),
            std::string::npos);
  b.kill(SIGTERM);
}

TEST_F(TlsPair, ReloadServesTheRenewedCertificateWithoutDroppingConnections) {
  const uint16_t https = freePort(), admin = freePort(), sync = freePort(), peer = freePort();
  std::string file = config("lb1", https, admin, sync, peer);
  Proc a;
  a.pid = spawn({"run", "-c", file, "--node", "lb1"}, pki_.dir() + "/lb1.log");
  testing::TlsClientOptions o;
  o.sni = "www.example.com";
  ASSERT_TRUE(waitFor([&] { return testing::TlsClient(https, o).ok(); }, 10s))
      << slurp(pki_.dir() + "/lb1.log");
  testing::TlsClient before(https, o);
  ASSERT_TRUE(before.ok());
  EXPECT_EQ(before.peerCommonName(), "www.example.com");
  ASSERT_EQ(before.request("GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n").status, 200);

  // The certificate is renewed in place (same files), then SIGHUP.
  testing::CertSpec spec;
  spec.commonName = "www.example.com renewed";
  spec.dnsNames = {"www.example.com"};
  auto renewed = pki_.issue("renewed", spec);
  ASSERT_EQ(::rename(renewed.certFile.c_str(), cert_.certFile.c_str()), 0);
  ASSERT_EQ(::rename(renewed.keyFile.c_str(), cert_.keyFile.c_str()), 0);
  ::kill(a.pid, SIGHUP);
  EXPECT_TRUE(waitFor(
      [&] {
        testing::TlsClient c(https, o);
        return c.ok() && c.peerCommonName() == "www.example.com renewed";
      },
      10s))
      << slurp(pki_.dir() + "/lb1.log");
  // The connection made before the reload carries on with its certificate.
  EXPECT_EQ(before.request("GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n").status, 200);
  EXPECT_EQ(before.peerCommonName(), "www.example.com");
  EXPECT_NE(metricsOf(admin).find("halb_config_reloads_total{result=\"ok\"} 1"), std::string::npos);
  a.kill(SIGTERM);
}

TEST_F(TlsPair, CheckRefusesExpiredAndMismatchedCertificates) {
  testing::CertSpec old;
  old.commonName = "old.example.com";
  old.dnsNames = {"old.example.com"};
  old.notBeforeOffset = -10 * 86400;
  old.notAfterOffset = -86400;
  auto expired = pki_.issue("expired", old);
  testing::CertSpec other;
  other.commonName = "other.example.com";
  other.dnsNames = {"other.example.com"};
  auto o = pki_.issue("other", other);
  std::string file =
      pki_.writeFile("bad.yaml",
                     "frontends:\n"
                     "  - name: https\n"
                     "    bind: 127.0.0.1:8443\n"
                     "    default_backend: web\n"
                     "    tls:\n"
                     "      certificates:\n"
                     "        - cert: " +
                         expired.certFile +
                         "\n"
                         "          key: " +
                         expired.keyFile +
                         "\n"
                         "        - cert: " +
                         cert_.certFile +
                         "\n"
                         "          key: " +
                         o.keyFile +
                         "\n"
                         "backends:\n"
                         "  - { name: web, servers: [{ name: w1, address: 127.0.0.1:9 }] }\n");
  const std::string log = pki_.dir() + "/check.log";
  EXPECT_EQ(runToEnd({"check", "-c", file}, log), 1);
  std::string out = slurp(log);
  EXPECT_NE(out.find(file + ":7:17: frontends[0].tls.certificates[0].cert: the certificate in '" +
                     expired.certFile + "'"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("expired on"), std::string::npos) << out;
  EXPECT_NE(out.find(file + ":10:16: frontends[0].tls.certificates[1].key: key '" + o.keyFile +
                     "' does not match the certificate in '" + cert_.certFile + "'"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("2 errors"), std::string::npos) << out;
  // `halb run` refuses the same file before binding anything.
  EXPECT_EQ(runToEnd({"run", "-c", file}, log), 1);
  EXPECT_NE(slurp(log).find("not starting"), std::string::npos);
}

}  // namespace
}  // namespace halb
