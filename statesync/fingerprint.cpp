#include "statesync/fingerprint.h"

#include <algorithm>
#include <string>
#include <vector>

namespace halb::statesync {

namespace {

// Length-prefixed fields, so ("ab","c") and ("a","bc") hash differently.
void field(std::string& out, std::string_view v) {
  out += std::to_string(v.size());
  out += ':';
  out += v;
}
void field(std::string& out, uint64_t v) {
  field(out, std::to_string(v));
}

}  // namespace

Sha256Digest configFingerprint(const config::Config& c) {
  std::vector<std::string> parts;
  for (const auto& b : c.backends) {
    std::string p;
    field(p, "backend");
    field(p, b.name);
    field(p, b.id);
    field(p, config::toString(b.sticky.mode));
    field(p, b.sticky.name);
    field(p, static_cast<uint64_t>(toMillis(b.sticky.ttl)));
    std::vector<std::string> servers;
    for (const auto& s : b.servers) {
      std::string sp;
      field(sp, s.name);
      field(sp, s.id);
      servers.push_back(std::move(sp));
    }
    std::sort(servers.begin(), servers.end());
    for (const auto& s : servers) field(p, s);
    parts.push_back(std::move(p));
  }
  for (const auto& f : c.frontends) {
    if (!f.continuity) continue;
    std::string p;
    field(p, "frontend");
    field(p, f.name);
    field(p, config::toString(f.mode));
    std::vector<std::string> binds;
    for (const auto& a : f.bind) binds.push_back(a.toString());
    std::sort(binds.begin(), binds.end());
    for (const auto& a : binds) field(p, a);
    parts.push_back(std::move(p));
  }
  std::sort(parts.begin(), parts.end());
  std::string all = "halb replicated config v1";
  for (const auto& p : parts) field(all, p);
  return sha256(all);
}

}  // namespace halb::statesync
