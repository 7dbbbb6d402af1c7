#include "common/crypto.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>

namespace halb {
namespace {

std::span<const uint8_t> bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

TEST(Crypto, Sha256KnownAnswer) {
  EXPECT_EQ(toHex(sha256("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Crypto, HmacSha256Rfc4231Case2) {
  // RFC 4231 §4.3: key "Jefe", data "what do ya want for nothing?".
  EXPECT_EQ(toHex(hmacSha256(bytes("Jefe"), bytes("what do ya want for nothing?"))),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  // Parts hash as if concatenated.
  EXPECT_EQ(hmacSha256(bytes("Jefe"), {bytes("what do ya "), bytes("want for nothing?")}),
            hmacSha256(bytes("Jefe"), bytes("what do ya want for nothing?")));
}

TEST(Crypto, ConstantTimeEqual) {
  EXPECT_TRUE(constantTimeEqual(bytes("abc"), bytes("abc")));
  EXPECT_FALSE(constantTimeEqual(bytes("abc"), bytes("abd")));
  EXPECT_FALSE(constantTimeEqual(bytes("abc"), bytes("ab")));
}

TEST(Crypto, StableIdDependsOnNameOnly) {
  EXPECT_EQ(stableId("web/web1"), stableId("web/web1"));
  EXPECT_NE(stableId("web/web1"), stableId("web/web2"));
}

TEST(Crypto, KeyFileChecks) {
  std::string dir = ::testing::TempDir();
  std::string good = dir + "/halb-key-good", small = dir + "/halb-key-small";
  std::ofstream(good) << "  0123456789abcdef0123\n";
  std::ofstream(small) << "short\n";
  ::chmod(good.c_str(), 0600);
  auto k = loadKeyFile(good);
  ASSERT_TRUE(k) << k.error();
  EXPECT_EQ(std::string(k->begin(), k->end()), "0123456789abcdef0123");
  EXPECT_TRUE(keyFilePermissionProblem(good).empty());
  ::chmod(good.c_str(), 0644);
  EXPECT_NE(keyFilePermissionProblem(good).find("chmod 600"), std::string::npos);
  EXPECT_NE(loadKeyFile(small).error().find("fewer than 16"), std::string::npos);
  EXPECT_FALSE(loadKeyFile(dir + "/does-not-exist"));
}

}  // namespace
}  // namespace halb
