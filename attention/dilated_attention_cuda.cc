// The plan of dilated attention on the GPU (always built) and, with CUDA, the
// DeviceSequenceAttention that runs it: one batched block launch per branch, outputs cleared,
// written, merged and converted as the plan says (attention/dilated_attention_cuda.h).
#include "attention/dilated_attention_cuda.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "core/check.h"

#ifdef DILATRON_CUDA
#include <type_traits>

#include "attention/device_sequence_attention.h"
#include "core/cuda_check.h"
#include "core/device_allocator.h"
#endif

namespace dilatron {
namespace {

DilatedLaunch branch_launch(const DilatedSpec& spec, int branch, int max_B, int64_t n, int H, int D) {
  const auto [w, r] = spec.branches[branch];
  const int64_t row = static_cast<int64_t>(H) * D;
  DilatedLaunch launch{branch, {}, 0, static_cast<int>(w / r), false};
  for (int b = 0; b < max_B; ++b) {
    for (int h = 0; h < H; ++h) {
      if (!branch_heads(spec, branch, H).contains(h)) continue;
      const int64_t offset = head_offset(spec, branch, h);
      for (int64_t start = 0; start < n; start += w) {
        const int64_t first = start + offset;
        const int64_t at = (static_cast<int64_t>(b) * n + first) * row + static_cast<int64_t>(h) * D;
        launch.tasks.push_back(DeviceBlockTask{at, r * row, at, r * row, (static_cast<int64_t>(b) * H + h) * n + first,
                                               r, launch.rows, launch.rows});
      }
    }
  }
  launch.tasks_per_batch = static_cast<int64_t>(launch.tasks.size()) / max_B;
  return launch;
}

}  // namespace

DilatedPlan plan_dilated_attention(const DilatedSpec& spec, int max_B, int64_t n, int H, int D) {
  DILATRON_CHECK(max_B > 0 && n > 0 && H > 0, "dilated attention dims max_B={} n={} H={}", max_B, n, H);
  DILATRON_CHECK_INPUT(D >= 1 && D <= kMaxBlockAttentionHeadDim,
                       "model: the GPU attention takes head dimensions d_model / n_heads up to {}, got {}; use more "
                       "heads",
                       kMaxBlockAttentionHeadDim, D);
  validate_dilated_spec(spec, n, H);
  DILATRON_CHECK_INPUT(n <= std::numeric_limits<int32_t>::max(),
                       "model.seq_len: {} is more than the GPU attention's int32 row counts hold", n);
  const int G = static_cast<int>(spec.branches.size());
  const bool longnet = spec.mode == DilatedMode::longnet;
  std::vector<int> order(G);
  for (int i = 0; i < G; ++i) order[i] = i;
  if (longnet) {
    // A rate-1 branch covers every (head, position), so it can write and nothing needs clearing.
    const auto dense = std::find_if(order.begin(), order.end(), [&](int i) { return spec.branches[i].dilation == 1; });
    if (dense != order.end()) std::rotate(order.begin(), dense, dense + 1);
  }
  DilatedPlan plan;
  plan.clear_first = longnet ? spec.branches[order[0]].dilation != 1
                             : std::any_of(spec.branches.begin(), spec.branches.end(),
                                           [](const DilatedBranch& b) { return b.dilation != 1; });
  plan.out_scale = longnet ? 1.0 : 1.0 / G;
  plan.multi_launch_accumulation = longnet && G > 1;
  for (int k = 0; k < G; ++k) {
    plan.launches.push_back(branch_launch(spec, order[k], max_B, n, H, D));
    plan.launches.back().accumulate = longnet && (k > 0 || plan.clear_first);
  }
  return plan;
}

#ifdef DILATRON_CUDA
namespace {

template <typename T>
class DilatedAttentionCuda final : public DeviceSequenceAttention<T> {
 public:
  DilatedAttentionCuda(const DilatedSpec& spec, int max_B, int64_t n, int H, int D, int64_t ds_scratch_bytes)
      : plan_(plan_dilated_attention(spec, max_B, n, H, D)), causal_(spec.causal), max_B_(max_B), n_(n), H_(H),
        D_(D) {
    const int64_t elements = static_cast<int64_t>(max_B) * n * H * D;
    for (const DilatedLaunch& launch : plan_.launches) {
      DeviceArray<DeviceBlockTask> tasks(static_cast<int64_t>(launch.tasks.size()), nullptr);
      DILATRON_CUDA_CHECK(cudaMemcpy(tasks.data(), launch.tasks.data(), launch.tasks.size() * sizeof(DeviceBlockTask),
                                     cudaMemcpyHostToDevice));
      tasks_.push_back(std::move(tasks));
    }
    if constexpr (std::is_same_v<T, bf16>) {
      // The largest launch's dS, up to the cap; a launch that needs more runs in chunks.
      std::vector<BlockAttentionBatch> launches;
      for (size_t i = 0; i < plan_.launches.size(); ++i) launches.push_back(batch(i, max_B));
      const int64_t elements = block_attention_ds_scratch_elements(launches, ds_scratch_bytes);
      if (elements > 0) ds_scratch_ = DeviceArray<bf16>(elements, nullptr);
    }
    delta_ = DeviceArray<float>(static_cast<int64_t>(max_B) * H * n, nullptr);
    // bf16 with merges across branches: out (forward) and dq, dk, dv (backward) go through fp32;
    // the forward's accumulator is the backward's dq accumulator (never live at the same time).
    if (!std::is_same_v<T, float> && plan_.multi_launch_accumulation) {
      for (DeviceArray<float>* acc : {&dq_acc_, &dk_acc_, &dv_acc_}) *acc = DeviceArray<float>(elements, nullptr);
    }
  }

  void forward(T* out, float* lse, const T* q, const T* k, const T* v, int B, int Tc, int H, int D,
               cudaStream_t stream) override {
    check_dims(B, Tc, H, D);
    if constexpr (std::is_same_v<T, float>) {
      run_forward(out, lse, q, k, v, B, stream);
    } else if (dq_acc_.data() != nullptr) {
      run_forward(dq_acc_.data(), lse, q, k, v, B, stream);
      DILATRON_CUDA_CHECK(launch_convert_from_float(out, dq_acc_.data(), elements(B), stream));
    } else {
      run_forward(out, lse, q, k, v, B, stream);
    }
  }

  void backward(T* dq, T* dk, T* dv, const T* dout, const T* out, const float* lse, const T* q, const T* k,
                const T* v, int B, int Tc, int H, int D, cudaStream_t stream) override {
    check_dims(B, Tc, H, D);
    DILATRON_CUDA_CHECK(launch_attention_row_delta(delta_.data(), dout, out, B, n_, H_, D_, stream));
    if constexpr (std::is_same_v<T, float>) {
      run_backward(dq, dk, dv, dout, lse, q, k, v, B, stream);
    } else if (dq_acc_.data() != nullptr) {
      run_backward(dq_acc_.data(), dk_acc_.data(), dv_acc_.data(), dout, lse, q, k, v, B, stream);
      DILATRON_CUDA_CHECK(launch_convert_from_float(dq, dq_acc_.data(), elements(B), stream));
      DILATRON_CUDA_CHECK(launch_convert_from_float(dk, dk_acc_.data(), elements(B), stream));
      DILATRON_CUDA_CHECK(launch_convert_from_float(dv, dv_acc_.data(), elements(B), stream));
    } else {
      run_backward(dq, dk, dv, dout, lse, q, k, v, B, stream);
    }
  }

 private:
  void check_dims(int B, int Tc, int H, int D) const {
    DILATRON_CHECK(B >= 1 && B <= max_B_ && Tc == n_ && H == H_ && D == D_,
                   "dilated attention (CUDA) was built for B <= {}, n = {}, H = {}, D = {}; called with B = {}, Tc = "
                   "{}, H = {}, D = {}",
                   max_B_, n_, H_, D_, B, Tc, H, D);
  }
  int64_t elements(int B) const { return static_cast<int64_t>(B) * n_ * H_ * D_; }
  float out_scale() const { return static_cast<float>(plan_.out_scale); }

  BlockAttentionBatch batch(size_t launch, int B) const {
    const DilatedLaunch& l = plan_.launches[launch];
    return BlockAttentionBatch{tasks_[launch].data(), B * l.tasks_per_batch, l.rows, l.rows, D_,
                               static_cast<float>(1.0 / std::sqrt(static_cast<double>(D_))),
                               causal_ ? BlockMask::causal : BlockMask::none};
  }

  // O: T, or float for an fp32 accumulator.
  template <typename O>
  void run_forward(O* out, float* lse, const T* q, const T* k, const T* v, int B, cudaStream_t stream) {
    if (plan_.clear_first) {
      DILATRON_CUDA_CHECK(cudaMemsetAsync(out, 0, elements(B) * sizeof(O), stream));  // 0 bits: +0 in fp32 and bf16
      DILATRON_CUDA_CHECK(launch_fill(lse, -INFINITY, static_cast<int64_t>(B) * H_ * n_, stream));
    }
    for (size_t i = 0; i < plan_.launches.size(); ++i)
      DILATRON_CUDA_CHECK(launch_block_attention_forward(out, lse, q, k, v, batch(i, B), out_scale(),
                                                         plan_.launches[i].accumulate, stream));
  }

  template <typename O>
  void run_backward(O* dq, O* dk, O* dv, const T* dout, const float* lse, const T* q, const T* k, const T* v, int B,
                    cudaStream_t stream) {
    if (plan_.clear_first) {
      for (O* grad : {dq, dk, dv}) DILATRON_CUDA_CHECK(cudaMemsetAsync(grad, 0, elements(B) * sizeof(O), stream));
    }
    for (size_t i = 0; i < plan_.launches.size(); ++i) {
      const bool accumulate = plan_.launches[i].accumulate;
      DILATRON_CUDA_CHECK(launch_block_attention_backward(dq, dk, dv, dout, delta_.data(), lse, q, k, v, batch(i, B),
                                                          out_scale(), accumulate, ds_scratch_.data(),
                                                          ds_scratch_.size(), stream));
    }
  }

  DilatedPlan plan_;
  bool causal_;
  int max_B_;
  int64_t n_;
  int H_, D_;
  std::vector<DeviceArray<DeviceBlockTask>> tasks_;  // per launch, device
  DeviceArray<float> delta_;                         // (max_B, H, n)
  DeviceArray<float> dq_acc_, dk_acc_, dv_acc_;      // (max_B, n, H, D), bf16 multi-branch only
  DeviceArray<bf16> ds_scratch_;                     // bf16 only: the backward's dS, see the constructor
};

}  // namespace

template <typename T>
std::unique_ptr<DeviceSequenceAttention<T>> make_dilated_attention_cuda(const DilatedSpec& spec, int max_B,
                                                                         int64_t n, int H, int D,
                                                                         int64_t ds_scratch_bytes) {
  return std::make_unique<DilatedAttentionCuda<T>>(spec, max_B, n, H, D, ds_scratch_bytes);
}

template std::unique_ptr<DeviceSequenceAttention<float>> make_dilated_attention_cuda<float>(const DilatedSpec&, int,
                                                                                             int64_t, int, int,
                                                                                             int64_t);
template std::unique_ptr<DeviceSequenceAttention<bf16>> make_dilated_attention_cuda<bf16>(const DilatedSpec&, int,
                                                                                           int64_t, int, int,
                                                                                           int64_t);
#endif

}  // namespace dilatron
