#include "trainer/train.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <vector>

#include <spdlog/spdlog.h>

#include "core/check.h"
#include "core/op_profiler.h"
#include "core/rng.h"
#include "model/gpt.h"
#include "optim/grad_norm.h"
#include "optim/schedule.h"
#include "trainer/attention_from_config.h"
#include "trainer/batch_layout.h"
#include "trainer/sharded_checkpoint.h"
#include "trainer/data.h"
#include "trainer/metrics_log.h"
#include "trainer/model_from_config.h"
#include "trainer/progress_bar.h"
#include "trainer/sampling.h"
#include "trainer/step_model.h"
#include "trainer/stop_signal.h"
#include "trainer/training_device.h"
#include "trainer/training_state.h"

namespace fs = std::filesystem;

namespace dilatron {
namespace {

// Stream of the end-of-training sample, apart from the data-order and init streams.
constexpr uint64_t kSampleStream = 0x53414d504c45ull;

double world_sum(Communicator& world, double x) {
  world.all_reduce(&x, 1, DType::f64, ReduceOp::sum);
  return x;
}

double mean_val_loss(StepModel& model, const TokenData& data, const Config& c, const BatchLayout& layout,
                     const ProcessGroups& g, std::vector<int32_t>& inputs, std::vector<int32_t>& targets) {
  const int64_t total = std::min<int64_t>(c.data.eval_batches * c.data.batch_size, data.num_val_sequences());
  // Sequence-parallel peers share a data-parallel rank, hence the same slice: they meet in the ring.
  const ValSlice mine = val_slice(total, g.dp_rank, g.dp_size);
  double loss_sum = 0;
  for (int64_t first = 0; first < mine.count; first += layout.micro) {
    const int64_t rows = std::min(layout.micro, mine.count - first);
    for (int64_t r = 0; r < rows; ++r)
      data.val_sequence(mine.first + first + r, layout.chunk_begin, layout.chunk_len,
                        inputs.data() + r * layout.chunk_len, targets.data() + r * layout.chunk_len);
    loss_sum += model.loss(inputs.data(), targets.data(), static_cast<int>(rows), static_cast<int>(layout.chunk_len),
                           static_cast<int>(layout.chunk_begin));
  }
  return world_sum(*g.world, loss_sum) / static_cast<double>(total * c.model.seq_len);
}

void write_resolved_config(const std::string& run_dir, const Config& c) {
  std::string path = run_dir + "/config.yaml", tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    out << config_to_yaml(c);
    DILATRON_CHECK_INPUT(out.good(), "logging.run_dir: cannot write {}", tmp);
  }
  fs::rename(tmp, path);
}

// From the final checkpoint, which holds the full parameters however the state was partitioned.
void print_sample(const Config& c, const ShardedCheckpoint& checkpoint) {
  if (c.data.format != DataFormat::text) {
    spdlog::info("no sample: token shards come without a tokenizer (sample.tokens applies to data.format: text)");
    return;
  }
  // Sampling needs the whole window on one rank, with single-rank attention.
  CheckpointModel sampler = load_checkpoint_model(checkpoint, c, 1);
  CounterRng rng(c.seed, kSampleStream);
  SamplingOptions so{c.sample.tokens, c.sample.temperature, c.sample.top_k};
  std::vector<int32_t> text = sample_continuation(*sampler.model, encode_bytes(c.sample.prompt), so, rng);
  std::printf("--- sample (%lld tokens, temperature %g, top-k %d) ---\n%s%s\n---\n",
              static_cast<long long>(c.sample.tokens), c.sample.temperature, c.sample.top_k, c.sample.prompt.c_str(),
              decode_bytes(text).c_str());
  std::fflush(stdout);
}

}  // namespace

TrainSummary run_training(const Config& c, const TrainOptions& options, ProcessGroups& g) {
  Communicator& world = *g.world;
  const bool lead = world.rank() == 0;
  const GptShape shape = gpt_shape_from(c.model);
  const BatchLayout layout =
      make_batch_layout(c.data.batch_size, c.data.micro_batch_size, c.model.seq_len, g.dp_rank, g.dp_size, g.sp_rank, g.sp_size);
  const int64_t tokens_per_step = c.data.batch_size * c.model.seq_len;

  // Resolve what to resume from before touching the run directory. Every rank reads the
  // (shared) run directory itself; the barrier orders it after any earlier writer.
  world.barrier();
  std::optional<std::string> resume_dir;
  if (options.resume == "auto") {
    resume_dir = find_latest_checkpoint(c.logging.run_dir);
  } else if (!options.resume.empty()) {
    resume_dir = options.resume;
  } else {
    DILATRON_CHECK_INPUT(!find_latest_checkpoint(c.logging.run_dir).has_value(),
                         "logging.run_dir: {} already holds checkpoints; continue it with --resume auto, "
                         "or choose another logging.run_dir",
                         c.logging.run_dir);
  }

  TokenData data = TokenData::load(data_spec_from(c));
  TrainingDevice device(c, g);
  std::unique_ptr<TrainingState> state = make_training_state(c, shape, world, device);
  std::unique_ptr<StepModel> model =
      make_step_model(c, shape, static_cast<int>(layout.micro), *state, g, device);
  int64_t step = 0;
  if (resume_dir) {
    step = restore_checkpoint(*resume_dir, c, *state);
    if (lead) spdlog::info("resumed from {} at step {}", *resume_dir, step);
  } else {
    state->init_parameters(c.seed);
  }
  const int64_t last_step = std::min(c.schedule.max_steps, options.stop_at_step.value_or(c.schedule.max_steps));
  const int64_t first_step = step;

  std::unique_ptr<MetricsLog> metrics;
  if (lead) {
    fs::create_directories(c.logging.run_dir);
    write_resolved_config(c.logging.run_dir, c);
    metrics = std::make_unique<MetricsLog>(c.logging.run_dir + "/metrics.jsonl");
    spdlog::info("model: {} parameters, {} layers, d_model {}, {} heads, seq_len {}; batch {} x {} tokens; "
                 "{} ranks = {} data-parallel x {} sequence-parallel ({} sequences x {} positions per rank, "
                 "{} per micro-batch); data: {} train / {} val tokens",
                 gpt_num_params(shape), shape.n_layers, shape.d_model, shape.n_heads, shape.seq_len, c.data.batch_size,
                 shape.seq_len, world.size(), g.dp_size, g.sp_size, layout.per_rank, layout.chunk_len, layout.micro,
                 data.train_tokens(), data.val_tokens());
    spdlog::info("device: {}", device.describe());
    spdlog::info("memory: {}; activations {:.1f} MiB (peak, one micro-batch of this rank's chunk)",
                 state->describe_memory(), static_cast<double>(model->activation_bytes()) / (1 << 20));
  }

  install_stop_signal_handlers();
  const LrSchedule schedule{static_cast<float>(c.optimizer.lr), c.schedule.warmup_steps, c.schedule.max_steps,
                            static_cast<float>(c.schedule.min_lr_ratio)};
  std::vector<int32_t> inputs(layout.micro * layout.chunk_len), targets(layout.micro * layout.chunk_len);
  ProgressBar progress(step, last_step, c.logging.progress_bar, lead);
  TrainSummary summary;
  int64_t last_checkpoint_step = resume_dir ? step : -1;

  auto checkpoint = [&](const char* why) {
    summary.last_checkpoint = save_checkpoint(world, c, step, *state);
    progress.message(fmt::format("checkpoint ({}) {}", why, summary.last_checkpoint));
    last_checkpoint_step = step;
  };

  while (step < last_step) {
    auto start = std::chrono::steady_clock::now();
    state->zero_gradients();
    // Every token of the global batch weighs 1/(batch*T) in the loss, however it is split.
    const double token_weight = 1.0 / static_cast<double>(tokens_per_step);
    for (int64_t m = 0; m * layout.micro < layout.per_rank; ++m) {
      int64_t rows = fill_train_micro_batch(data, layout, c.seed, step, m, inputs, targets);
      model->train_micro_batch(inputs.data(), targets.data(), static_cast<int>(rows),
                               static_cast<int>(layout.chunk_len), static_cast<int>(layout.chunk_begin),
                               token_weight);
    }
    state->reduce_gradients();
    // Taken once the reduction is queued: the GPU model's host waits here, not per micro-batch.
    const double loss = world_sum(world, model->take_train_loss()) * token_weight;
    DILATRON_CHECK(std::isfinite(loss), "training loss is {} at step {}: lower optimizer.lr or check the data", loss, step);

    const double grad_norm = std::sqrt(state->gradient_sum_of_squares());
    const float clip = clip_coefficient(grad_norm, static_cast<float>(c.optimizer.grad_clip));
    if (clip < 1.0f) state->scale_gradients(clip);
    const float lr = lr_at(schedule, step);
    state->adamw_step(c.optimizer, lr, step + 1);
    ++step;

    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double tokens_per_s = static_cast<double>(tokens_per_step) / seconds;
    summary.last_loss = loss;
    const bool log_now = step % c.logging.every == 0 || step == last_step;
    const bool eval_now = c.data.eval_every > 0 && (step % c.data.eval_every == 0 || step == c.schedule.max_steps);
    nlohmann::json row{{"step", step}, {"loss", loss}, {"lr", lr}, {"grad_norm", grad_norm},
                       {"tokens_per_s", tokens_per_s}, {"step_time_s", seconds}};
    state->add_step_metrics(row);
#ifdef DILATRON_CUDA
    // The per-op profile leaves out the first step: it is the warm-up.
    if (OpProfiler& profiler = OpProfiler::instance(); profiler.enabled() && step == first_step + 1) profiler.reset();
#endif
    if (eval_now) {
      double val = mean_val_loss(*model, data, c, layout, g, inputs, targets);
      row["val_loss"] = val;
      summary.last_val_loss = val;
      progress.message(fmt::format("step {}: train loss {:.4f}, val loss {:.4f}", step, loss, val));
    }
    if (metrics && (log_now || eval_now)) metrics->write(row);
    progress.update(step, loss, tokens_per_s, log_now);

    // A signal may reach only some ranks (or reach them at different steps): agree on it.
    int stop = stop_requested() ? 1 : 0;
    world.all_reduce(&stop, 1, DType::i32, ReduceOp::max);
    if (stop) {
      summary.stopped_by_signal = true;
      progress.message(fmt::format("stop signal received: stopping after step {}", step));
      break;
    }
    if (c.checkpoint.every > 0 && step % c.checkpoint.every == 0 && step < last_step) checkpoint("periodic");
  }
  if (step != last_checkpoint_step && (c.checkpoint.at_end || summary.stopped_by_signal))
    checkpoint(summary.stopped_by_signal ? "on signal" : "final");
  progress.finish();
  summary.steps_done = step;
#ifdef DILATRON_CUDA
  if (OpProfiler& profiler = OpProfiler::instance(); profiler.enabled() && lead) {
    profiler.collect();
    spdlog::info("GPU time per op over the run after the first step (DILATRON_PROFILE; events around each op):\n{}", profiler.report());
  }
#endif

  if (lead && !summary.stopped_by_signal && step == c.schedule.max_steps && c.sample.tokens > 0 && c.attention.causal &&
      last_checkpoint_step == step)
    print_sample(c, ShardedCheckpoint::open(summary.last_checkpoint));
  world.barrier();
  return summary;
}

}  // namespace dilatron
