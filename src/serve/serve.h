// `bluegreen serve`: the control plane. Opens the state store under the state directory, starts
// or re-adopts the proxy process and the stacks' tasks, keeps every stack converged to its stack
// file, and serves the REST API (docs/api.md) that the CLI uses.
#pragma once

#include <string>

namespace bluegreen::serve {

struct ServeOptions {
  std::string state_dir;                   // created if missing (mode 0700)
  std::string api = "127.0.0.1:7070";      // REST API listen address ("HOST:PORT" or "unix:/path")
  std::string self_binary;                 // path of the bluegreen executable (runs the proxy);
                                           // empty = /proc/self/exe
  int proxy_workers = 0;                   // 0 = the proxy's default (number of cores)
  int keep_versions = 10;                  // builds kept per stack (Pipeline); 0 = all
};

// The default state directory: $BLUEGREEN_STATE_DIR, else /var/lib/bluegreen for root, else
// $HOME/.local/state/bluegreen. Shared by serve and the CLI.
std::string DefaultStateDir();

// Runs until SIGTERM or SIGINT. The proxy and the tasks keep running after it returns (they are
// re-adopted by the next serve). Returns the process exit status.
int RunServe(const ServeOptions& options);

}  // namespace bluegreen::serve
