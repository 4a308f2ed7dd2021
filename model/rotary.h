// Rotary position embedding (RoPE, Su et al. 2021) on q or k laid out (B, Tc, H, D), D even.
// The pair (2i, 2i+1) of the token at absolute position p = pos0 + t is rotated by the
// angle p * theta^(-2i/D). pos0 lets a sequence-parallel rank hold positions
// pos0 .. pos0 + Tc - 1 of a longer sequence.
//
// Both functions work in place: the forward rotates the activations, the backward applies
// the inverse rotation (the transpose) to the gradient, which is exactly d loss / d input.
#pragma once

namespace dilatron {

template <typename T>
void rotary_forward(T* x, int B, int Tc, int H, int D, int pos0, double theta);

template <typename T>
void rotary_backward(T* dx, int B, int Tc, int H, int D, int pos0, double theta);

}  // namespace dilatron
