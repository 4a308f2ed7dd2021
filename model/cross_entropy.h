// Fused softmax + cross-entropy over logits (N, V) with integer targets (N).
// loss_n = lse_n - logits[n, target_n], lse_n = log sum_v exp(logits[n, v]).
// A target < 0 marks an ignored position: loss 0 and gradient 0. A target >= V is an
// InputError.
//
// Gradient rule (the exception in this folder): the backward WRITES
// dlogits = (softmax - onehot(target)) * dloss_weight; dlogits may alias logits, which
// lets the model turn its logits buffer into dlogits without a second (N, V) buffer.
#pragma once

#include <cstdint>

namespace dilatron {

// losses (N), lse (N) saved for backward.
template <typename T>
void cross_entropy_forward(T* losses, T* lse, const T* logits, const int32_t* targets, int64_t N,
                           int V);

template <typename T>
void cross_entropy_backward(T* dlogits, const T* logits, const T* lse, const int32_t* targets,
                            T dloss_weight, int64_t N, int V);

}  // namespace dilatron
