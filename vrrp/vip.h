#pragma once
// VIP ownership over rtnetlink (libnl-route): add, renew, remove.
//
// The master adds each VIP with a finite valid and preferred lifetime (IFA_CACHEINFO, whole
// seconds) and re-adds it with NLM_F_REPLACE well before it runs out, which resets both
// lifetimes. If the master is SIGKILLed nobody renews, and the kernel deletes the address by
// itself. Measured on Linux 6.18 (IPv4, network namespace): an address added with
// valid_lft 2 disappears 2.02–2.17 s later, with valid_lft 1 after 1.02–1.24 s; expiry is
// checked by devinet's check_lifetime work, scheduled on whole-second boundaries
// (round_jiffies_up), so the documented bound is vip_lifetime + 1 s. IPv6 addresses are added
// with IFA_F_NODAD so they are usable at once (no tentative phase after takeover).
#include <memory>
#include <string>

#include "common/net.h"
#include "common/result.h"
#include "common/time.h"

struct nl_sock;

namespace halb::vrrp {

class VipManager {
 public:
  static Result<std::unique_ptr<VipManager>> open();
  ~VipManager();
  VipManager(const VipManager&) = delete;
  VipManager& operator=(const VipManager&) = delete;

  // Adds the address, or renews its lifetimes when present. Empty string on success.
  std::string add(const Prefix& vip, unsigned ifindex, Duration lifetime);
  // Removes the address. `wasPresent` tells whether there was one to remove.
  std::string remove(const Prefix& vip, unsigned ifindex, bool* wasPresent = nullptr);

 private:
  VipManager() = default;
  nl_sock* sock_ = nullptr;
};

}  // namespace halb::vrrp
