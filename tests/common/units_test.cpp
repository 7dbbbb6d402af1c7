#include "common/units.h"

#include <gtest/gtest.h>

namespace halb {
namespace {

using namespace std::chrono_literals;

TEST(Duration, ParsesUnitsAndCompounds) {
  EXPECT_EQ(*parseDuration("150ms"), 150ms);
  EXPECT_EQ(*parseDuration("2s"), 2s);
  EXPECT_EQ(*parseDuration("1m30s"), 90s);
  EXPECT_EQ(*parseDuration("1h"), 3600s);
  EXPECT_EQ(*parseDuration("500us"), 500us);
  EXPECT_EQ(*parseDuration("7ns"), 7ns);
  EXPECT_EQ(*parseDuration("2s500ms"), 2500ms);
  EXPECT_EQ(*parseDuration("0s"), 0s);
}

TEST(Duration, RejectsAmbiguityAndJunk) {
  EXPECT_NE(parseDuration("5").error().find("needs a unit"), std::string::npos);
  EXPECT_NE(parseDuration("5 s").error().find("needs a unit"), std::string::npos);
  EXPECT_NE(parseDuration("5sec").error().find("unknown unit"), std::string::npos);
  EXPECT_NE(parseDuration("30s1m").error().find("largest to smallest"), std::string::npos);
  EXPECT_FALSE(parseDuration(""));
  EXPECT_FALSE(parseDuration("-1s"));
  EXPECT_FALSE(parseDuration("ms"));
  EXPECT_NE(parseDuration("99999999999999999999h").error().find("too large"), std::string::npos);
  EXPECT_NE(parseDuration("9999999999h").error().find("too large"), std::string::npos);
}

TEST(Duration, FormatsShortestExactForm) {
  EXPECT_EQ(formatDuration(150ms), "150ms");
  EXPECT_EQ(formatDuration(2s), "2s");
  EXPECT_EQ(formatDuration(90s), "1m30s");
  EXPECT_EQ(formatDuration(1500ms), "1500ms");
  EXPECT_EQ(formatDuration(0s), "0s");
  EXPECT_EQ(formatDuration(3h), "3h");
  for (const char* s : {"150ms", "2s", "1m30s", "1h", "40950ms", "250us"})
    EXPECT_EQ(formatDuration(*parseDuration(s)), s);
}

TEST(Size, ParsesUnits) {
  EXPECT_EQ(*parseSize("16KiB"), 16384u);
  EXPECT_EQ(*parseSize("1MiB"), 1u << 20);
  EXPECT_EQ(*parseSize("2GiB"), 2ull << 30);
  EXPECT_EQ(*parseSize("4096"), 4096u);
  EXPECT_EQ(*parseSize("10B"), 10u);
  EXPECT_EQ(*parseSize("3KB"), 3000u);
  EXPECT_NE(parseSize("16kb").error().find("unknown unit"), std::string::npos);
  EXPECT_FALSE(parseSize("KiB"));
  EXPECT_FALSE(parseSize(""));
  EXPECT_NE(parseSize("99999999999GiB").error().find("too large"), std::string::npos);
  EXPECT_EQ(formatSize(16384), "16KiB");
  EXPECT_EQ(formatSize(1000), "1000B");
}

}  // namespace
}  // namespace halb
