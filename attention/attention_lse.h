// The precision of a saved log-sum-exp: float for fp32 inputs, double for fp64 inputs so that
// fp64 gradient checks are not limited by a rounded lse.
#pragma once

#include <type_traits>

namespace dilatron {

template <typename T>
using attention_lse_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

}  // namespace dilatron
