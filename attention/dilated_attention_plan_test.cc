// The GPU dilated attention's plan (attention/dilated_attention_cuda.h), checked on the CPU: the
// plan is run with the CPU block primitive the way the GPU runs it with the CUDA kernels (clear,
// then per launch write or merge / add, 1/G on the output and on the branch's dout), in fp64,
// and must reproduce dilated_attention_forward/backward. Outputs start as NaN, so a row the plan
// forgets shows up. Also: task order (batch outermost), int64 offsets at n = 2^20, the errors.
#include "attention/dilated_attention_cuda.h"

#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "attention/block_attention.h"
#include "attention/dilated_attention.h"
#include "attention/grad_check.h"
#include "core/check.h"

using namespace dilatron;
using namespace dilatron::testing;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

struct Shape {
  int B;
  int64_t n;
  int H, D;
};

double score_scale(int D) { return 1.0 / std::sqrt(static_cast<double>(D)); }

// The forward as the GPU runs it: plan.clear_first, then every launch's first B tasks.
void run_plan_forward(const DilatedPlan& plan, const DilatedSpec& spec, const Shape& s, std::vector<double>& out,
                      std::vector<double>& lse, const std::vector<double>& q, const std::vector<double>& k,
                      const std::vector<double>& v) {
  const BlockMask mask = spec.causal ? BlockMask::causal : BlockMask::none;
  if (plan.clear_first) {
    std::fill(out.begin(), out.end(), 0.0);
    std::fill(lse.begin(), lse.end(), -kInf);
  }
  for (const DilatedLaunch& launch : plan.launches) {
    std::vector<double> partial(static_cast<size_t>(launch.rows) * s.D), partial_lse(launch.rows);
    for (int64_t t = 0; t < s.B * launch.tasks_per_batch; ++t) {
      const DeviceBlockTask& task = launch.tasks[t];
      const RowBlock<double> o{out.data() + task.q_offset, task.q_stride};
      const RowBlock<const double> Q{q.data() + task.q_offset, task.q_stride};
      const RowBlock<const double> K{k.data() + task.k_offset, task.k_stride};
      const RowBlock<const double> V{v.data() + task.k_offset, task.k_stride};
      double* task_lse = lse.data() + task.lse_offset;
      if (launch.accumulate) {
        block_attention_forward<double>({partial.data(), s.D}, partial_lse.data(), 1, Q, K, V, task.nq, task.nk,
                                        s.D, score_scale(s.D), mask);
        merge_attention_partial<double>(o, task_lse, task.lse_stride, {partial.data(), s.D}, partial_lse.data(), 1,
                                        task.nq, s.D);
      } else {
        block_attention_forward<double>(o, task_lse, task.lse_stride, Q, K, V, task.nq, task.nk, s.D,
                                        score_scale(s.D), mask);
        for (int64_t i = 0; i < task.nq; ++i)
          for (int d = 0; d < s.D; ++d) o.base[i * o.stride + d] *= plan.out_scale;
      }
    }
  }
}

// The backward as the GPU runs it: delta of every row, clear, then per task write (zero its rows
// first) or add, with dout * out_scale reaching the branch.
void run_plan_backward(const DilatedPlan& plan, const DilatedSpec& spec, const Shape& s, std::vector<double>& dq,
                       std::vector<double>& dk, std::vector<double>& dv, const std::vector<double>& dout,
                       const std::vector<double>& out, const std::vector<double>& lse, const std::vector<double>& q,
                       const std::vector<double>& k, const std::vector<double>& v) {
  const BlockMask mask = spec.causal ? BlockMask::causal : BlockMask::none;
  const int64_t row = static_cast<int64_t>(s.H) * s.D;
  std::vector<double> delta(lse.size());  // (B, H, n)
  for (int b = 0; b < s.B; ++b)
    for (int64_t p = 0; p < s.n; ++p)
      for (int h = 0; h < s.H; ++h) {
        const int64_t at = (b * s.n + p) * row + static_cast<int64_t>(h) * s.D;
        attention_row_delta<double>(&delta[(static_cast<int64_t>(b) * s.H + h) * s.n + p], {dout.data() + at, s.D},
                                    {out.data() + at, s.D}, 1, s.D);
      }
  if (plan.clear_first) {
    for (auto* grad : {&dq, &dk, &dv}) std::fill(grad->begin(), grad->end(), 0.0);
  }
  for (const DilatedLaunch& launch : plan.launches) {
    std::vector<double> task_delta(launch.rows), branch_dout(static_cast<size_t>(launch.rows) * s.D);
    for (int64_t t = 0; t < s.B * launch.tasks_per_batch; ++t) {
      const DeviceBlockTask& task = launch.tasks[t];
      for (int64_t i = 0; i < task.nq; ++i) {
        task_delta[i] = delta[task.lse_offset + i * task.lse_stride];
        for (int d = 0; d < s.D; ++d)
          branch_dout[i * s.D + d] = dout[task.q_offset + i * task.q_stride + d] * plan.out_scale;
      }
      if (!launch.accumulate) {
        for (int64_t i = 0; i < task.nq; ++i)
          for (int d = 0; d < s.D; ++d) dq[task.q_offset + i * task.q_stride + d] = 0;
        for (int64_t j = 0; j < task.nk; ++j)
          for (int d = 0; d < s.D; ++d) {
          dk[task.k_offset + j * task.k_stride + d] = 0;
          dv[task.k_offset + j * task.k_stride + d] = 0;
        }
      }
      block_attention_backward<double>(
          {dq.data() + task.q_offset, task.q_stride}, {dk.data() + task.k_offset, task.k_stride},
          {dv.data() + task.k_offset, task.k_stride}, {branch_dout.data(), s.D}, task_delta.data(),
          lse.data() + task.lse_offset, task.lse_stride, {q.data() + task.q_offset, task.q_stride},
          {k.data() + task.k_offset, task.k_stride}, {v.data() + task.k_offset, task.k_stride}, task.nq, task.nk,
          s.D, score_scale(s.D), mask);
    }
  }
}

// |got - want| <= 1e-12 * (1 + max |want|) (fp64, only the merge order differs); -inf exact.
void require_equal(const char* what, const std::vector<double>& got, const std::vector<double>& want) {
  INFO(what);
  double scale = 0;
  for (double w : want)
    if (std::isfinite(w)) scale = std::max(scale, std::abs(w));
  for (size_t i = 0; i < got.size(); ++i) {
    CAPTURE(i);
    CAPTURE(got[i]);
    CAPTURE(want[i]);
    if (std::isinf(want[i])) REQUIRE(got[i] == want[i]);
    else REQUIRE(std::abs(got[i] - want[i]) <= 1e-12 * (1 + scale));
  }
}

// Runs the plan for B of max_B batch elements and compares with the CPU dilated attention.
void check_plan(const DilatedSpec& spec, const Shape& s, int max_B) {
  const DilatedPlan plan = plan_dilated_attention(spec, max_B, s.n, s.H, s.D);
  const int64_t size = s.B * s.n * s.H * s.D, lse_size = s.B * s.H * s.n;
  for (const DilatedLaunch& launch : plan.launches) {
    REQUIRE(static_cast<int64_t>(launch.tasks.size()) == max_B * launch.tasks_per_batch);
    for (size_t t = 0; t < launch.tasks.size(); ++t)  // batch outermost
      REQUIRE(launch.tasks[t].lse_offset / (s.H * s.n) == static_cast<int64_t>(t) / launch.tasks_per_batch);
  }
  const auto q = random_normal(size, 21), k = random_normal(size, 22), v = random_normal(size, 23);
  const auto dout = random_normal(size, 24);
  std::vector<double> want_out(size), want_lse(lse_size), want_dq(size, 0.0), want_dk(size, 0.0), want_dv(size, 0.0);
  dilated_attention_forward<double>(want_out.data(), want_lse.data(), q.data(), k.data(), v.data(), s.B, s.n, s.H,
                                    s.D, spec);
  dilated_attention_backward<double>(want_dq.data(), want_dk.data(), want_dv.data(), dout.data(), want_out.data(),
                                     want_lse.data(), q.data(), k.data(), v.data(), s.B, s.n, s.H, s.D, spec);
  auto out = nan_filled<double>(size), lse = nan_filled<double>(lse_size);
  run_plan_forward(plan, spec, s, out, lse, q, k, v);
  require_equal("out", out, want_out);
  require_equal("lse", lse, want_lse);
  auto dq = nan_filled<double>(size), dk = nan_filled<double>(size), dv = nan_filled<double>(size);
  run_plan_backward(plan, spec, s, dq, dk, dv, dout, want_out, want_lse, q, k, v);
  require_equal("dq", dq, want_dq);
  require_equal("dk", dk, want_dk);
  require_equal("dv", dv, want_dv);
}

DilatedSpec spec_of(std::vector<DilatedBranch> branches, DilatedMode mode, bool causal) {
  return DilatedSpec{std::move(branches), mode, causal};
}

}  // namespace

TEST_CASE("the GPU plan reproduces the CPU dilated attention (fp64)") {
  struct Case {
    const char* name;
    std::vector<DilatedBranch> branches;
    DilatedMode mode;
    Shape shape;
  };
  const Case cases[] = {
      {"dense", {{96, 1}}, DilatedMode::longnet, {2, 96, 2, 8}},
      {"longnet rates 1,2,4", {{32, 1}, {64, 2}, {128, 4}}, DilatedMode::longnet, {2, 128, 4, 8}},
      {"longnet rate 1 not first", {{64, 2}, {32, 1}, {128, 4}}, DilatedMode::longnet, {2, 128, 4, 8}},
      {"longnet uncovered rows", {{16, 2}, {32, 4}}, DilatedMode::longnet, {2, 64, 1, 8}},
      {"longnet one branch r = 2", {{32, 2}}, DilatedMode::longnet, {1, 64, 3, 8}},
      {"head_groups H=5 G=3", {{32, 1}, {64, 2}, {128, 4}}, DilatedMode::head_groups, {2, 128, 5, 8}},
      {"head_groups all rate 1", {{48, 1}, {96, 1}}, DilatedMode::head_groups, {2, 96, 5, 8}},
      {"ragged n=96", {{48, 1}, {96, 2}}, DilatedMode::longnet, {2, 96, 3, 24}},
      {"segments over 64 rows", {{200, 1}, {200, 2}}, DilatedMode::longnet, {1, 200, 2, 8}},
  };
  for (const Case& c : cases) {
    for (bool causal : {true, false}) {
      const DilatedSpec spec = spec_of(c.branches, c.mode, causal);
      INFO(c.name, causal ? " causal" : " non-causal");
      check_plan(spec, c.shape, c.shape.B);
      check_plan(spec, c.shape, c.shape.B + 1);  // a call with B < max_B runs the first tasks only
    }
  }
}

TEST_CASE("plan flags: launch order, clearing, accumulation") {
  const DilatedPlan moved =
      plan_dilated_attention(spec_of({{64, 2}, {32, 1}}, DilatedMode::longnet, true), 1, 128, 4, 64);
  CHECK(moved.launches[0].branch == 1);
  CHECK(moved.launches[1].branch == 0);
  CHECK_FALSE(moved.clear_first);
  CHECK_FALSE(moved.launches[0].accumulate);
  CHECK(moved.launches[1].accumulate);
  CHECK(moved.multi_launch_accumulation);

  const DilatedPlan dense = plan_dilated_attention(dense_as_dilated(1024, true), 8, 1024, 12, 64);
  CHECK(dense.launches.size() == 1);
  CHECK_FALSE(dense.clear_first);
  CHECK_FALSE(dense.multi_launch_accumulation);
  CHECK(dense.launches[0].tasks.size() == 8 * 12);

  const DilatedPlan groups =
      plan_dilated_attention(spec_of({{32, 1}, {64, 2}, {128, 4}}, DilatedMode::head_groups, true), 1, 128, 5, 8);
  CHECK(groups.clear_first);
  CHECK_FALSE(groups.multi_launch_accumulation);
  CHECK(groups.out_scale == doctest::Approx(1.0 / 3));
  // Heads 0, 1 | 2, 3 | 4; segments 4, 2, 1.
  CHECK(groups.launches[0].tasks_per_batch == 2 * 4);
  CHECK(groups.launches[1].tasks_per_batch == 2 * 2);
  CHECK(groups.launches[2].tasks_per_batch == 1 * 1);
  for (const DilatedLaunch& launch : groups.launches) CHECK_FALSE(launch.accumulate);
}

TEST_CASE("task offsets are int64 and stay inside the tensors at n = 2^20") {
  const int64_t n = int64_t{1} << 20;
  const int B = 4, H = 12, D = 64;  // B * n * H * D = 3.2e9 > 2^31
  const DilatedSpec spec =
      spec_of({{2048, 1}, {4096, 2}, {8192, 4}, {16384, 8}, {32768, 16}}, DilatedMode::longnet, true);
  const DilatedPlan plan = plan_dilated_attention(spec, B, n, H, D);
  const int64_t elements = B * n * H * D;
  REQUIRE(elements > (int64_t{1} << 31));
  int64_t last_row_end = 0;
  for (const DilatedLaunch& launch : plan.launches) {
    for (const DeviceBlockTask& t : launch.tasks) {
      REQUIRE(t.q_offset + (t.nq - 1) * t.q_stride + D <= elements);
      REQUIRE(t.lse_offset + (t.nq - 1) * t.lse_stride < B * H * n);
      last_row_end = std::max(last_row_end, t.q_offset + (t.nq - 1) * t.q_stride + D);
    }
  }
  // Head 11, last position of batch 1: rate 1 reaches the very last element.
  CHECK(last_row_end == elements);
}

TEST_CASE("the plan refuses what the kernels cannot run") {
  CHECK_THROWS_AS(plan_dilated_attention(dense_as_dilated(64, true), 1, 64, 2, 129), InputError);
  CHECK_THROWS_AS(plan_dilated_attention(dense_as_dilated(64, true), 1, 64, 2, 0), InputError);
  CHECK_THROWS_AS(plan_dilated_attention(spec_of({{48, 1}}, DilatedMode::longnet, true), 1, 64, 2, 64), InputError);
  CHECK_THROWS_AS(plan_dilated_attention(spec_of({{16, 1}, {32, 2}, {64, 4}}, DilatedMode::head_groups, true), 1, 64,
                                         2, 64),
                  InputError);
  CHECK_NOTHROW(plan_dilated_attention(dense_as_dilated(64, true), 1, 64, 2, 128));
}
