// The cross-field rules of a Config, checked once after parsing and overrides, before any work.
#pragma once

#include <string>

#include "trainer/config.h"

namespace dilatron {

// Throws InputError "<source>: <key> = <value>: <rule>" for the first rule broken.
void validate_config(const Config& config, const std::string& source);

}  // namespace dilatron
