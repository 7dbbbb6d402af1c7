#pragma once
// One pick with stickiness: the glue a worker runs per connection (tcp) or request (http).
//
//   cookie      the request's cookie names an available server -> it; else balance and
//               return the cookie value to set on the response.
//   source      stick table keyed by the client address bytes.
//   app_cookie  stick table keyed by the application's cookie value: looked up and learnt on
//               requests that carry it; a response that sets it (server's Set-Cookie) is
//               learnt with learnAppCookie().
//   header      stick table keyed by the header's value.
//
// A sticky server is used while it acceptsSticky() (a draining server keeps its users) and is
// not in ctx.exclude (a retry after a failed connect goes elsewhere and re-sticks there).
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "balancer/pool.h"
#include "balancer/router.h"
#include "balancer/stick_table.h"
#include "balancer/sticky_cookie.h"
#include "common/result.h"
#include "config/config.h"

namespace halb::balancer {

// The cookie codec of every backend in cookie mode; built on the control thread at start
// and reload (it reads key files), shared read-only by the workers.
class CookieCodecs {
 public:
  // `fallback`: the random per-process secret for standalone nodes (loadCookieKey).
  static Result<CookieCodecs> load(const config::Config& config, std::span<const uint8_t> fallback);
  const StickyCookie* find(uint64_t backendId) const;

 private:
  std::map<uint64_t, StickyCookie> codecs_;
};

struct StickyPick {
  const ServerView* server = nullptr;  // nullptr: no server can take it (503)
  bool sticky = false;                 // an existing mapping decided
  // cookie mode, when the response must (re)set the cookie: its value, for
  // StickyCookie::setCookieHeader(backend.config->sticky.name, value, tls).
  std::string setCookie;
  CookieVerdict cookieVerdict = CookieVerdict::Absent;  // cookie mode: what the request had
};

// `request` is null for tcp frontends (only source mode applies there). `tables` and
// `cookies` may be null when the configuration has no such stickiness. Changes to stick
// tables go to `emit` (the worker's replication queue).
StickyPick pickSticky(const BackendView& backend, Selector& selector, const PickContext& ctx,
                      const RequestView* request, StickTables* tables, const CookieCodecs* cookies,
                      TimePoint now, const StickTables::Emit& emit);

// app_cookie mode: the server's response set the application cookie to `value`.
void learnAppCookie(const BackendView& backend, std::string_view value, uint64_t serverId,
                    StickTables& tables, TimePoint now, const StickTables::Emit& emit);

}  // namespace halb::balancer
