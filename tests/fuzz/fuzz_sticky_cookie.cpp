// Fuzzes the sticky cookie decoder: any value must decode without crashing, and whatever
// decodes as authentic must be exactly what encode() writes for that server.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "balancer/sticky_cookie.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace halb::balancer;
  static const StickyCookie codec({deriveCookieKey(std::vector<uint8_t>(32, 1))});
  std::string_view v(reinterpret_cast<const char*>(data), size);
  uint64_t id = 0;
  if (codec.decode(42, v, id) == CookieVerdict::Ok && codec.encode(42, id) != v) __builtin_trap();
  // Round trip of a server id taken from the input.
  uint64_t want = 0;
  for (size_t i = 0; i < size && i < 8; ++i) want = (want << 8) | data[i];
  std::string enc = codec.encode(42, want);
  if (codec.decode(42, enc, id) != CookieVerdict::Ok || id != want) __builtin_trap();
  return 0;
}
