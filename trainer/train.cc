#include "trainer/train.h"

#include <chrono>
#include <cstdio>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <vector>

#include <spdlog/spdlog.h>

#include "core/check.h"
#include "core/rng.h"
#include "model/gpt.h"
#include "optim/adamw.h"
#include "optim/grad_norm.h"
#include "optim/schedule.h"
#include "trainer/checkpoint_files.h"
#include "trainer/data.h"
#include "trainer/metrics_log.h"
#include "trainer/model_from_config.h"
#include "trainer/progress_bar.h"
#include "trainer/sampling.h"
#include "trainer/stop_signal.h"
#include "trainer/training_state.h"

namespace fs = std::filesystem;

namespace dilatron {
namespace {

// Stream of the end-of-training sample, apart from the data-order and init streams.
constexpr uint64_t kSampleStream = 0x53414d504c45ull;

struct Batch {
  std::vector<int32_t> inputs, targets;  // (micro, T)
};

double mean_val_loss(Gpt<float>& model, const TokenData& data, const Config& c, Batch& batch) {
  const int64_t micro = micro_batch_of(c.data), T = c.model.seq_len;
  const int64_t wanted = c.data.eval_batches * c.data.batch_size;
  const int64_t count = std::min<int64_t>(wanted, data.num_val_sequences());
  double loss_sum = 0;
  for (int64_t first = 0; first < count; first += micro) {
    int64_t rows = std::min(micro, count - first);
    for (int64_t r = 0; r < rows; ++r)
      data.val_sequence(first + r, 0, T, batch.inputs.data() + r * T, batch.targets.data() + r * T);
    loss_sum += model.forward(batch.inputs.data(), batch.targets.data(), static_cast<int>(rows), static_cast<int>(T));
  }
  return loss_sum / static_cast<double>(count * T);
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

}  // namespace

TrainSummary run_training(const Config& c, const TrainOptions& options) {
  require_supported_by_trainer(c);
  const GptShape shape = gpt_shape_from(c.model);
  const int64_t T = c.model.seq_len, micro = micro_batch_of(c.data);
  const int64_t batch = c.data.batch_size, tokens_per_step = batch * T;

  // Resolve what to resume from before touching the run directory.
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
  Gpt<float> model(shape, static_cast<int>(micro));
  TrainingState state(shape);
  int64_t step = 0;
  if (resume_dir) {
    step = load_training_state(*resume_dir, c, model, state);
    spdlog::info("resumed from {} at step {}", *resume_dir, step);
  } else {
    gpt_init_params(shape, c.seed, model.params());
  }
  const int64_t last_step = std::min(c.schedule.max_steps, options.stop_at_step.value_or(c.schedule.max_steps));

  fs::create_directories(c.logging.run_dir);
  write_resolved_config(c.logging.run_dir, c);
  MetricsLog metrics(c.logging.run_dir + "/metrics.jsonl");
  spdlog::info("model: {} parameters, {} layers, d_model {}, {} heads, seq_len {}; batch {} x {} tokens "
               "({} per micro-batch); data: {} train / {} val tokens",
               model.num_params(), shape.n_layers, shape.d_model, shape.n_heads, T, batch, T, micro,
               data.train_tokens(), data.val_tokens());

  install_stop_signal_handlers();
  const LrSchedule schedule{static_cast<float>(c.optimizer.lr), c.schedule.warmup_steps,
                            c.schedule.max_steps, static_cast<float>(c.schedule.min_lr_ratio)};
  const std::vector<ParamSpec> specs = gpt_param_specs(shape);
  Batch mb{std::vector<int32_t>(micro * T), std::vector<int32_t>(micro * T)};
  ProgressBar progress(step, last_step, c.logging.progress_bar);
  TrainSummary summary;
  int64_t last_checkpoint_step = resume_dir ? step : -1;

  auto checkpoint = [&](const char* why) {
    summary.last_checkpoint = save_training_state(c, step, model, state);
    last_checkpoint_step = step;
    progress.message(fmt::format("checkpoint ({}) {}", why, summary.last_checkpoint));
  };

  while (step < last_step) {
    auto start = std::chrono::steady_clock::now();
    model.zero_grads();
    double loss_sum = 0;
    // Every token of the global batch weighs 1/(batch*T) in the loss, whatever the micro-batching.
    const double token_weight = 1.0 / static_cast<double>(tokens_per_step);
    for (int64_t first = 0; first < batch; first += micro) {
      int64_t rows = std::min(micro, batch - first);
      for (int64_t r = 0; r < rows; ++r)
        data.train_sequence(c.seed, step, first + r, 0, T, mb.inputs.data() + r * T, mb.targets.data() + r * T);
      loss_sum += model.forward(mb.inputs.data(), mb.targets.data(), static_cast<int>(rows), static_cast<int>(T));
      model.backward(token_weight);
    }
    const double loss = loss_sum * token_weight;
    DILATRON_CHECK(std::isfinite(loss), "training loss is {} at step {}: lower optimizer.lr or check the data", loss, step);

    const int64_t n = model.num_params();
    const double grad_norm = std::sqrt(sum_of_squares_cpu(model.grads(), n));
    const float clip = clip_coefficient(grad_norm, static_cast<float>(c.optimizer.grad_clip));
    if (clip < 1.0f) {
      float* g = model.grads();
      for (int64_t i = 0; i < n; ++i) g[i] *= clip;
    }
    const float lr = lr_at(schedule, step);
    for (const ParamSpec& p : specs) {
      AdamWStep s{lr, static_cast<float>(c.optimizer.beta1), static_cast<float>(c.optimizer.beta2),
                  static_cast<float>(c.optimizer.eps),
                  p.weight_decay ? static_cast<float>(c.optimizer.weight_decay) : 0.0f, step + 1};
      adamw_update_cpu(model.params() + p.offset, model.grads() + p.offset, state.adam_m.data() + p.offset,
                       state.adam_v.data() + p.offset, p.numel, s);
    }
    ++step;

    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double tokens_per_s = static_cast<double>(tokens_per_step) / seconds;
    summary.last_loss = loss;
    const bool log_now = step % c.logging.every == 0 || step == last_step;
    const bool eval_now = c.data.eval_every > 0 && (step % c.data.eval_every == 0 || step == c.schedule.max_steps);
    nlohmann::json row{{"step", step}, {"loss", loss}, {"lr", lr}, {"grad_norm", grad_norm},
                       {"tokens_per_s", tokens_per_s}, {"step_time_s", seconds}};
    if (eval_now) {
      double val = mean_val_loss(model, data, c, mb);
      row["val_loss"] = val;
      summary.last_val_loss = val;
      progress.message(fmt::format("step {}: train loss {:.4f}, val loss {:.4f}", step, loss, val));
    }
    if (log_now || eval_now) metrics.write(row);
    progress.update(step, loss, tokens_per_s, log_now);

    if (stop_requested()) {
      summary.stopped_by_signal = true;
      progress.message(fmt::format("signal {} received: stopping after step {}", stop_signal_number(), step));
      break;
    }
    if (c.checkpoint.every > 0 && step % c.checkpoint.every == 0 && step < last_step) checkpoint("periodic");
  }
  if (step != last_checkpoint_step) checkpoint(summary.stopped_by_signal ? "on signal" : "final");
  progress.finish();
  summary.steps_done = step;

  if (!summary.stopped_by_signal && step == c.schedule.max_steps && c.sample.tokens > 0) {
    if (c.data.format == DataFormat::text) {
      CounterRng rng(c.seed, kSampleStream);
      SamplingOptions so{c.sample.tokens, c.sample.temperature, c.sample.top_k};
      std::vector<int32_t> text = sample_continuation(model, encode_bytes(c.sample.prompt), so, rng);
      std::printf("--- sample (%lld tokens, temperature %g, top-k %d) ---\n%s%s\n---\n",
                  static_cast<long long>(c.sample.tokens), c.sample.temperature, c.sample.top_k,
                  c.sample.prompt.c_str(), decode_bytes(text).c_str());
      std::fflush(stdout);
    } else {
      spdlog::info("no sample: token shards come without a tokenizer (sample.tokens applies to data.format: text)");
    }
  }
  return summary;
}

}  // namespace dilatron
