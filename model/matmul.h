// Linear layer: out (N, OC) = inp (N, IC) . weight (OC, IC)^T + bias (OC); bias may be null.
// Products go through Eigen to OpenBLAS.
// Gradient rule: dinp, dweight, dbias are accumulated (+=); dbias may be null (no bias).
#pragma once

#include <cstdint>

namespace dilatron {

template <typename T>
void matmul_forward(T* out, const T* inp, const T* weight, const T* bias, int64_t N, int IC,
                    int OC);

template <typename T>
void matmul_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                     int64_t N, int IC, int OC);

}  // namespace dilatron
