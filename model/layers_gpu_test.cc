// CUDA layers (model/layers_cuda.h) against the CPU reference run in fp64 on the same inputs,
// rounded to bf16 where T is bf16, so the measured error is the GPU's alone. Pure outputs are
// poisoned with NaN first; accumulated ("+=") outputs start from random values. Prints one
// line per op / dtype / shape. Also: the CUDA cross-entropy on rows that are not 16-byte aligned
// (its aligned shapes are in kernels_gpu_test.cc), and "timing" cases (bandwidth of the norm and
// cross-entropy kernels at GPT-2 124M sizes) that sanitizer runs skip with -tce='timing*'.
// Needs a GPU (tags = ["gpu"]).
#include <doctest/doctest.h>

#ifdef DILATRON_CUDA
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "core/cuda_check.h"
#include "core/cuda_timing.h"
#include "core/rng.h"
#include "model/cross_entropy.h"
#include "model/cross_entropy_cuda.h"
#include "model/embedding.h"
#include "model/gelu.h"
#include "model/layernorm.h"
#include "model/layers_cuda.h"
#include "model/layers_cuda_kernels.h"
#include "model/residual.h"
#include "model/rmsnorm.h"
#include "model/rotary.h"

namespace dilatron {
namespace {

using bf16_t = __nv_bfloat16;
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

template <typename T>
T from_f(float x) {
  if constexpr (std::is_same_v<T, bf16_t>) return __float2bfloat16(x);
  else return static_cast<T>(x);
}
template <typename T>
float to_f(T x) {
  if constexpr (std::is_same_v<T, bf16_t>) return __bfloat162float(x);
  else return static_cast<float>(x);
}

// Max |got - want| / max |want|; infinite if got has a non-finite value. fp32: a few ulps per
// operation over O(C) reductions; bf16: outputs round to 8 mantissa bits (2^-9 = 2e-3 relative).
template <typename T>
double tolerance() {
  return std::is_same_v<T, bf16_t> ? 2e-2 : 1e-5;
}
template <typename T>
const char* dtype_name() {
  return std::is_same_v<T, bf16_t> ? "bf16" : "fp32";
}

double max_rel_error(const std::vector<float>& got, const std::vector<double>& want) {
  REQUIRE(got.size() == want.size());
  double diff = 0, scale = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return std::numeric_limits<double>::infinity();
    diff = std::max(diff, std::abs(got[i] - want[i]));
    scale = std::max(scale, std::abs(want[i]));
  }
  return scale == 0 ? diff : diff / scale;
}

template <typename T>
void expect_close(const char* op, const std::string& shape, const std::vector<float>& got,
                  const std::vector<double>& want, double tol = tolerance<T>()) {
  const double err = max_rel_error(got, want);
  std::printf("%-28s %-5s %-28s max rel error %.3g (tolerance %.0e)\n", op, dtype_name<T>(), shape.c_str(), err,
              tol);
  INFO(op, " ", dtype_name<T>(), " ", shape);
  CHECK(err <= tol);
}

// Device copy of host values converted to T; download() converts back to float.
template <typename T>
class Device {
 public:
  template <typename U>
  explicit Device(const std::vector<U>& host) : n_(host.size()) {
    DILATRON_CUDA_CHECK(cudaMalloc(&ptr_, std::max<size_t>(n_, 1) * sizeof(T)));
    std::vector<T> converted(n_);
    for (size_t i = 0; i < n_; ++i) converted[i] = from_f<T>(static_cast<float>(host[i]));
    DILATRON_CUDA_CHECK(cudaMemcpy(ptr_, converted.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  ~Device() { cudaFree(ptr_); }
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;
  T* get() const { return ptr_; }
  std::vector<float> download() const {
    DILATRON_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<T> raw(n_);
    DILATRON_CUDA_CHECK(cudaMemcpy(raw.data(), ptr_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    std::vector<float> out(n_);
    for (size_t i = 0; i < n_; ++i) out[i] = to_f(raw[i]);
    return out;
  }

 private:
  T* ptr_ = nullptr;
  size_t n_;
};

// Normal(offset, scale) values, already rounded to what T can hold.
template <typename T>
std::vector<float> random_values(uint64_t seed, uint64_t stream, size_t n, double scale = 1.0, double offset = 0.0) {
  CounterRng rng(seed, stream);
  std::vector<float> x(n);
  for (float& e : x) e = to_f(from_f<T>(static_cast<float>(offset + scale * rng.normal())));
  return x;
}

std::vector<double> to_double(const std::vector<float>& x) { return {x.begin(), x.end()}; }
std::vector<float> nans(size_t n) { return std::vector<float>(n, kNaN); }

std::string rows(int64_t N, int C) { return "N=" + std::to_string(N) + " C=" + std::to_string(C); }

const int64_t kRows[] = {1, 7, 1000, 4097};
// The norms' parameter gradients split the rows into up to 128 ranges of at least 64 rows
// (model/column_sums.cuh): 33000 rows use every split, 4097 a ragged last one. C = 1000 is a
// multiple of 8 (16-byte loads) but not of a block's 256 (bf16) or 128 (fp32) columns; C = 771
// takes the scalar path.
const int64_t kNormRows[] = {1, 7, 1000, 4097, 33000};
const int kNormCols[] = {32, 768, 771, 1000};

TEST_CASE_TEMPLATE("layernorm forward and backward match the CPU", T, float, bf16_t) {
  for (int64_t N : kNormRows)
    for (int C : kNormCols) {
      const size_t nc = static_cast<size_t>(N) * C;
      const uint64_t seed = static_cast<uint64_t>(N * 1000 + C);
      // An offset mean, as in a residual stream, exercises the two-pass variance.
      const auto x = random_values<T>(seed, 1, nc, 1.0, 0.5), w = random_values<T>(seed, 2, C, 0.5, 1.0),
                 b = random_values<T>(seed, 3, C, 0.1), dy = random_values<T>(seed, 4, nc),
                 dx0 = random_values<T>(seed, 5, nc), dw0 = random_values<float>(seed, 6, C),
                 db0 = random_values<float>(seed, 7, C);
      std::vector<double> out(nc), mean(N), rstd(N);
      std::vector<double> rx = to_double(x), rw = to_double(w), rb = to_double(b), rdy = to_double(dy);
      layernorm_forward(out.data(), mean.data(), rstd.data(), rx.data(), rw.data(), rb.data(), N, C);
      Device<T> dx_in(x), dw(w), dbias(b), dout(nans(nc)), ddy(dy), ddx(dx0);
      Device<float> dmean(nans(N)), drstd(nans(N)), ddw(dw0), ddb(db0);
      layernorm_forward(dout.get(), dmean.get(), drstd.get(), dx_in.get(), dw.get(), dbias.get(), N, C, nullptr);
      expect_close<T>("layernorm_forward out", rows(N, C), dout.download(), out);
      expect_close<T>("layernorm_forward mean", rows(N, C), dmean.download(), mean, 1e-5);
      expect_close<T>("layernorm_forward rstd", rows(N, C), drstd.download(), rstd, 1e-5);

      // Both backwards see the same fp32 statistics.
      std::vector<float> mean_f(mean.begin(), mean.end()), rstd_f(rstd.begin(), rstd.end());
      Device<float> smean(mean_f), srstd(rstd_f);
      std::vector<double> rdx = to_double(dx0), rdw = to_double(dw0), rdb = to_double(db0);
      const std::vector<double> rmean = to_double(mean_f), rrstd = to_double(rstd_f);
      layernorm_backward(rdx.data(), rdw.data(), rdb.data(), rdy.data(), rx.data(), rw.data(), rmean.data(),
                         rrstd.data(), N, C);
      layernorm_backward(ddx.get(), ddw.get(), ddb.get(), ddy.get(), dx_in.get(), dw.get(), smean.get(),
                         srstd.get(), N, C, nullptr);
      expect_close<T>("layernorm_backward dinp", rows(N, C), ddx.download(), rdx);
      expect_close<T>("layernorm_backward dweight", rows(N, C), ddw.download(), rdw);
      expect_close<T>("layernorm_backward dbias", rows(N, C), ddb.download(), rdb);
    }
}

TEST_CASE_TEMPLATE("rmsnorm forward and backward match the CPU", T, float, bf16_t) {
  for (int64_t N : kNormRows)
    for (int C : kNormCols) {
      const size_t nc = static_cast<size_t>(N) * C;
      const uint64_t seed = static_cast<uint64_t>(N * 1000 + C + 7);
      const auto x = random_values<T>(seed, 1, nc, 1.0, 0.5), w = random_values<T>(seed, 2, C, 0.5, 1.0),
                 dy = random_values<T>(seed, 4, nc), dx0 = random_values<T>(seed, 5, nc),
                 dw0 = random_values<float>(seed, 6, C);
      std::vector<double> out(nc), rstd(N);
      std::vector<double> rx = to_double(x), rw = to_double(w), rdy = to_double(dy);
      rmsnorm_forward(out.data(), rstd.data(), rx.data(), rw.data(), N, C);
      Device<T> dx_in(x), dw(w), dout(nans(nc)), ddy(dy), ddx(dx0);
      Device<float> drstd(nans(N)), ddw(dw0);
      rmsnorm_forward(dout.get(), drstd.get(), dx_in.get(), dw.get(), N, C, nullptr);
      expect_close<T>("rmsnorm_forward out", rows(N, C), dout.download(), out);
      expect_close<T>("rmsnorm_forward rstd", rows(N, C), drstd.download(), rstd, 1e-5);

      std::vector<float> rstd_f(rstd.begin(), rstd.end());
      Device<float> srstd(rstd_f);
      std::vector<double> rdx = to_double(dx0), rdw = to_double(dw0);
      const std::vector<double> rrstd = to_double(rstd_f);
      rmsnorm_backward(rdx.data(), rdw.data(), rdy.data(), rx.data(), rw.data(), rrstd.data(), N, C);
      rmsnorm_backward(ddx.get(), ddw.get(), ddy.get(), dx_in.get(), dw.get(), srstd.get(), N, C, nullptr);
      expect_close<T>("rmsnorm_backward dinp", rows(N, C), ddx.download(), rdx);
      expect_close<T>("rmsnorm_backward dweight", rows(N, C), ddw.download(), rdw);
    }
}

TEST_CASE_TEMPLATE("gelu and residual match the CPU", T, float, bf16_t) {
  for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{1000}, int64_t{4097} * 771}) {
    const size_t sn = static_cast<size_t>(n);
    const uint64_t seed = static_cast<uint64_t>(n);
    const auto x = random_values<T>(seed, 1, sn, 3.0), dy = random_values<T>(seed, 2, sn),
               dx0 = random_values<T>(seed, 3, sn), branch = random_values<T>(seed, 4, sn);
    const std::string shape = "n=" + std::to_string(n);
    std::vector<double> rx = to_double(x), rdy = to_double(dy), out(sn), rdx = to_double(dx0);
    gelu_forward(out.data(), rx.data(), n);
    gelu_backward(rdx.data(), rx.data(), rdy.data(), n);
    Device<T> dxin(x), dout(nans(sn)), ddy(dy), ddx(dx0), dbranch(branch);
    gelu_forward(dout.get(), dxin.get(), n, nullptr);
    gelu_backward(ddx.get(), dxin.get(), ddy.get(), n, nullptr);
    expect_close<T>("gelu_forward", shape, dout.download(), out);
    expect_close<T>("gelu_backward", shape, ddx.download(), rdx);

    const std::vector<double> rbranch = to_double(branch);
    residual_forward(rx.data(), rbranch.data(), n);
    residual_forward(dxin.get(), dbranch.get(), n, nullptr);
    expect_close<T>("residual_forward", shape, dxin.download(), rx);
  }
}

TEST_CASE_TEMPLATE("token and position embeddings match the CPU", T, float, bf16_t) {
  // Few tokens, so that they repeat; with `skewed`, token 7 takes about half the positions, so
  // that from N = 1000 on its bucket is cut into segments (the two-stage sum of embedding.cu).
  const int V = 100;
  for (int64_t N : kRows)
    for (int C : {32, 771})
      for (bool skewed : {false, true}) {
        const size_t nc = static_cast<size_t>(N) * C;
        const uint64_t seed = static_cast<uint64_t>(N * 1000 + C + 13 + (skewed ? 500 : 0));
        CounterRng rng(seed, 0);
        std::vector<int32_t> tokens(static_cast<size_t>(N));
        for (int32_t& t : tokens) t = skewed && rng.below(2) == 0 ? 7 : static_cast<int32_t>(rng.below(V));
        const auto wte = random_values<T>(seed, 1, static_cast<size_t>(V) * C), dy = random_values<T>(seed, 2, nc),
                   dwte0 = random_values<float>(seed, 3, static_cast<size_t>(V) * C);
        std::vector<double> out(nc), rwte = to_double(wte), rdy = to_double(dy), rdwte = to_double(dwte0);
        token_embedding_forward(out.data(), tokens.data(), rwte.data(), N, C, V);
        token_embedding_backward(rdwte.data(), rdy.data(), tokens.data(), N, C);
        Device<int32_t> dtokens(tokens);
        Device<T> dwte(wte), dout(nans(nc)), ddy(dy);
        Device<float> ddwte(dwte0);
        token_embedding_forward(dout.get(), dtokens.get(), dwte.get(), N, C, V, nullptr);
        std::vector<int32_t> layout;
        const TokenBuckets buckets = token_buckets(tokens.data(), N, V, layout);
        if (skewed && N >= 1000) CHECK(buckets.segments > 1);
        Device<int32_t> dbuckets(layout);
        token_embedding_backward(ddwte.get(), ddy.get(), dbuckets.get(), buckets, N, C, nullptr);
        expect_close<T>("token_embedding_forward", rows(N, C), dout.download(), out);
        expect_close<T>("token_embedding_backward", rows(N, C), ddwte.download(), rdwte);
      }
  // Position embedding over (B, Tc, C) with an offset window pos0 .. pos0 + Tc - 1 of T_max rows.
  for (int B : {1, 3})
    for (int Tc : {1, 7, 1000})
      for (int C : {32, 771}) {
        const int pos0 = 5, t_max = pos0 + Tc + 2;
        const size_t n = static_cast<size_t>(B) * Tc * C, nwpe = static_cast<size_t>(t_max) * C;
        const uint64_t seed = static_cast<uint64_t>(B * 100000 + Tc * 1000 + C);
        const auto x = random_values<T>(seed, 1, n), wpe = random_values<T>(seed, 2, nwpe),
                   dwpe0 = random_values<float>(seed, 3, nwpe);
        std::vector<double> rx = to_double(x), rwpe = to_double(wpe), rdwpe = to_double(dwpe0);
        const std::vector<double> rdx = to_double(x);
        position_embedding_forward(rx.data(), rwpe.data(), B, Tc, C, pos0);
        position_embedding_backward(rdwpe.data(), rdx.data(), B, Tc, C, pos0);
        Device<T> dx(x), dgrad(x), dwpe(wpe);
        Device<float> ddwpe(dwpe0);
        position_embedding_forward(dx.get(), dwpe.get(), B, Tc, C, pos0, nullptr);
        position_embedding_backward(ddwpe.get(), dgrad.get(), B, Tc, C, pos0, nullptr);
        const std::string shape = "B=" + std::to_string(B) + " Tc=" + std::to_string(Tc) + " C=" + std::to_string(C);
        expect_close<T>("position_embedding_forward", shape, dx.download(), rx);
        expect_close<T>("position_embedding_backward", shape, ddwpe.download(), rdwpe);
      }
}

TEST_CASE_TEMPLATE("rotary forward and backward match the CPU", T, float, bf16_t) {
  const double theta = 10000.0;
  for (int Tc : {1, 7, 1000})
    for (int H : {1, 12})
      for (int D : {2, 64, 66})
        for (int pos0 : {0, 100000}) {
          const int B = 2;
          const size_t n = static_cast<size_t>(B) * Tc * H * D;
          const uint64_t seed = static_cast<uint64_t>(Tc * 10000 + H * 100 + D + pos0);
          const auto x = random_values<T>(seed, 1, n);
          std::vector<double> fwd = to_double(x), bwd = to_double(x);
          rotary_forward(fwd.data(), B, Tc, H, D, pos0, theta);
          rotary_backward(bwd.data(), B, Tc, H, D, pos0, theta);
          Device<T> dfwd(x), dbwd(x);
          rotary_forward(dfwd.get(), B, Tc, H, D, pos0, theta, nullptr);
          rotary_backward(dbwd.get(), B, Tc, H, D, pos0, theta, nullptr);
          const std::string shape = "B=2 Tc=" + std::to_string(Tc) + " H=" + std::to_string(H) +
                                    " D=" + std::to_string(D) + " pos0=" + std::to_string(pos0);
          expect_close<T>("rotary_forward", shape, dfwd.download(), fwd);
          expect_close<T>("rotary_backward", shape, dbwd.download(), bwd);
        }
}

// The parameter gradients are a reduction over N; it must give the same bits every time (resume
// and rank-count parity rely on reproducible gradients).
TEST_CASE("layernorm backward's parameter gradients are bitwise reproducible") {
  const int64_t N = 33000;
  const int C = 768;
  const size_t nc = static_cast<size_t>(N) * C;
  Device<bf16_t> x(random_values<bf16_t>(3, 1, nc)), dy(random_values<bf16_t>(3, 2, nc)),
      w(random_values<bf16_t>(3, 3, C));
  Device<float> mean(random_values<float>(3, 4, N)), rstd(random_values<float>(3, 5, N, 0.1, 1.0));
  std::vector<float> first_dw, first_db;
  for (int run = 0; run < 3; ++run) {
    Device<bf16_t> dx(std::vector<float>(nc, 0.0f));
    Device<float> dw(std::vector<float>(C, 0.0f)), db(std::vector<float>(C, 0.0f));
    layernorm_backward(dx.get(), dw.get(), db.get(), dy.get(), x.get(), w.get(), mean.get(), rstd.get(), N, C,
                       nullptr);
    if (run == 0) {
      first_dw = dw.download(), first_db = db.download();
      continue;
    }
    const std::vector<float> got_dw = dw.download(), got_db = db.download();
    CHECK(std::memcmp(got_dw.data(), first_dw.data(), C * sizeof(float)) == 0);
    CHECK(std::memcmp(got_db.data(), first_db.data(), C * sizeof(float)) == 0);
  }
}

// dilatron::bf16 (the cross-entropy API) and __nv_bfloat16 share one layout (cross_entropy.cu
// asserts it), so the bf16 Device buffers serve both APIs.
bf16* as_bf16(bf16_t* p) { return reinterpret_cast<bf16*>(p); }

// The 16-byte path needs V % 8 == 0 and 16-byte aligned rows: logits one element into their
// buffer take the scalar path, and so does a backward whose dlogits and logits are aligned
// differently. Both must still match the fp64 CPU reference.
TEST_CASE("cross_entropy on bf16 rows that are not 16-byte aligned matches the CPU") {
  const int64_t N = 9;
  for (int V : {8, 1024}) {
    const size_t count = static_cast<size_t>(N) * V;
    const auto logits = random_values<bf16_t>(static_cast<uint64_t>(V), 1, count + 1, 4.0);
    CounterRng rng(static_cast<uint64_t>(V), 2);
    std::vector<int32_t> targets(static_cast<size_t>(N));
    for (int32_t& t : targets) t = static_cast<int32_t>(rng.below(static_cast<uint64_t>(V)));
    targets[3] = -1;
    const float dloss_weight = 1.0f / static_cast<float>(N);
    const std::vector<double> rlogits(logits.begin() + 1, logits.end());
    std::vector<double> losses(N), lse(N), dlogits(count);
    cross_entropy_forward<double>(losses.data(), lse.data(), rlogits.data(), targets.data(), N, V);
    cross_entropy_backward<double>(dlogits.data(), rlogits.data(), lse.data(), targets.data(), dloss_weight, N, V);

    Device<bf16_t> dlogits_in(logits), ddlogits(nans(count));
    Device<int32_t> dtargets(targets);
    Device<float> dlosses(nans(N)), dlse(nans(N));
    const bf16* shifted = as_bf16(dlogits_in.get()) + 1;
    cross_entropy_forward(dlosses.get(), dlse.get(), shifted, dtargets.get(), N, V, nullptr);
    cross_entropy_backward(as_bf16(ddlogits.get()), shifted, dlse.get(), dtargets.get(), dloss_weight, N, V,
                           nullptr);
    const std::string shape = "N=" + std::to_string(N) + " V=" + std::to_string(V) + " offset 1";
    expect_close<float>("cross_entropy_forward loss", shape, dlosses.download(), losses);
    expect_close<float>("cross_entropy_forward lse", shape, dlse.download(), lse);
    expect_close<bf16_t>("cross_entropy_backward", shape, ddlogits.download(), dlogits);

    Device<bf16_t> fused_logits(logits);
    Device<float> flosses(nans(N)), flse(nans(N));
    cross_entropy_forward_backward(flosses.get(), flse.get(), as_bf16(fused_logits.get()) + 1, dtargets.get(),
                                   dloss_weight, N, V, nullptr);
    std::vector<double> want_fused(1, logits[0]);  // the element before the rows stays as it was
    want_fused.insert(want_fused.end(), dlogits.begin(), dlogits.end());
    expect_close<float>("cross_entropy_forward_backward loss", shape, flosses.download(), losses);
    expect_close<float>("cross_entropy_forward_backward lse", shape, flse.download(), lse);
    expect_close<bf16_t>("cross_entropy_forward_backward", shape, fused_logits.download(), want_fused);
  }
}

// Bandwidth of the memory-bound kernels of a GPT-2 124M step at 16384 tokens per micro-batch
// (issue #5): median of event-timed calls, in GB/s of the bytes each call has to move.
double gb_per_s(double bytes, double ms) { return bytes / (ms * 1e-3) / 1e9; }

TEST_CASE("timing: layernorm forward and backward, bf16, N=16384 C=768") {
  const int64_t N = 16384;
  const int C = 768;
  const size_t nc = static_cast<size_t>(N) * C;
  Device<bf16_t> x(random_values<bf16_t>(1, 1, nc)), dy(random_values<bf16_t>(1, 2, nc)),
      dx(random_values<bf16_t>(1, 3, nc)), w(random_values<bf16_t>(1, 4, C)), b(random_values<bf16_t>(1, 9, C)),
      y(nans(nc));
  Device<float> mean(nans(N)), rstd(nans(N)), dw(random_values<float>(1, 7, C)), db(random_values<float>(1, 8, C));
  const double forward_ms = median_ms(
      [&] { layernorm_forward(y.get(), mean.get(), rstd.get(), x.get(), w.get(), b.get(), N, C, nullptr); }, 5, 50);
  // inp read (its second and third passes hit the cache), out written, mean and rstd written.
  const double forward_bytes =
      static_cast<double>(nc) * 2 * sizeof(bf16_t) + static_cast<double>(N) * 2 * sizeof(float);
  std::printf("TIMING layernorm_forward bf16 N=%lld C=%d: median %.4f ms, %.0f GB/s\n", static_cast<long long>(N), C,
              forward_ms, gb_per_s(forward_bytes, forward_ms));
  const double ms = median_ms(
      [&] {
        layernorm_backward(dx.get(), dw.get(), db.get(), dy.get(), x.get(), w.get(), mean.get(), rstd.get(), N, C,
                           nullptr);
      },
      5, 50);
  // Input gradient: dout, inp, dinp read, dinp written; parameter gradients: dout, inp read again.
  const double bytes = static_cast<double>(nc) * 6 * sizeof(bf16_t) + static_cast<double>(N) * 2 * 2 * sizeof(float);
  std::printf("TIMING layernorm_backward bf16 N=%lld C=%d (dinp, dweight, dbias): median %.4f ms, %.0f GB/s\n",
              static_cast<long long>(N), C, ms, gb_per_s(bytes, ms));
  // The parameter-gradient kernels alone (both stages), with scratch allocated outside the timing.
  Device<float> scratch(std::vector<float>(static_cast<size_t>(detail::norm_param_grad_scratch_floats(N, C))));
  const double grad_ms = median_ms(
      [&] {
        DILATRON_CUDA_CHECK(detail::launch_norm_param_grad(dw.get(), db.get(), dy.get(), x.get(), mean.get(),
                                                           rstd.get(), N, C, scratch.get(), nullptr));
      },
      5, 50);
  const double grad_bytes = static_cast<double>(nc) * 2 * sizeof(bf16_t) + static_cast<double>(N) * 2 * sizeof(float);
  std::printf("TIMING layernorm parameter gradients bf16 N=%lld C=%d (dweight, dbias): median %.4f ms, %.0f GB/s\n",
              static_cast<long long>(N), C, grad_ms, gb_per_s(grad_bytes, grad_ms));
  const std::vector<float> got = dw.download();
  CHECK(std::all_of(got.begin(), got.end(), [](float v) { return std::isfinite(v); }));
}

TEST_CASE("timing: cross_entropy forward, backward and both fused, bf16, N=4096 V=50304") {
  const int64_t N = 4096;
  const int V = 50304;
  const size_t count = static_cast<size_t>(N) * V;
  Device<bf16_t> logits(random_values<bf16_t>(2, 1, count, 4.0));
  CounterRng rng(2, 2);
  std::vector<int32_t> targets(static_cast<size_t>(N));
  for (int32_t& t : targets) t = static_cast<int32_t>(rng.below(V));
  Device<int32_t> dtargets(targets);
  Device<float> losses(nans(N)), lse(nans(N));
  const double forward_ms = median_ms(
      [&] { cross_entropy_forward(losses.get(), lse.get(), as_bf16(logits.get()), dtargets.get(), N, V, nullptr); },
      5, 20);
  // In place, as the model runs it: after the first call the logits are gradients, which only
  // changes the values the exponentials see.
  const double backward_ms = median_ms(
      [&] {
        cross_entropy_backward(as_bf16(logits.get()), as_bf16(logits.get()), lse.get(), dtargets.get(),
                               1.0f / static_cast<float>(N), N, V, nullptr);
      },
      5, 20);
  // The model's training path: both in one pass, in place.
  const double fused_ms = median_ms(
      [&] {
        cross_entropy_forward_backward(losses.get(), lse.get(), as_bf16(logits.get()), dtargets.get(),
                                       1.0f / static_cast<float>(N), N, V, nullptr);
      },
      5, 20);
  const double logit_bytes = static_cast<double>(count) * sizeof(bf16_t);
  std::printf("TIMING cross_entropy_forward bf16 N=%lld V=%d: median %.4f ms, %.0f GB/s\n",
              static_cast<long long>(N), V, forward_ms, gb_per_s(logit_bytes, forward_ms));
  std::printf("TIMING cross_entropy_backward bf16 N=%lld V=%d (in place): median %.4f ms, %.0f GB/s\n",
              static_cast<long long>(N), V, backward_ms, gb_per_s(2 * logit_bytes, backward_ms));
  // Counted as HBM bytes if the second read of each row hits L2: one read, one write.
  std::printf("TIMING cross_entropy_forward_backward bf16 N=%lld V=%d (in place): median %.4f ms, %.0f GB/s; "
              "separate kernels %.4f ms\n",
              static_cast<long long>(N), V, fused_ms, gb_per_s(2 * logit_bytes, fused_ms), forward_ms + backward_ms);
  const std::vector<float> got = losses.download();
  CHECK(std::all_of(got.begin(), got.end(), [](float v) { return std::isfinite(v); }));
}

}  // namespace
}  // namespace dilatron

#else
TEST_CASE("layers_gpu_test needs a build with --config=cuda") { FAIL("built without CUDA"); }
#endif
