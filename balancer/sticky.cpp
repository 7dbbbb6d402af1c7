#include "balancer/sticky.h"

namespace halb::balancer {
namespace {

bool excluded(const PickContext& ctx, uint64_t id) {
  for (uint64_t e : ctx.exclude)
    if (e == id) return true;
  return false;
}

}  // namespace

Result<CookieCodecs> CookieCodecs::load(const config::Config& config,
                                        std::span<const uint8_t> fallback) {
  CookieCodecs c;
  for (const auto& b : config.backends) {
    if (b.sticky.mode != config::StickyMode::Cookie) continue;
    auto key = loadCookieKey(config, b, fallback);
    if (!key) return Error{"backend " + b.name + ": " + key.error()};
    c.codecs_.emplace(b.id, StickyCookie({std::move(key).value()}));
  }
  return c;
}

const StickyCookie* CookieCodecs::find(uint64_t backendId) const {
  auto it = codecs_.find(backendId);
  return it == codecs_.end() ? nullptr : &it->second;
}

StickyPick pickSticky(const BackendView& backend, Selector& selector, const PickContext& ctx,
                      const RequestView* request, StickTables* tables, const CookieCodecs* cookies,
                      TimePoint now, const StickTables::Emit& emit) {
  StickyPick out;
  const config::Sticky* cfg = backend.config ? &backend.config->sticky : nullptr;
  const config::StickyMode mode = cfg ? cfg->mode : config::StickyMode::None;

  if (mode == config::StickyMode::Cookie) {
    const StickyCookie* codec = cookies ? cookies->find(backend.id) : nullptr;
    if (codec && request) {
      const ServerView* s = codec->resolve(backend, request->cookie(cfg->name), out.cookieVerdict);
      if (s && !excluded(ctx, s->id)) {
        out.server = s;
        out.sticky = true;
        return out;
      }
    }
    out.server = selector.select(backend, ctx);
    if (out.server && codec) out.setCookie = codec->encode(backend.id, out.server->id);
    return out;
  }

  // Table modes: find the key.
  std::optional<std::string_view> key;
  switch (mode) {
    case config::StickyMode::Source:
      if (ctx.clientAddress)
        key = std::string_view(reinterpret_cast<const char*>(ctx.clientAddress->data()),
                               ctx.clientAddress->size());
      break;
    case config::StickyMode::AppCookie:
      if (request) key = request->cookie(cfg->name);
      break;
    case config::StickyMode::Header:
      if (request) key = request->header(cfg->name);
      break;
    case config::StickyMode::None:
    case config::StickyMode::Cookie:
      break;
  }
  if (key && key->empty()) key.reset();  // an empty value identifies nobody
  if (!key || !tables) {
    out.server = selector.select(backend, ctx);
    return out;
  }
  if (auto id = tables->lookup(backend.id, *key, now, emit)) {
    const ServerView* s = backend.findServer(*id);
    if (s && s->acceptsSticky() && !excluded(ctx, s->id)) {
      out.server = s;
      out.sticky = true;
      return out;
    }
  }
  out.server = selector.select(backend, ctx);
  if (out.server) tables->record(backend.id, *key, out.server->id, now, emit);
  return out;
}

void learnAppCookie(const BackendView& backend, std::string_view value, uint64_t serverId,
                    StickTables& tables, TimePoint now, const StickTables::Emit& emit) {
  if (value.empty() || !backend.config ||
      backend.config->sticky.mode != config::StickyMode::AppCookie)
    return;
  tables.record(backend.id, value, serverId, now, emit);
}

}  // namespace halb::balancer
