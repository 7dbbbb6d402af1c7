#include "vrrp/vip.h"

#include <linux/if_addr.h>
#include <netlink/addr.h>
#include <netlink/errno.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/socket.h>

#include <algorithm>

namespace halb::vrrp {

namespace {

struct AddrDeleter {
  void operator()(rtnl_addr* a) const { rtnl_addr_put(a); }
};
using AddrPtr = std::unique_ptr<rtnl_addr, AddrDeleter>;

AddrPtr build(const Prefix& vip, unsigned ifindex) {
  AddrPtr a(rtnl_addr_alloc());
  if (!a) return a;
  nl_addr* local = nl_addr_build(vip.address.af(), vip.address.data(), vip.address.size());
  if (!local) return nullptr;
  nl_addr_set_prefixlen(local, vip.length);
  rtnl_addr_set_ifindex(a.get(), static_cast<int>(ifindex));
  rtnl_addr_set_local(a.get(), local);  // takes its own reference
  nl_addr_put(local);
  rtnl_addr_set_prefixlen(a.get(), vip.length);
  return a;
}

}  // namespace

Result<std::unique_ptr<VipManager>> VipManager::open() {
  std::unique_ptr<VipManager> m(new VipManager());
  m->sock_ = nl_socket_alloc();
  if (!m->sock_) return Error{"netlink: out of memory"};
  if (int rc = nl_connect(m->sock_, NETLINK_ROUTE); rc < 0)
    return Error{std::string("netlink connect: ") + nl_geterror(rc)};
  return m;
}

VipManager::~VipManager() {
  if (sock_) nl_socket_free(sock_);
}

std::string VipManager::add(const Prefix& vip, unsigned ifindex, Duration lifetime) {
  AddrPtr a = build(vip, ifindex);
  if (!a) return "netlink: out of memory";
  auto secs = std::chrono::ceil<std::chrono::seconds>(lifetime).count();
  uint32_t lft = static_cast<uint32_t>(std::clamp<int64_t>(secs, 1, 0xFFFFFFFE));
  rtnl_addr_set_valid_lifetime(a.get(), lft);
  rtnl_addr_set_preferred_lifetime(a.get(), lft);
  if (vip.address.isV6()) rtnl_addr_set_flags(a.get(), IFA_F_NODAD);
  // NLM_F_REPLACE: an existing address gets its lifetimes reset instead of EEXIST.
  int rc = rtnl_addr_add(sock_, a.get(), NLM_F_REPLACE);
  if (rc < 0) return std::string("adding ") + vip.toString() + ": " + nl_geterror(rc);
  return {};
}

std::string VipManager::remove(const Prefix& vip, unsigned ifindex, bool* wasPresent) {
  if (wasPresent) *wasPresent = false;
  AddrPtr a = build(vip, ifindex);
  if (!a) return "netlink: out of memory";
  int rc = rtnl_addr_delete(sock_, a.get(), 0);
  if (rc == -NLE_NOADDR || rc == -NLE_OBJ_NOTFOUND || rc == -NLE_NODEV) return {};
  if (rc < 0) return std::string("removing ") + vip.toString() + ": " + nl_geterror(rc);
  if (wasPresent) *wasPresent = true;
  return {};
}

}  // namespace halb::vrrp
