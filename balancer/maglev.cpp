#include "balancer/maglev.h"

#include <algorithm>

#include "balancer/hash.h"

namespace halb::balancer {
namespace {

// Seeds for the two hashes of the paper's offset/skip (fixed: both nodes must agree).
constexpr uint64_t kOffsetSeed = 0x6d61676c65762d6fULL;  // "maglev-o"
constexpr uint64_t kSkipSeed = 0x6d61676c65762d73ULL;    // "maglev-s"

constexpr uint32_t kPrimes[] = {65537, 131071, 262139, 524287, 655373, 1048573};

}  // namespace

uint32_t maglevTableSize(size_t members) {
  for (uint32_t p : kPrimes)
    if (p > 100 * members) return p;
  return kPrimes[std::size(kPrimes) - 1];
}

MaglevTable buildMaglevTable(std::span<const MaglevMember> input, size_t serverCount,
                             uint32_t tableSize) {
  MaglevTable t;
  t.serverCount = serverCount;
  std::vector<MaglevMember> members;
  members.reserve(input.size());
  for (const auto& m : input)
    if (m.weight > 0) members.push_back(m);
  if (members.empty()) return t;
  std::sort(members.begin(), members.end(),
            [](const MaglevMember& a, const MaglevMember& b) { return a.id < b.id; });
  const uint32_t m = tableSize ? tableSize : maglevTableSize(members.size());
  t.size = m;

  struct Build {
    uint64_t pos;   // current slot of this member's permutation
    uint64_t skip;  // permutation step, 1..M-1 (M prime: visits every slot)
    uint64_t weight;
    uint64_t target;  // weighted turn-taking (see header)
    uint16_t index;
  };
  std::vector<Build> b;
  b.reserve(members.size());
  uint64_t maxWeight = 0;
  for (const auto& mm : members) {
    uint64_t offset = hashCombine(mm.id, kOffsetSeed) % m;
    uint64_t skip = hashCombine(mm.id, kSkipSeed) % (m - 1) + 1;
    b.push_back({offset, skip, mm.weight, 0, mm.index});
    maxWeight = std::max<uint64_t>(maxWeight, mm.weight);
  }

  constexpr uint16_t kFree = 0xffff;
  std::vector<uint16_t> table(m, kFree);
  uint32_t filled = 0;
  for (uint64_t round = 1; filled < m; ++round) {
    for (auto& e : b) {
      // A member of weight w takes a turn in w/maxWeight of the rounds.
      if (round * e.weight < e.target) continue;
      e.target += maxWeight;
      while (table[e.pos] != kFree) {
        e.pos += e.skip;
        if (e.pos >= m) e.pos -= m;
      }
      table[e.pos] = e.index;
      e.pos += e.skip;
      if (e.pos >= m) e.pos -= m;
      if (++filled == m) break;
    }
  }
  t.entries = std::move(table);
  return t;
}

}  // namespace halb::balancer
