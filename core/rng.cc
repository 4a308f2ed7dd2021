#include "core/rng.h"

#include <xxhash.h>

namespace dilatron {

uint64_t name_stream(std::string_view name) { return XXH64(name.data(), name.size(), 0); }

}  // namespace dilatron
