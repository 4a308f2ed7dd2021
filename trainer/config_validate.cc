#include "trainer/config_validate.h"

#include "core/check.h"

namespace dilatron {
namespace {

void validate_model(const ModelConfig& m, const DataConfig& data, const std::string& src) {
  DILATRON_CHECK_INPUT(m.n_layers >= 1, "{}: model.n_layers = {}: must be >= 1", src, m.n_layers);
  DILATRON_CHECK_INPUT(m.d_model >= 1, "{}: model.d_model = {}: must be >= 1", src, m.d_model);
  DILATRON_CHECK_INPUT(m.n_heads >= 1, "{}: model.n_heads = {}: must be >= 1", src, m.n_heads);
  DILATRON_CHECK_INPUT(m.d_model % m.n_heads == 0, "{}: model.n_heads = {}: must divide model.d_model = {}",
                       src, m.n_heads, m.d_model);
  DILATRON_CHECK_INPUT(m.position != PositionEncoding::rotary || (m.d_model / m.n_heads) % 2 == 0,
                       "{}: model.n_heads = {}: head size model.d_model / model.n_heads = {} must be even "
                       "for model.position = rotary (rotary rotates pairs of channels)",
                       src, m.n_heads, m.d_model / m.n_heads);
  DILATRON_CHECK_INPUT(m.vocab_size >= 2 && m.vocab_size <= (1 << 20),
                       "{}: model.vocab_size = {}: must be in [2, 1048576]", src, m.vocab_size);
  // A larger vocabulary than the bytes only adds rows no token uses (as GPT-2's 50304, padded for
  // the matmuls), which benchmarks of standard model shapes on the byte corpus rely on.
  DILATRON_CHECK_INPUT(data.format != DataFormat::text || m.vocab_size >= 256,
                       "{}: model.vocab_size = {}: must be at least 256 when data.format = text (the byte "
                       "tokenizer has one token per byte value)",
                       src, m.vocab_size);
  DILATRON_CHECK_INPUT(m.seq_len >= 2, "{}: model.seq_len = {}: must be >= 2", src, m.seq_len);
  DILATRON_CHECK_INPUT(m.d_ff >= 0, "{}: model.d_ff = {}: must be >= 0 (0: 4 * model.d_model)", src, m.d_ff);
  DILATRON_CHECK_INPUT(m.rope_theta > 0, "{}: model.rope_theta = {}: must be > 0", src, m.rope_theta);
  DILATRON_CHECK_INPUT(m.init_std > 0, "{}: model.init_std = {}: must be > 0", src, m.init_std);
}

void validate_attention(const AttentionConfig& a, int seq_len, const std::string& src) {
  size_t n = a.segment_lengths.size();
  DILATRON_CHECK_INPUT(a.dilation_rates.size() == n,
                       "{}: attention.dilation_rates has {} entries: must match attention.segment_lengths "
                       "({} entries)",
                       src, a.dilation_rates.size(), n);
  DILATRON_CHECK_INPUT(a.kind != AttentionKind::dilated || n > 0,
                       "{}: attention.segment_lengths is empty: attention.kind = dilated needs at least one "
                       "segment length and dilation rate",
                       src);
  for (size_t i = 0; i < n; ++i) {
    int64_t w = a.segment_lengths[i], r = a.dilation_rates[i];
    DILATRON_CHECK_INPUT(w >= 1, "{}: attention.segment_lengths[{}] = {}: must be >= 1", src, i, w);
    DILATRON_CHECK_INPUT(r >= 1, "{}: attention.dilation_rates[{}] = {}: must be >= 1", src, i, r);
    DILATRON_CHECK_INPUT(w % r == 0,
                         "{}: attention.segment_lengths[{}] = {}: must be divisible by "
                         "attention.dilation_rates[{}] = {}",
                         src, i, w, i, r);
    DILATRON_CHECK_INPUT(seq_len % w == 0,
                         "{}: attention.segment_lengths[{}] = {}: must divide model.seq_len = {}", src, i, w,
                         seq_len);
  }
}

void validate_zero(const ZeroConfig& z, const std::string& src) {
  DILATRON_CHECK_INPUT(z.stage == 0 || z.stage == 3, "{}: zero.stage = {}: must be 0 or 3", src, z.stage);
  DILATRON_CHECK_INPUT(z.offload_params == OffloadTier::device || z.stage == 3,
                       "{}: zero.offload_params = {}: needs zero.stage = 3 (stage 0 keeps every parameter "
                       "on the device)",
                       src, to_string(z.offload_params));
  bool any_nvme = z.offload_params == OffloadTier::nvme || z.offload_optimizer == OffloadTier::nvme;
  DILATRON_CHECK_INPUT(!any_nvme || !z.nvme_path.empty(),
                       "{}: zero.nvme_path is empty: required when zero.offload_params or "
                       "zero.offload_optimizer is nvme",
                       src);
  DILATRON_CHECK_INPUT(z.persistence_threshold >= 0, "{}: zero.persistence_threshold = {}: must be >= 0", src,
                       z.persistence_threshold);
  DILATRON_CHECK_INPUT(z.prefetch_depth >= 0, "{}: zero.prefetch_depth = {}: must be >= 0", src,
                       z.prefetch_depth);
  DILATRON_CHECK_INPUT(z.nvme_block_bytes >= 4096 && z.nvme_block_bytes % 4096 == 0 && z.nvme_block_bytes <= (1 << 30),
                       "{}: zero.nvme_block_bytes = {}: must be a multiple of 4096 (O_DIRECT) in [4096, 2^30]", src,
                       z.nvme_block_bytes);
  DILATRON_CHECK_INPUT(z.nvme_queue_depth >= 1 && z.nvme_queue_depth <= 4096,
                       "{}: zero.nvme_queue_depth = {}: must be in [1, 4096]", src, z.nvme_queue_depth);
  DILATRON_CHECK_INPUT(z.host_threads >= 0 && z.host_threads <= 1024,
                       "{}: zero.host_threads = {}: must be in [0, 1024] (0: automatic)", src, z.host_threads);
}

void validate_optimizer(const OptimizerConfig& o, const ScheduleConfig& s, const std::string& src) {
  DILATRON_CHECK_INPUT(o.lr > 0, "{}: optimizer.lr = {}: must be > 0", src, o.lr);
  DILATRON_CHECK_INPUT(o.beta1 >= 0 && o.beta1 < 1, "{}: optimizer.beta1 = {}: must be in [0, 1)", src, o.beta1);
  DILATRON_CHECK_INPUT(o.beta2 >= 0 && o.beta2 < 1, "{}: optimizer.beta2 = {}: must be in [0, 1)", src, o.beta2);
  DILATRON_CHECK_INPUT(o.eps > 0, "{}: optimizer.eps = {}: must be > 0", src, o.eps);
  DILATRON_CHECK_INPUT(o.weight_decay >= 0, "{}: optimizer.weight_decay = {}: must be >= 0", src,
                       o.weight_decay);
  DILATRON_CHECK_INPUT(s.max_steps >= 1, "{}: schedule.max_steps = {}: must be >= 1", src, s.max_steps);
  DILATRON_CHECK_INPUT(s.warmup_steps >= 0 && s.warmup_steps <= s.max_steps,
                       "{}: schedule.warmup_steps = {}: must be in [0, schedule.max_steps = {}]", src,
                       s.warmup_steps, s.max_steps);
  DILATRON_CHECK_INPUT(s.min_lr_ratio >= 0 && s.min_lr_ratio <= 1,
                       "{}: schedule.min_lr_ratio = {}: must be in [0, 1]", src, s.min_lr_ratio);
}

void validate_data(const DataConfig& d, const std::string& src) {
  DILATRON_CHECK_INPUT(!d.path.empty(), "{}: data.path is empty: name the training data file", src);
  DILATRON_CHECK_INPUT(!d.val_path.empty() || (d.val_fraction > 0 && d.val_fraction <= 0.5),
                       "{}: data.val_fraction = {}: must be in (0, 0.5] when data.val_path is empty", src,
                       d.val_fraction);
  DILATRON_CHECK_INPUT(d.batch_size >= 1, "{}: data.batch_size = {}: must be >= 1", src, d.batch_size);
  DILATRON_CHECK_INPUT(d.micro_batch_size >= 0 && d.micro_batch_size <= d.batch_size,
                       "{}: data.micro_batch_size = {}: must be in [0, data.batch_size = {}] (0: the whole "
                       "batch at once)",
                       src, d.micro_batch_size, d.batch_size);
  DILATRON_CHECK_INPUT(d.micro_batch_size == 0 || d.batch_size % d.micro_batch_size == 0,
                       "{}: data.micro_batch_size = {}: must divide data.batch_size = {}", src,
                       d.micro_batch_size, d.batch_size);
  DILATRON_CHECK_INPUT(d.eval_every >= 0, "{}: data.eval_every = {}: must be >= 0 (0: off)", src, d.eval_every);
  DILATRON_CHECK_INPUT(d.eval_batches >= 1, "{}: data.eval_batches = {}: must be >= 1", src, d.eval_batches);
}

void validate_run(const Config& c, const std::string& src) {
  DILATRON_CHECK_INPUT(c.parallel.sequence_parallel >= 1, "{}: parallel.sequence_parallel = {}: must be >= 1",
                       src, c.parallel.sequence_parallel);
  DILATRON_CHECK_INPUT(c.model.seq_len % c.parallel.sequence_parallel == 0,
                       "{}: parallel.sequence_parallel = {}: must divide model.seq_len = {}", src,
                       c.parallel.sequence_parallel, c.model.seq_len);
  DILATRON_CHECK_INPUT(c.checkpoint.every >= 0, "{}: checkpoint.every = {}: must be >= 0 (0: only at the end)",
                       src, c.checkpoint.every);
  DILATRON_CHECK_INPUT(c.checkpoint.keep >= 1, "{}: checkpoint.keep = {}: must be >= 1", src, c.checkpoint.keep);
  DILATRON_CHECK_INPUT(!c.logging.run_dir.empty(), "{}: logging.run_dir is empty: name the run directory", src);
  DILATRON_CHECK_INPUT(c.logging.every >= 1, "{}: logging.every = {}: must be >= 1", src, c.logging.every);
  DILATRON_CHECK_INPUT(c.sample.tokens >= 0, "{}: sample.tokens = {}: must be >= 0 (0: no sample)", src,
                       c.sample.tokens);
  DILATRON_CHECK_INPUT(c.sample.temperature > 0, "{}: sample.temperature = {}: must be > 0", src,
                       c.sample.temperature);
  DILATRON_CHECK_INPUT(c.sample.top_k >= 0, "{}: sample.top_k = {}: must be >= 0 (0: no cut-off)", src,
                       c.sample.top_k);
}

}  // namespace

void validate_config(const Config& c, const std::string& source) {
  validate_model(c.model, c.data, source);
  validate_attention(c.attention, c.model.seq_len, source);
  validate_zero(c.zero, source);
  validate_optimizer(c.optimizer, c.schedule, source);
  validate_data(c.data, source);
  validate_run(c, source);
}

}  // namespace dilatron
