// Snapshot: the immutable routing table that every worker reads while it serves requests. The
// control thread builds a new Snapshot for every change (config, swap, health, registration) and
// posts it to each worker; a request takes the worker's current snapshot once when it is dispatched
// and holds it until it finishes. A Snapshot is never mutated after it is built, so any number of
// threads may read it at once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/net.h"
#include "proxy/config.h"

namespace bluegreen::proxy {

enum class Health : uint8_t { kInitial, kHealthy, kUnhealthy, kDraining };
std::string_view HealthName(Health h);

struct TargetSnap {
  uint32_t id = 0;  // stable for (target group, address) for the life of the process
  Endpoint endpoint;
  std::string address;  // endpoint as text
};

struct TargetGroupSnap {
  std::string name;
  Algorithm algorithm = Algorithm::kRoundRobin;
  std::vector<TargetSnap> routable;  // healthy targets only: the ones that get new requests
};

struct ListenerSnap {
  uint32_t id = 0;  // stable for (address, port): identifies the listening sockets
  std::string name;
  uint16_t port = 0;
  std::vector<Cidr> allow;
  int group = -1;  // index into Snapshot::groups
  std::string port_text;  // for X-Forwarded-Port
};

struct Snapshot {
  uint64_t generation = 0;
  std::vector<ListenerSnap> listeners;
  std::vector<TargetGroupSnap> groups;
  Limits limits;

  const ListenerSnap* FindListener(uint32_t id) const {
    for (const auto& l : listeners) {
      if (l.id == id) return &l;
    }
    return nullptr;
  }
};

}  // namespace bluegreen::proxy
