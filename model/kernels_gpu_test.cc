// The CUDA cross-entropy and cuBLASLt matmul (single, batched, GELU-fused) against the CPU
// reference (fp64 for cross-entropy and the GELU-fused matmuls, fp32 for matmul), on the same
// bf16-rounded inputs; each case prints one line, so the log reads as a table of max errors.
// Needs a GPU (tags = ["gpu"]).
#include <doctest/doctest.h>

#ifdef DILATRON_CUDA
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "core/bf16.h"
#include "core/cuda_timing.h"
#include "core/check.h"
#include "core/cuda_check.h"
#include "core/rng.h"
#include "model/cross_entropy.h"
#include "model/cross_entropy_cuda.h"
#include "model/gelu.h"
#include "model/layers_cuda.h"
#include "model/matmul.h"
#include "model/matmul_cuda.h"

namespace dilatron {
namespace {

// Tolerances on max |got - want| / max |want|. bf16 outputs keep 8 significant bits, so one
// rounding alone is up to 2^-9 of the largest value; 2e-2 is the usual bf16 bound and still far
// below what a wrong index or a missing term gives (order 1). fp32 outputs differ from the CPU
// only in summation order and libm ulps: 1e-5 (against fp64 for cross-entropy, fp32 for
// matmul). dweight and dbias are fp32 sums of exact products of bf16 values, summed over up to
// 1024 rows in another order: 1e-4.
constexpr double kBf16Tolerance = 2e-2;
constexpr double kFp32Tolerance = 1e-5;
constexpr double kFp32SumTolerance = 1e-4;
// cuBLASLt's fp32 GELU derivative epilogue is less exact than our gelu_backward kernel (worst
// 1.1e-5 on an H100, against 1e-6): 5e-5, still well below the 9e-4 by which the erf GELU's
// derivative differs from the tanh one's.
constexpr double kFp32DgeluTolerance = 5e-5;

// Elements past n on the device stay NaN: a kernel that writes there fails the download.
constexpr size_t kGuard = 64;

template <typename T>
T nan_value() {
  if constexpr (std::is_same_v<T, bf16>) {
    return bf16::from_float(std::numeric_limits<float>::quiet_NaN());
  } else {
    return std::numeric_limits<T>::quiet_NaN();
  }
}

template <typename T>
bool is_nan(T x) {
  if constexpr (std::is_same_v<T, bf16>) {
    return std::isnan(x.to_float());
  } else {
    return std::isnan(x);
  }
}

// n device elements plus a NaN guard; created filled with NaN (poisoned).
template <typename T>
struct DeviceArray {
  T* ptr = nullptr;
  size_t n = 0;
  explicit DeviceArray(size_t count) : n(count) {
    DILATRON_CUDA_CHECK(cudaMalloc(&ptr, (n + kGuard) * sizeof(T)));
    const std::vector<T> poison(n + kGuard, nan_value<T>());
    DILATRON_CUDA_CHECK(cudaMemcpy(ptr, poison.data(), poison.size() * sizeof(T), cudaMemcpyHostToDevice));
  }
  explicit DeviceArray(const std::vector<T>& host) : DeviceArray(host.size()) {
    DILATRON_CUDA_CHECK(cudaMemcpy(ptr, host.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  }
  ~DeviceArray() { cudaFree(ptr); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  std::vector<T> download() const {
    DILATRON_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<T> all(n + kGuard);
    DILATRON_CUDA_CHECK(cudaMemcpy(all.data(), ptr, all.size() * sizeof(T), cudaMemcpyDeviceToHost));
    for (size_t i = n; i < all.size(); ++i) REQUIRE(is_nan(all[i]));
    all.resize(n);
    return all;
  }
};

std::vector<float> random_normals(uint64_t seed, uint64_t stream, size_t n, double scale) {
  CounterRng rng(seed, stream);
  std::vector<float> x(n);
  for (float& e : x) e = static_cast<float>(scale * rng.normal());
  return x;
}

// Rounds x to bf16 in place (so the CPU reference sees what the GPU sees) and returns the bf16s.
std::vector<bf16> round_to_bf16(std::vector<float>& x) {
  std::vector<bf16> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    out[i] = bf16::from_float(x[i]);
    x[i] = out[i].to_float();
  }
  return out;
}

std::vector<float> to_floats(const std::vector<bf16>& x) {
  std::vector<float> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = x[i].to_float();
  return out;
}
std::vector<float> to_floats(const std::vector<float>& x) { return x; }
std::vector<float> to_floats(const std::vector<double>& x) { return {x.begin(), x.end()}; }
std::vector<double> to_doubles(const std::vector<float>& x) { return {x.begin(), x.end()}; }

// The values the GPU gets as T: bf16 rounds x in place first (see round_to_bf16).
template <typename T>
std::vector<T> device_values(std::vector<float>& x) {
  if constexpr (std::is_same_v<T, bf16>) {
    return round_to_bf16(x);
  } else {
    return x;
  }
}

// max |got - want| / max |want|; infinity if got has a non-finite value where want is finite.
double max_relative_error(const std::vector<float>& got, const std::vector<float>& want) {
  REQUIRE(got.size() == want.size());
  double diff = 0, scale = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return std::numeric_limits<double>::infinity();
    diff = std::max(diff, static_cast<double>(std::abs(got[i] - want[i])));
    scale = std::max(scale, static_cast<double>(std::abs(want[i])));
  }
  return scale == 0 ? diff : diff / scale;
}

// Every 7th row (from row 3) is ignored (target -1); the rest are uniform in [0, V).
std::vector<int32_t> random_targets(uint64_t seed, int64_t N, int V) {
  CounterRng rng(seed, 99);
  std::vector<int32_t> targets(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n)
    targets[static_cast<size_t>(n)] = n % 7 == 3 ? -1 : static_cast<int32_t>(rng.below(static_cast<uint64_t>(V)));
  return targets;
}

// Runs forward, backward out of place, backward in place (dlogits = logits) and the fused
// forward_backward (in place, on a fresh copy of the logits, into fresh poisoned losses and lse) on
// logits of type T, and checks all of them against the CPU reference; the fused kernel must also
// equal the separate ones bit for bit.
template <typename T>
void check_cross_entropy(const char* label, int64_t N, int V, double grad_tolerance) {
  const uint64_t seed = 17 * static_cast<uint64_t>(N) + static_cast<uint64_t>(V);
  const size_t count = static_cast<size_t>(N) * static_cast<size_t>(V);
  // Scale 4 makes the softmax peaked, as late in training.
  std::vector<float> logits = random_normals(seed, 1, count, 4.0);
  const std::vector<T> device_logits = device_values<T>(logits);
  const std::vector<int32_t> targets = random_targets(seed, N, V);
  const float dloss_weight = 1.0f / static_cast<float>(N);

  // The reference runs in fp64: an fp32 sequential sum over 50k exps is itself off by ~1e-4 in lse,
  // and dlogits inherits lse's absolute error as a relative one.
  const std::vector<double> logits64(logits.begin(), logits.end());
  std::vector<double> losses64(static_cast<size_t>(N)), lse64(static_cast<size_t>(N)), dlogits64(count);
  cross_entropy_forward<double>(losses64.data(), lse64.data(), logits64.data(), targets.data(), N, V);
  cross_entropy_backward<double>(dlogits64.data(), logits64.data(), lse64.data(), targets.data(), dloss_weight, N,
                                 V);
  const std::vector<float> want_losses(losses64.begin(), losses64.end()), want_lse(lse64.begin(), lse64.end()),
      want_dlogits(dlogits64.begin(), dlogits64.end());

  DeviceArray<T> d_logits(device_logits), d_dlogits(count);
  DeviceArray<int32_t> d_targets(targets);
  DeviceArray<float> d_losses(static_cast<size_t>(N)), d_lse(static_cast<size_t>(N));
  cross_entropy_forward(d_losses.ptr, d_lse.ptr, d_logits.ptr, d_targets.ptr, N, V, nullptr);
  cross_entropy_backward(d_dlogits.ptr, d_logits.ptr, d_lse.ptr, d_targets.ptr, dloss_weight, N, V, nullptr);
  const double err_loss = max_relative_error(d_losses.download(), want_losses);
  const double err_lse = max_relative_error(d_lse.download(), want_lse);
  const double err_grad = max_relative_error(to_floats(d_dlogits.download()), want_dlogits);
  cross_entropy_backward(d_logits.ptr, d_logits.ptr, d_lse.ptr, d_targets.ptr, dloss_weight, N, V, nullptr);
  const std::vector<T> in_place = d_logits.download();
  const double err_in_place = max_relative_error(to_floats(in_place), want_dlogits);

  DeviceArray<T> f_logits(device_logits);
  DeviceArray<float> f_losses(static_cast<size_t>(N)), f_lse(static_cast<size_t>(N));
  cross_entropy_forward_backward(f_losses.ptr, f_lse.ptr, f_logits.ptr, d_targets.ptr, dloss_weight, N, V, nullptr);
  const std::vector<float> fused_losses = f_losses.download(), fused_lse = f_lse.download();
  const std::vector<T> fused_dlogits = f_logits.download();
  const double err_fused_loss = max_relative_error(fused_losses, want_losses);
  const double err_fused_lse = max_relative_error(fused_lse, want_lse);
  const double err_fused_grad = max_relative_error(to_floats(fused_dlogits), want_dlogits);
  const bool fused_bitwise = std::memcmp(fused_losses.data(), d_losses.download().data(), N * sizeof(float)) == 0 &&
                             std::memcmp(fused_lse.data(), d_lse.download().data(), N * sizeof(float)) == 0 &&
                             std::memcmp(fused_dlogits.data(), in_place.data(), count * sizeof(T)) == 0;

  std::printf("cross_entropy %-4s N=%-5lld V=%-6d | loss %.2e  lse %.2e (tol %.0e) | dlogits %.2e  in place %.2e "
              "(tol %.0e) | fused: loss %.2e  lse %.2e  dlogits %.2e, %s the separate kernels\n",
              label, static_cast<long long>(N), V, err_loss, err_lse, kFp32Tolerance, err_grad, err_in_place,
              grad_tolerance, err_fused_loss, err_fused_lse, err_fused_grad,
              fused_bitwise ? "equals" : "DIFFERS from");
  INFO(label, " N = ", N, " V = ", V);
  CHECK(err_loss <= kFp32Tolerance);
  CHECK(err_lse <= kFp32Tolerance);
  CHECK(err_grad <= grad_tolerance);
  CHECK(err_in_place <= grad_tolerance);
  CHECK(err_fused_loss <= kFp32Tolerance);
  CHECK(err_fused_lse <= kFp32Tolerance);
  CHECK(err_fused_grad <= grad_tolerance);
  CHECK(fused_bitwise);
}

TEST_CASE("cross_entropy on bf16 logits matches the fp64 CPU reference") {
  for (int64_t N : {1, 7, 257, 1024})
    for (int V : {256, 50304, 50257}) check_cross_entropy<bf16>("bf16", N, V, kBf16Tolerance);
}

TEST_CASE("cross_entropy on fp32 logits matches the fp64 CPU reference") {
  for (int64_t N : {1, 257})
    for (int V : {256, 50257}) check_cross_entropy<float>("fp32", N, V, kFp32Tolerance);
}

TEST_CASE("cross_entropy: a target >= V gives a NaN loss, since a kernel cannot throw") {
  const int V = 256;
  std::vector<float> logits = random_normals(3, 1, 2 * V, 1.0);
  DeviceArray<bf16> d_logits(round_to_bf16(logits));
  DeviceArray<int32_t> d_targets(std::vector<int32_t>{5, V});
  DeviceArray<float> d_losses(2), d_lse(2);
  cross_entropy_forward(d_losses.ptr, d_lse.ptr, d_logits.ptr, d_targets.ptr, 2, V, nullptr);
  const std::vector<float> losses = d_losses.download();
  CHECK(std::isfinite(losses[0]));
  CHECK(std::isnan(losses[1]));
  DeviceArray<float> f_losses(2), f_lse(2);
  cross_entropy_forward_backward(f_losses.ptr, f_lse.ptr, d_logits.ptr, d_targets.ptr, 1.0f, 2, V, nullptr);
  const std::vector<float> fused = f_losses.download();
  CHECK(std::isfinite(fused[0]));
  CHECK(std::isnan(fused[1]));
}

struct MatmulShape {
  int64_t N;
  int IC, OC;
  bool bias;
};

// Forward and backward on T inputs against the fp32 CPU reference. inp_offset shifts inp by that
// many elements off its allocation, so it is no longer 16-byte aligned.
template <typename T>
void check_matmul(const char* label, const MatmulShape& s, double tolerance, MatmulContext& ctx,
                  size_t inp_offset = 0) {
  const auto N = static_cast<size_t>(s.N), IC = static_cast<size_t>(s.IC), OC = static_cast<size_t>(s.OC);
  const uint64_t seed = 1000003 * N + 1009 * IC + OC;
  std::vector<float> inp = random_normals(seed, 1, inp_offset + N * IC, 1.0);
  std::vector<float> weight = random_normals(seed, 2, OC * IC, 0.05);
  std::vector<float> bias = random_normals(seed, 3, OC, 0.1);
  std::vector<float> dout = random_normals(seed, 4, N * OC, 1.0);
  // Nonzero starting gradients: dweight and dbias must be accumulated, not overwritten.
  const std::vector<float> dweight0 = random_normals(seed, 5, OC * IC, 1.0);
  const std::vector<float> dbias0 = random_normals(seed, 6, OC, 1.0);
  const std::vector<T> t_inp = device_values<T>(inp), t_weight = device_values<T>(weight),
                       t_bias = device_values<T>(bias), t_dout = device_values<T>(dout);
  const float* cpu_inp = inp.data() + inp_offset;

  std::vector<float> want_out(N * OC), want_dinp(N * IC, 0.0f), want_dweight = dweight0, want_dbias = dbias0;
  matmul_forward<float>(want_out.data(), cpu_inp, weight.data(), s.bias ? bias.data() : nullptr, s.N, s.IC, s.OC);
  matmul_backward<float>(want_dinp.data(), want_dweight.data(), s.bias ? want_dbias.data() : nullptr, dout.data(),
                         cpu_inp, weight.data(), s.N, s.IC, s.OC);

  DeviceArray<T> d_inp(t_inp), d_weight(t_weight), d_bias(t_bias), d_dout(t_dout), d_out(N * OC), d_dinp(N * IC);
  DeviceArray<float> d_dweight(dweight0), d_dbias(dbias0);
  const T* gpu_inp = d_inp.ptr + inp_offset;
  matmul_forward(d_out.ptr, gpu_inp, d_weight.ptr, s.bias ? d_bias.ptr : nullptr, s.N, s.IC, s.OC, ctx, nullptr);
  matmul_backward(d_dinp.ptr, d_dweight.ptr, s.bias ? d_dbias.ptr : nullptr, d_dout.ptr, gpu_inp, d_weight.ptr,
                  s.N, s.IC, s.OC, ctx, nullptr);
  // The same forward with the residual added in the GEMM (matmul_forward_residual); the output
  // is poisoned first.
  std::vector<float> residual_values = random_normals(seed, 7, N * OC, 1.0);
  const std::vector<T> t_residual = device_values<T>(residual_values);
  const std::vector<float> residual = to_floats(t_residual);
  std::vector<float> want_out_residual(N * OC);
  for (size_t i = 0; i < N * OC; ++i) want_out_residual[i] = want_out[i] + residual[i];
  DeviceArray<T> d_residual(t_residual), d_out_residual(N * OC);
  DILATRON_CUDA_CHECK(cudaMemset(d_out_residual.ptr, 0xff, N * OC * sizeof(T)));  // NaN in fp32 and bf16
  matmul_forward_residual(d_out_residual.ptr, gpu_inp, d_weight.ptr, s.bias ? d_bias.ptr : nullptr, d_residual.ptr,
                          s.N, s.IC, s.OC, ctx, nullptr);
  const double err_out_residual = max_relative_error(to_floats(d_out_residual.download()), want_out_residual);
  const double err_out = max_relative_error(to_floats(d_out.download()), want_out);
  const double err_dinp = max_relative_error(to_floats(d_dinp.download()), want_dinp);
  const double err_dweight = max_relative_error(d_dweight.download(), want_dweight);
  const double err_dbias = max_relative_error(d_dbias.download(), want_dbias);
  const double sum_tolerance = std::is_same_v<T, bf16> ? kFp32SumTolerance : kFp32Tolerance;

  std::printf("matmul %-4s N=%-5zu IC=%-4zu OC=%-4zu bias=%d inp_offset=%zu | out %.2e  out+residual %.2e  dinp "
              "%.2e (tol %.0e) | dweight %.2e  dbias %.2e (tol %.0e)\n",
              label, N, IC, OC, s.bias, inp_offset, err_out, err_out_residual, err_dinp, tolerance, err_dweight,
              err_dbias, sum_tolerance);
  INFO(label, " N = ", N, " IC = ", IC, " OC = ", OC, " bias = ", s.bias, " inp_offset = ", inp_offset);
  CHECK(err_out <= tolerance);
  CHECK(err_out_residual <= tolerance);
  CHECK(err_dinp <= tolerance);
  CHECK(err_dweight <= sum_tolerance);
  CHECK(err_dbias <= sum_tolerance);
}

const std::pair<int, int> kChannelPairs[] = {{64, 64}, {768, 768}, {771, 64}, {64, 771}, {771, 771}};

TEST_CASE("matmul on bf16 matches the fp32 CPU reference") {
  MatmulContext ctx;
  int index = 0;
  for (int64_t N : {1, 7, 257, 1024})
    for (auto [IC, OC] : kChannelPairs) check_matmul<bf16>("bf16", {N, IC, OC, index++ % 2 == 0}, kBf16Tolerance, ctx);
}

TEST_CASE("matmul on fp32 matches the fp32 CPU reference") {
  MatmulContext ctx;
  for (int64_t N : {7, 257})
    for (auto [IC, OC] : {std::pair{64, 771}, std::pair{771, 64}})
      check_matmul<float>("fp32", {N, IC, OC, true}, kFp32Tolerance, ctx);
}

TEST_CASE("matmul on an input that is not 16-byte aligned") {
  MatmulContext ctx;
  check_matmul<bf16>("bf16", {7, 64, 64, true}, kBf16Tolerance, ctx, 1);
}

TEST_CASE("matmul refuses a bias that is not 16-byte aligned, with a clear error") {
  MatmulContext ctx;
  DeviceArray<bf16> inp(8 * 64), weight(64 * 64), bias(64 + 8), out(8 * 64);
  CHECK_THROWS_AS(matmul_forward(out.ptr, inp.ptr, weight.ptr, bias.ptr + 1, 8, 64, 64, ctx, nullptr), Error);
}

// `batch` layers sharing one input (the q/k/v projections) through matmul_forward_batched and
// matmul_backward_batched, against the fp32 CPU matmul run on each layer alone. The outputs (and
// output gradients) lie kGap elements further apart than N * OC: the gaps of out stay poisoned,
// and those of dout are NaN, so a batch stride that is not honoured shows. The backward runs twice:
// dinp written (poisoned first), then accumulated onto fresh values, dweight and dbias += both times.
// Tolerances as check_matmul's: bf16 dinp is rounded once per layer (each GEMM adds into it), at
// most batch x 2^-9 of the largest value, well under 2e-2.
constexpr int64_t kGap = 8;  // 16 bytes of bf16: every layer's output stays 16-byte aligned

template <typename T>
void check_matmul_batched(const char* label, const MatmulShape& s, int batch, double tolerance, MatmulContext& ctx) {
  const auto N = static_cast<size_t>(s.N), IC = static_cast<size_t>(s.IC), OC = static_cast<size_t>(s.OC);
  const auto layers = static_cast<size_t>(batch);
  const int64_t stride = s.N * s.OC + kGap;
  const auto ustride = static_cast<size_t>(stride);
  const uint64_t seed = 3000017 * N + 1021 * IC + OC;
  std::vector<float> inp = random_normals(seed, 1, N * IC, 1.0);
  std::vector<float> weight = random_normals(seed, 2, layers * OC * IC, 0.05);
  std::vector<float> bias = random_normals(seed, 3, layers * OC, 0.1);
  std::vector<float> dout = random_normals(seed, 4, layers * N * OC, 1.0);
  std::vector<float> dinp0 = random_normals(seed, 5, N * IC, 1.0);
  // Nonzero starting gradients: dweight and dbias must be accumulated, not overwritten.
  const std::vector<float> dweight0 = random_normals(seed, 6, layers * OC * IC, 1.0);
  const std::vector<float> dbias0 = random_normals(seed, 7, layers * OC, 1.0);
  const std::vector<T> t_inp = device_values<T>(inp), t_weight = device_values<T>(weight),
                       t_bias = device_values<T>(bias), t_dout = device_values<T>(dout),
                       t_dinp0 = device_values<T>(dinp0);
  // The layers' output gradients at `stride` apart, NaN in the gaps.
  std::vector<T> t_dout_strided(layers * ustride, nan_value<T>());
  for (size_t l = 0; l < layers; ++l)
    std::copy_n(t_dout.begin() + static_cast<std::ptrdiff_t>(l * N * OC), N * OC,
                t_dout_strided.begin() + static_cast<std::ptrdiff_t>(l * ustride));

  // Layer by layer on the CPU: dinp sums over the layers (the CPU backward accumulates it). The
  // second backward adds the same gradients again, onto dinp0 for dinp.
  std::vector<float> want_out(layers * N * OC), want_dinp(N * IC, 0.0f), want_dinp_acc = dinp0,
      want_dweight = dweight0, want_dbias = dbias0;
  for (size_t l = 0; l < layers; ++l) {
    const float* w = weight.data() + l * OC * IC;
    const float* b = s.bias ? bias.data() + l * OC : nullptr;
    const float* d = dout.data() + l * N * OC;
    matmul_forward<float>(want_out.data() + l * N * OC, inp.data(), w, b, s.N, s.IC, s.OC);
    for (std::vector<float>* dinp : {&want_dinp, &want_dinp_acc})
      matmul_backward<float>(dinp->data(), want_dweight.data() + l * OC * IC,
                             s.bias ? want_dbias.data() + l * OC : nullptr, d, inp.data(), w, s.N, s.IC, s.OC);
  }

  DeviceArray<T> d_inp(t_inp), d_weight(t_weight), d_bias(t_bias), d_dout(t_dout_strided), d_out(layers * ustride),
      d_dinp(N * IC), d_dinp_acc(t_dinp0);
  DeviceArray<float> d_dweight(dweight0), d_dbias(dbias0);
  const T* gpu_bias = s.bias ? d_bias.ptr : nullptr;
  float* gpu_dbias = s.bias ? d_dbias.ptr : nullptr;
  matmul_forward_batched(d_out.ptr, stride, d_inp.ptr, d_weight.ptr, gpu_bias, s.N, s.IC, s.OC, batch, ctx, nullptr);
  matmul_backward_batched(d_dinp.ptr, d_dweight.ptr, gpu_dbias, d_dout.ptr, stride, d_inp.ptr, d_weight.ptr, s.N,
                          s.IC, s.OC, batch, ctx, nullptr);
  matmul_backward_batched(d_dinp_acc.ptr, d_dweight.ptr, gpu_dbias, d_dout.ptr, stride, d_inp.ptr, d_weight.ptr,
                          s.N, s.IC, s.OC, batch, ctx, nullptr, DinpRule::accumulate);

  // Each layer's output against its own reference; the gaps after it still NaN.
  const std::vector<float> out = to_floats(d_out.download());
  double err_out = 0;
  bool gaps_poisoned = true;
  for (size_t l = 0; l < layers; ++l) {
    const auto begin = out.begin() + static_cast<std::ptrdiff_t>(l * ustride);
    const std::vector<float> got(begin, begin + static_cast<std::ptrdiff_t>(N * OC));
    const std::vector<float> want(want_out.begin() + static_cast<std::ptrdiff_t>(l * N * OC),
                                  want_out.begin() + static_cast<std::ptrdiff_t>((l + 1) * N * OC));
    err_out = std::max(err_out, max_relative_error(got, want));
    for (size_t i = N * OC; i < ustride; ++i) gaps_poisoned = gaps_poisoned && std::isnan(out[l * ustride + i]);
  }
  const double err_dinp = max_relative_error(to_floats(d_dinp.download()), want_dinp);
  const double err_dinp_acc = max_relative_error(to_floats(d_dinp_acc.download()), want_dinp_acc);
  const double err_dweight = max_relative_error(d_dweight.download(), want_dweight);
  const double err_dbias = max_relative_error(d_dbias.download(), want_dbias);
  const double sum_tolerance = std::is_same_v<T, bf16> ? kFp32SumTolerance : kFp32Tolerance;

  std::printf("matmul_batched %-4s batch=%d N=%-5zu IC=%-4zu OC=%-4zu bias=%d | out %.2e  dinp %.2e  dinp += %.2e "
              "(tol %.0e) | dweight %.2e  dbias %.2e (tol %.0e)\n",
              label, batch, N, IC, OC, s.bias, err_out, err_dinp, err_dinp_acc, tolerance, err_dweight, err_dbias,
              sum_tolerance);
  INFO(label, " batch = ", batch, " N = ", N, " IC = ", IC, " OC = ", OC, " bias = ", s.bias);
  CHECK(gaps_poisoned);
  CHECK(err_out <= tolerance);
  CHECK(err_dinp <= tolerance);
  CHECK(err_dinp_acc <= tolerance);
  CHECK(err_dweight <= sum_tolerance);
  CHECK(err_dbias <= sum_tolerance);
}

// Channel counts that are multiples of 8, as the model's (validate_gpt_shape_for_cuda): the bias
// of every layer must be 16-byte aligned. GPT-2's q/k/v shape is among them.
const std::pair<int, int> kBatchedChannelPairs[] = {{64, 64}, {768, 768}, {200, 776}, {776, 200}};

TEST_CASE("matmul_forward_batched and matmul_backward_batched on bf16 match the fp32 CPU reference per layer") {
  MatmulContext ctx;
  int index = 0;
  for (int64_t N : {1, 7, 257, 1000})
    for (auto [IC, OC] : kBatchedChannelPairs)
      check_matmul_batched<bf16>("bf16", {N, IC, OC, index++ % 2 == 0}, 3, kBf16Tolerance, ctx);
}

TEST_CASE("matmul_forward_batched and matmul_backward_batched on fp32 match the fp32 CPU reference per layer") {
  MatmulContext ctx;
  for (int64_t N : {7, 257})
    for (auto [IC, OC] : {std::pair{64, 776}, std::pair{776, 64}})
      check_matmul_batched<float>("fp32", {N, IC, OC, true}, 3, kFp32Tolerance, ctx);
}

TEST_CASE("matmul_forward_batched refuses biases that are not all 16-byte aligned, with a clear error") {
  MatmulContext ctx;
  // OC = 60 bf16: the second layer's bias starts 120 bytes after the first.
  DeviceArray<bf16> inp(8 * 64), weight(3 * 60 * 64), bias(3 * 60), out(3 * 8 * 60);
  CHECK_THROWS_AS(matmul_forward_batched(out.ptr, 8 * 60, inp.ptr, weight.ptr, bias.ptr, 8, 64, 60, 3, ctx, nullptr),
                  Error);
}

// The MLP's GELU-fused GEMMs. Both are checked against the fp64 CPU matmul and gelu
// (model/matmul.h, model/gelu.h) on the same T-rounded inputs, with every output poisoned first.
// GELU width = OC forward, IC backward; both must be multiples of 8 (cuBLASLt's rule).
struct GeluMatmulShape {
  int64_t N;
  int IC, OC;
};

// pre = inp . weight^T (+ bias) and out = GELU(pre), from one matmul_gelu_forward.
template <typename T>
void check_matmul_gelu_forward(const char* label, const GeluMatmulShape& s, bool with_bias, double tolerance,
                               MatmulContext& ctx) {
  const auto N = static_cast<size_t>(s.N), IC = static_cast<size_t>(s.IC), OC = static_cast<size_t>(s.OC);
  const uint64_t seed = 7000003 * N + 1013 * IC + OC;
  std::vector<float> inp = random_normals(seed, 1, N * IC, 1.0);
  // pre of order 1, so most values fall on GELU's curved part rather than its linear tails.
  std::vector<float> weight = random_normals(seed, 2, OC * IC, 1.0 / std::sqrt(static_cast<double>(IC)));
  std::vector<float> bias = random_normals(seed, 3, OC, 0.5);
  const std::vector<T> t_inp = device_values<T>(inp), t_weight = device_values<T>(weight),
                       t_bias = device_values<T>(bias);

  const std::vector<double> inp64 = to_doubles(inp), weight64 = to_doubles(weight), bias64 = to_doubles(bias);
  std::vector<double> pre64(N * OC), out64(N * OC);
  matmul_forward<double>(pre64.data(), inp64.data(), weight64.data(), with_bias ? bias64.data() : nullptr, s.N,
                         s.IC, s.OC);
  gelu_forward<double>(out64.data(), pre64.data(), s.N * s.OC);

  DeviceArray<T> d_inp(t_inp), d_weight(t_weight), d_bias(t_bias), d_pre(N * OC), d_out(N * OC);
  matmul_gelu_forward(d_out.ptr, d_pre.ptr, d_inp.ptr, d_weight.ptr, with_bias ? d_bias.ptr : nullptr, s.N, s.IC,
                      s.OC, ctx, nullptr);
  const double err_pre = max_relative_error(to_floats(d_pre.download()), to_floats(pre64));
  const double err_out = max_relative_error(to_floats(d_out.download()), to_floats(out64));

  std::printf("matmul_gelu_forward %-4s N=%-5zu IC=%-4zu OC=%-4zu bias=%d | pre %.2e  gelu %.2e (tol %.0e)\n",
              label, N, IC, OC, with_bias, err_pre, err_out, tolerance);
  INFO(label, " N = ", N, " IC = ", IC, " OC = ", OC, " bias = ", with_bias);
  CHECK(err_pre <= tolerance);
  CHECK(err_out <= tolerance);
}

// dpre = (dout . weight) * GELU'(pre) written, dweight and dbias accumulated, from one
// matmul_backward_dgelu; the layer's input is GELU(pre) rounded to T, as the forward stores it.
template <typename T>
void check_matmul_backward_dgelu(const char* label, const GeluMatmulShape& s, double tolerance,
                                 double sum_tolerance, MatmulContext& ctx) {
  const auto N = static_cast<size_t>(s.N), IC = static_cast<size_t>(s.IC), OC = static_cast<size_t>(s.OC);
  const uint64_t seed = 9000011 * N + 1019 * IC + OC;
  std::vector<float> pre = random_normals(seed, 1, N * IC, 1.5);
  const std::vector<T> t_pre = device_values<T>(pre);
  const std::vector<double> pre64 = to_doubles(pre);
  std::vector<double> gelu64(N * IC);
  gelu_forward<double>(gelu64.data(), pre64.data(), s.N * s.IC);
  std::vector<float> inp = to_floats(gelu64);
  const std::vector<T> t_inp = device_values<T>(inp);
  std::vector<float> weight = random_normals(seed, 2, OC * IC, 0.05);
  std::vector<float> dout = random_normals(seed, 3, N * OC, 1.0);
  const std::vector<T> t_weight = device_values<T>(weight), t_dout = device_values<T>(dout);
  // Nonzero starting gradients: dweight and dbias must be accumulated, not overwritten.
  const std::vector<float> dweight0 = random_normals(seed, 4, OC * IC, 1.0);
  const std::vector<float> dbias0 = random_normals(seed, 5, OC, 1.0);

  std::vector<double> dgelu64(N * IC, 0.0), dpre64(N * IC, 0.0), dweight64 = to_doubles(dweight0),
                      dbias64 = to_doubles(dbias0);
  const std::vector<double> inp64 = to_doubles(inp), weight64 = to_doubles(weight), dout64 = to_doubles(dout);
  matmul_backward<double>(dgelu64.data(), dweight64.data(), dbias64.data(), dout64.data(), inp64.data(),
                          weight64.data(), s.N, s.IC, s.OC);
  gelu_backward<double>(dpre64.data(), pre64.data(), dgelu64.data(), s.N * s.IC);

  DeviceArray<T> d_pre(t_pre), d_inp(t_inp), d_weight(t_weight), d_dout(t_dout), d_dpre(N * IC);
  DeviceArray<float> d_dweight(dweight0), d_dbias(dbias0);
  matmul_backward_dgelu(d_dpre.ptr, d_dweight.ptr, d_dbias.ptr, d_dout.ptr, d_inp.ptr, d_pre.ptr, d_weight.ptr, s.N,
                        s.IC, s.OC, ctx, nullptr);
  const double err_dpre = max_relative_error(to_floats(d_dpre.download()), to_floats(dpre64));
  const double err_dweight = max_relative_error(d_dweight.download(), to_floats(dweight64));
  const double err_dbias = max_relative_error(d_dbias.download(), to_floats(dbias64));

  std::printf("matmul_backward_dgelu %-4s N=%-5zu IC=%-4zu OC=%-4zu | dpre %.2e (tol %.0e) | dweight %.2e  dbias "
              "%.2e (tol %.0e)\n",
              label, N, IC, OC, err_dpre, tolerance, err_dweight, err_dbias, sum_tolerance);
  INFO(label, " N = ", N, " IC = ", IC, " OC = ", OC);
  CHECK(err_dpre <= tolerance);
  CHECK(err_dweight <= sum_tolerance);
  CHECK(err_dbias <= sum_tolerance);
}

// Multiples of 8 (the GELU width must be), with the GPT-2 MLP pair among them.
const std::pair<int, int> kGeluChannelPairs[] = {{64, 64}, {200, 776}, {776, 200}, {768, 3072}, {3072, 768}};

TEST_CASE("matmul_gelu_forward and matmul_backward_dgelu on bf16 match the fp64 CPU matmul + gelu") {
  MatmulContext ctx;
  int index = 0;
  for (int64_t N : {1, 7, 1000, 4097})
    for (auto [IC, OC] : kGeluChannelPairs) {
      check_matmul_gelu_forward<bf16>("bf16", {N, IC, OC}, index++ % 2 == 0, kBf16Tolerance, ctx);
      check_matmul_backward_dgelu<bf16>("bf16", {N, IC, OC}, kBf16Tolerance, kFp32SumTolerance, ctx);
    }
}

TEST_CASE("matmul_gelu_forward and matmul_backward_dgelu on fp32 match the fp64 CPU matmul + gelu") {
  MatmulContext ctx;
  for (int64_t N : {7, 1000})
    for (auto [IC, OC] : {std::pair{64, 776}, std::pair{776, 64}}) {
      check_matmul_gelu_forward<float>("fp32", {N, IC, OC}, true, kFp32Tolerance, ctx);
      check_matmul_backward_dgelu<float>("fp32", {N, IC, OC}, kFp32DgeluTolerance, kFp32Tolerance, ctx);
    }
}

// Which GELU the epilogues compute. The exact GELU, 0.5 x (1 + erf(x / sqrt 2)), and the tanh
// approximation our CPU gelu uses differ by at most 5e-4 (derivative 9e-4): bf16 rounding of the
// output hides that, except on x in [-4, -3], where the erf GELU is on average 37% larger in
// magnitude (derivative 20%). So x runs over a grid, each value passed exactly as pre (identity
// weight, no bias; dout = 1 for the derivative), and the mean signed relative error over that
// interval tells the two apart; the max error over the whole grid is the usual bf16 check.
struct GeluErrors {
  double max_vs_tanh = 0, tail_mean_vs_tanh = 0, tail_mean_vs_erf = 0;
};

GeluErrors gelu_errors(const std::vector<float>& got, const std::vector<float>& x, bool derivative) {
  const double inv_sqrt2 = 0.7071067811865476, inv_sqrt_2pi = 0.3989422804014327;
  std::vector<double> tanh_gelu(x.size(), 0.0), ones(x.size(), 1.0), xs = to_doubles(x);
  if (derivative) {
    gelu_backward<double>(tanh_gelu.data(), xs.data(), ones.data(), static_cast<int64_t>(xs.size()));
  } else {
    gelu_forward<double>(tanh_gelu.data(), xs.data(), static_cast<int64_t>(xs.size()));
  }
  GeluErrors e;
  e.max_vs_tanh = max_relative_error(got, to_floats(tanh_gelu));
  int tail = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    if (xs[i] < -4 || xs[i] > -3) continue;
    const double phi = 0.5 * (1 + std::erf(xs[i] * inv_sqrt2));
    const double erf_gelu = derivative ? phi + xs[i] * inv_sqrt_2pi * std::exp(-0.5 * xs[i] * xs[i]) : xs[i] * phi;
    e.tail_mean_vs_tanh += (got[i] - tanh_gelu[i]) / std::abs(tanh_gelu[i]);
    e.tail_mean_vs_erf += (got[i] - erf_gelu) / std::abs(erf_gelu);
    ++tail;
  }
  REQUIRE(tail > 0);
  e.tail_mean_vs_tanh /= tail;
  e.tail_mean_vs_erf /= tail;
  return e;
}

TEST_CASE("matmul_gelu: cuBLASLt's GELU and its derivative are the tanh approximation of model/gelu.h") {
  constexpr int kWidth = 64;
  constexpr int64_t kRows = 256;
  const size_t n = static_cast<size_t>(kRows) * kWidth;
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) x[i] = static_cast<float>(-6.0 + 12.0 * static_cast<double>(i) / (n - 1));
  std::vector<float> identity(size_t{kWidth} * kWidth, 0.0f);
  for (int i = 0; i < kWidth; ++i) identity[size_t{kWidth} * i + i] = 1.0f;
  std::vector<float> ones(n, 1.0f);
  MatmulContext ctx;
  DeviceArray<bf16> d_x(round_to_bf16(x)), d_identity(round_to_bf16(identity)), d_ones(round_to_bf16(ones)),
      d_gelu(n), d_pre(n), d_dgelu(n);
  DeviceArray<float> d_dweight(std::vector<float>(size_t{kWidth} * kWidth, 0.0f));
  matmul_gelu_forward(d_gelu.ptr, d_pre.ptr, d_x.ptr, d_identity.ptr, nullptr, kRows, kWidth, kWidth, ctx, nullptr);
  matmul_backward_dgelu(d_dgelu.ptr, d_dweight.ptr, nullptr, d_ones.ptr, d_x.ptr, d_x.ptr, d_identity.ptr, kRows,
                        kWidth, kWidth, ctx, nullptr);
  CHECK(max_relative_error(to_floats(d_pre.download()), x) == 0.0);  // pre passed through exactly
  const GeluErrors forward = gelu_errors(to_floats(d_gelu.download()), x, false);
  const GeluErrors backward = gelu_errors(to_floats(d_dgelu.download()), x, true);
  for (const auto& [name, e] : {std::pair{"GELU", forward}, std::pair{"GELU'", backward}})
    std::printf("cuBLASLt %-5s on x in [-6, 6]: max error vs tanh GELU %.2e (tol %.0e) | mean signed relative "
                "error on [-4, -3]: vs tanh GELU %+.3f, vs erf GELU %+.3f\n",
                name, e.max_vs_tanh, kBf16Tolerance, e.tail_mean_vs_tanh, e.tail_mean_vs_erf);
  for (const GeluErrors& e : {forward, backward}) {
    CHECK(e.max_vs_tanh <= kBf16Tolerance);
    CHECK(std::abs(e.tail_mean_vs_tanh) <= 0.05);
  }
}

TEST_CASE("matmul_gelu refuses a GELU input that cuBLASLt cannot take, with a clear error") {
  MatmulContext ctx;
  DeviceArray<bf16> inp(8 * 64), weight(64 * 64), pre(8 * 64 + 8), out(8 * 64), dout(8 * 64), dpre(8 * 64);
  DeviceArray<float> dweight(64 * 64);
  // Not 16-byte aligned.
  CHECK_THROWS_AS(matmul_gelu_forward(out.ptr, pre.ptr + 1, inp.ptr, weight.ptr, nullptr, 8, 64, 64, ctx, nullptr),
                  Error);
  CHECK_THROWS_AS(matmul_backward_dgelu(dpre.ptr, dweight.ptr, nullptr, dout.ptr, inp.ptr, pre.ptr + 1, weight.ptr,
                                        8, 64, 64, ctx, nullptr),
                  Error);
  // A GELU width (OC forward, IC backward) that is not a multiple of 8.
  CHECK_THROWS_AS(matmul_gelu_forward(out.ptr, pre.ptr, inp.ptr, weight.ptr, nullptr, 8, 64, 60, ctx, nullptr),
                  Error);
  CHECK_THROWS_AS(matmul_backward_dgelu(dpre.ptr, dweight.ptr, nullptr, dout.ptr, inp.ptr, pre.ptr, weight.ptr, 8,
                                        60, 64, ctx, nullptr),
                  Error);
}

std::vector<bf16> uniform_bf16(uint64_t seed, size_t n) {
  CounterRng rng(seed, 1);
  std::vector<bf16> x(n);
  for (bf16& e : x) e = bf16::from_float(static_cast<float>(rng.uniform() - 0.5));
  return x;
}

TEST_CASE("timing: bf16 matmul at GPT-2 MLP size (N=8192, IC=768, OC=3072), for orientation") {
  const int64_t N = 8192;
  const int IC = 768, OC = 3072;
  const auto n = static_cast<size_t>(N);
  MatmulContext ctx;
  DeviceArray<bf16> inp(uniform_bf16(1, n * IC)), weight(uniform_bf16(2, size_t{OC} * IC)),
      bias(uniform_bf16(3, OC)), dout(uniform_bf16(4, n * OC)), out(n * OC), dinp(n * IC);
  DeviceArray<float> dweight(std::vector<float>(size_t{OC} * IC, 0.0f)), dbias(std::vector<float>(OC, 0.0f));
  const double flops = 2.0 * static_cast<double>(N) * IC * OC;
  const double forward_ms = median_ms(
      [&] { matmul_forward(out.ptr, inp.ptr, weight.ptr, bias.ptr, N, IC, OC, ctx, nullptr); }, 5, 20);
  const double backward_ms = median_ms(
      [&] {
        matmul_backward(dinp.ptr, dweight.ptr, dbias.ptr, dout.ptr, inp.ptr, weight.ptr, N, IC, OC, ctx, nullptr);
      },
      5, 20);
  std::printf("TIMING matmul_forward bf16 N=%lld IC=%d OC=%d (+bias): median %.4f ms, %.1f TFLOP/s\n",
              static_cast<long long>(N), IC, OC, forward_ms, flops / (forward_ms * 1e-3) / 1e12);
  std::printf("TIMING matmul_backward bf16 N=%lld IC=%d OC=%d (dinp, dweight, dbias): median %.4f ms, %.1f "
              "TFLOP/s\n",
              static_cast<long long>(N), IC, OC, backward_ms, 2.0 * flops / (backward_ms * 1e-3) / 1e12);
  const std::vector<bf16> result = out.download();
  CHECK(std::all_of(result.begin(), result.end(), [](bf16 x) { return std::isfinite(x.to_float()); }));
}

// What the bias gradient costs in each backward of a GPT-2 block's linear layers (q/k/v batched,
// proj, fc, fcproj) at one 16k-token micro-batch: matmul_backward with and without dbias, and the
// column sums alone; the plain forward (bias epilogue only) for orientation.
TEST_CASE("timing: the GPT-2 block's linear layers and their bias gradient (N=16384, C=768)") {
  const int64_t N = 16384;
  const auto n = static_cast<size_t>(N);
  MatmulContext ctx;
  struct Layer {
    const char* name;
    int IC, OC, batch;
  };
  for (const Layer& layer : {Layer{"qkv", 768, 768, 3}, Layer{"proj", 768, 768, 1}, Layer{"fc", 768, 3072, 1},
                             Layer{"fcproj", 3072, 768, 1}}) {
    const auto OC = static_cast<size_t>(layer.OC);
    const size_t outputs = n * OC * layer.batch, weights = OC * layer.IC * layer.batch;
    DeviceArray<bf16> inp(uniform_bf16(1, n * layer.IC)), weight(uniform_bf16(2, weights)),
        dout(uniform_bf16(3, outputs)), dinp(n * layer.IC);
    DeviceArray<float> dweight(std::vector<float>(weights, 0.0f)),
        dbias(std::vector<float>(OC * layer.batch, 0.0f));
    auto backward = [&](float* bias_grad) {
      matmul_backward_batched(dinp.ptr, dweight.ptr, bias_grad, dout.ptr, N * layer.OC, inp.ptr, weight.ptr, N,
                              layer.IC, layer.OC, layer.batch, ctx, nullptr);
    };
    DeviceArray<bf16> out(outputs), bias(uniform_bf16(4, OC * layer.batch));
    const double forward_ms = median_ms(
        [&] {
          matmul_forward_batched(out.ptr, N * layer.OC, inp.ptr, weight.ptr, bias.ptr, N, layer.IC, layer.OC,
                                 layer.batch, ctx, nullptr);
        },
        5, 20);
    const double with_ms = median_ms([&] { backward(dbias.ptr); }, 5, 20);
    const double without_ms = median_ms([&] { backward(nullptr); }, 5, 20);
    const double sums_ms = median_ms(
        [&] {
          DILATRON_CUDA_CHECK(detail::launch_add_column_sums(
              dbias.ptr, dout.ptr, N, layer.OC, layer.batch, N * layer.OC, static_cast<float*>(ctx.workspace()),
              static_cast<int64_t>(ctx.workspace_bytes() / sizeof(float)), nullptr));
        },
        5, 20);
    const double flops = 2.0 * static_cast<double>(N) * layer.IC * layer.OC * layer.batch;
    std::printf("TIMING %s bf16 N=%lld IC=%d OC=%d x%d: forward (+bias) %.4f ms (%.0f TFLOP/s); backward with dbias "
                "%.4f ms, without %.4f ms (%.0f TFLOP/s), column sums alone %.4f ms (%.0f GB/s)\n",
                layer.name, static_cast<long long>(N), layer.IC, layer.OC, layer.batch, forward_ms,
                flops / (forward_ms * 1e-3) / 1e12, with_ms, without_ms, 2 * flops / (without_ms * 1e-3) / 1e12,
                sums_ms, static_cast<double>(outputs) * sizeof(bf16) / (sums_ms * 1e-3) / 1e9);
    const std::vector<float> result = dbias.download();
    CHECK(std::all_of(result.begin(), result.end(), [](float x) { return std::isfinite(x); }));
  }
}

// The MLP's GELU GEMMs fused (one cuBLASLt call each) against what the model ran before: the
// matmul, then the GELU kernels of layers_cuda (the backward zeroes dpre first: gelu_backward adds).
// Forward at the fc shape, backward at the fcproj shape, whose input is the GELU output.
TEST_CASE("timing: GELU fused into the cuBLASLt epilogues vs separate kernels (N=16384, C=768, 4C=3072)") {
  const int64_t N = 16384;
  const int C = 768, F = 3072;
  const auto n = static_cast<size_t>(N);
  const int64_t NF = N * F;
  MatmulContext ctx;
  DeviceArray<bf16> ln(uniform_bf16(1, n * C)), fc_w(uniform_bf16(2, size_t{F} * C)), fc_b(uniform_bf16(3, F)),
      fcproj_w(uniform_bf16(4, size_t{C} * F)), dout(uniform_bf16(5, n * C)), pre(n * F), gelu(n * F), dgelu(n * F),
      dpre(n * F);
  DeviceArray<float> dweight(std::vector<float>(size_t{C} * F, 0.0f)), dbias(std::vector<float>(C, 0.0f));
  auto* k_pre = reinterpret_cast<__nv_bfloat16*>(pre.ptr);
  auto* k_gelu = reinterpret_cast<__nv_bfloat16*>(gelu.ptr);
  auto* k_dgelu = reinterpret_cast<__nv_bfloat16*>(dgelu.ptr);
  auto* k_dpre = reinterpret_cast<__nv_bfloat16*>(dpre.ptr);

  const double forward_separate_ms = median_ms(
      [&] {
        matmul_forward(pre.ptr, ln.ptr, fc_w.ptr, fc_b.ptr, N, C, F, ctx, nullptr);
        gelu_forward(k_gelu, k_pre, NF, nullptr);
      },
      5, 20);
  const double forward_fused_ms = median_ms(
      [&] { matmul_gelu_forward(gelu.ptr, pre.ptr, ln.ptr, fc_w.ptr, fc_b.ptr, N, C, F, ctx, nullptr); }, 5, 20);
  const double backward_separate_ms = median_ms(
      [&] {
        matmul_backward(dgelu.ptr, dweight.ptr, dbias.ptr, dout.ptr, gelu.ptr, fcproj_w.ptr, N, F, C, ctx, nullptr);
        DILATRON_CUDA_CHECK(cudaMemsetAsync(dpre.ptr, 0, n * F * sizeof(bf16), nullptr));
        gelu_backward(k_dpre, k_pre, k_dgelu, NF, nullptr);
      },
      5, 20);
  const double backward_fused_ms = median_ms(
      [&] {
        matmul_backward_dgelu(dpre.ptr, dweight.ptr, dbias.ptr, dout.ptr, gelu.ptr, pre.ptr, fcproj_w.ptr, N, F, C,
                              ctx, nullptr);
      },
      5, 20);
  const double flops = 2.0 * static_cast<double>(N) * C * F;
  std::printf("TIMING fc forward bf16 N=%lld IC=%d OC=%d (+bias, GELU): matmul + gelu kernel %.4f ms, fused %.4f ms "
              "(%.1f TFLOP/s), %.2fx\n",
              static_cast<long long>(N), C, F, forward_separate_ms, forward_fused_ms,
              flops / (forward_fused_ms * 1e-3) / 1e12, forward_separate_ms / forward_fused_ms);
  std::printf("TIMING fcproj backward bf16 N=%lld IC=%d OC=%d (dpre through GELU, dweight, dbias): matmul + zero + "
              "gelu_backward %.4f ms, fused %.4f ms (%.1f TFLOP/s), %.2fx\n",
              static_cast<long long>(N), F, C, backward_separate_ms, backward_fused_ms,
              2.0 * flops / (backward_fused_ms * 1e-3) / 1e12, backward_separate_ms / backward_fused_ms);
  for (const DeviceArray<bf16>* result : {&gelu, &dpre}) {
    const std::vector<bf16> values = result->download();
    CHECK(std::all_of(values.begin(), values.end(), [](bf16 x) { return std::isfinite(x.to_float()); }));
  }
}

}  // namespace
}  // namespace dilatron

#else
TEST_CASE("kernels_gpu_test needs a build with --config=cuda") { FAIL("built without CUDA"); }
#endif
