#pragma once
// Loads and validates the YAML configuration. Every problem is collected, none stops the
// others from being found; each names file:line:column and the field path, e.g.
//   pair.yaml:23:7: backends[1].servers[0].weight: must be 0..256, got 300
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"

namespace halb::config {

struct ConfigError {
  std::string file;
  int line = 0;    // 1-based; 0 when the error is about the file as a whole
  int column = 0;  // 1-based
  std::string path;
  std::string message;
  bool warning = false;  // reported, but the configuration is still usable

  std::string toString() const;
};

struct LoadOptions {
  std::string node;  // which node of `nodes:` this is; empty = this machine's hostname
  // Key and certificate files must exist and be readable. Relative paths are taken from the
  // configuration file's directory either way.
  bool checkFiles = true;
  // The time certificates are checked against (unix seconds); 0 = the system clock.
  int64_t nowUnix = 0;
};

struct LoadResult {
  ConfigPtr config;  // null when there are errors
  std::vector<ConfigError> errors;
  std::vector<ConfigError> warnings;
  bool ok() const { return errors.empty(); }
};

LoadResult loadConfigFile(const std::string& path, const LoadOptions& options);
LoadResult loadConfigString(std::string_view yaml, const std::string& fileName, const LoadOptions& options);

// The resolved settings of one node, as `halb check` prints them.
std::string describe(const Config& config);

}  // namespace halb::config
