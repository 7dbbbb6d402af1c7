// Runs the state-sync fuzz target over its seed corpus, so every build exercises it even
// without a fuzzing toolchain. A crash or trap fails the test.
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

TEST(StatesyncFuzzCorpus, EverySeedRuns) {
  std::filesystem::path dir = HALB_STATESYNC_CORPUS;
  ASSERT_TRUE(std::filesystem::is_directory(dir)) << dir;
  size_t n = 0;
  std::set<int> modes;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    SCOPED_TRACE(entry.path().filename().string());
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    if (!bytes.empty()) modes.insert(static_cast<uint8_t>(bytes[0]) % 16);
    ++n;
  }
  EXPECT_GE(n, 16u);
  EXPECT_EQ(modes.size(), 16u) << "a seed for every mode of the target";
}

}  // namespace
