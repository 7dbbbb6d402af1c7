// Any byte string given as a configuration file must yield a config or a list of errors:
// never a crash, a hang or an uncaught exception.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "config/loader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  halb::config::LoadOptions opt;
  opt.node = "lb1";
  opt.checkFiles = false;
  auto res = halb::config::loadConfigString(std::string_view(reinterpret_cast<const char*>(data), size),
                                            "fuzz.yaml", opt);
  // Every error must be printable and carry a message.
  for (const auto& e : res.errors) {
    if (e.toString().empty() || e.message.empty()) __builtin_trap();
  }
  if (res.ok() && !res.config) __builtin_trap();
  return 0;
}
