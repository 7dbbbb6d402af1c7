#pragma once
// The Maglev lookup table (Eisenbud et al., NSDI '16, §3.4): every server gets a
// pseudo-random permutation of the M table slots, derived from its stable id; servers take
// turns claiming their next free preferred slot until the table is full. A flow's server is
// table[hash % M]. When a server leaves or returns, only the slots it held (plus a few
// others) change, so most flows keep their server; and both nodes of a pair, given the same
// servers, build the same table.
//
// Weights (as in Katran and Envoy): a server of weight w takes a turn in w/max_w of the
// rounds, so it ends up with about w/sum(w) of the slots.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace halb::balancer {

struct MaglevMember {
  uint64_t id = 0;      // stable server id: decides the permutation
  uint32_t weight = 0;  // > 0
  uint16_t index = 0;   // what the table stores (position in BackendView::servers)
};

struct MaglevTable {
  uint32_t size = 0;              // M, prime
  size_t serverCount = 0;         // BackendView::servers.size() the table was built for
  std::vector<uint16_t> entries;  // M slots, each a member's index; empty: no member

  bool empty() const { return entries.empty(); }
  uint16_t lookup(uint64_t hash) const { return entries[hash % size]; }
};

// The paper's rule: M prime and M > 100 * N keeps the imbalance under about 1% (§3.4, §5.3).
// 65537 up to 655 servers, then larger primes.
uint32_t maglevTableSize(size_t members);

// Builds the table. The result does not depend on the order of `members` (they are sorted by
// id first), only on their ids and weights. `tableSize` 0 = maglevTableSize(members.size()).
MaglevTable buildMaglevTable(std::span<const MaglevMember> members, size_t serverCount,
                             uint32_t tableSize = 0);

}  // namespace halb::balancer
