// libFuzzer target: the stack file parser. Any input must parse or be rejected with a message,
// never crash or hang; an accepted spec must survive the JSON round trip unchanged.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "stack/stack_spec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto spec = bluegreen::stack::ParseStackSpec(text);
  if (!spec.ok()) {
    if (spec.status().message().empty()) std::abort();
    return 0;
  }
  auto again = bluegreen::stack::ParseStackSpec(bluegreen::stack::StackSpecToJson(*spec));
  if (!again.ok() || !(*again == *spec)) {
    std::fprintf(stderr, "round trip changed the spec\n");
    std::abort();
  }
  return 0;
}
