#pragma once
// The fingerprint two nodes compare in HELLO: SHA-256 over the parts of the configuration that
// give replicated entries their meaning. Entries name backends and servers by stable id and
// are keyed by the backend's sticky mode, so if those differ between the nodes the peer's
// entries would be misread; the session refuses to sync and says why instead.
#include "common/crypto.h"
#include "config/config.h"

namespace halb::statesync {

// Covers: every backend (name, id, sticky mode, sticky name, ttl) with its servers (name, id),
// and every frontend with continuity on (name, mode, bind addresses). Independent of the order
// in the file and of everything else (timeouts, routes, weights, health checks, VRRP).
Sha256Digest configFingerprint(const config::Config& c);

}  // namespace halb::statesync
