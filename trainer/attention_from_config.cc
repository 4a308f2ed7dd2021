#include "trainer/attention_from_config.h"

#include "attention/dilated_attention.h"
#include "attention/ring_dilated_attention.h"
#include "core/check.h"

namespace dilatron {

DilatedSpec dilated_spec_from(const Config& c) {
  const int64_t n = c.model.seq_len;
  if (c.attention.kind == AttentionKind::dense) return dense_as_dilated(n, c.attention.causal);
  DilatedSpec spec;
  spec.mode = c.attention.mode == AttentionMode::head_groups ? DilatedMode::head_groups : DilatedMode::longnet;
  spec.causal = c.attention.causal;
  for (size_t i = 0; i < c.attention.segment_lengths.size(); ++i)
    spec.branches.push_back({c.attention.segment_lengths[i], c.attention.dilation_rates[i]});
  validate_dilated_spec(spec, n, c.model.n_heads);
  return spec;
}

RingSchedule ring_schedule_from(const Config& c) {
  return c.parallel.overlap_ring ? RingSchedule::overlap : RingSchedule::serial;
}

std::unique_ptr<SequenceAttention<float>> single_rank_attention(const Config& c) {
  if (c.attention.kind == AttentionKind::dense)
    return std::make_unique<DenseSequenceAttention<float>>(c.attention.causal);
  return std::make_unique<DilatedSequenceAttention<float>>(dilated_spec_from(c));
}

std::unique_ptr<SequenceAttention<float>> sequence_attention_for(const Config& c, Communicator& sp_group) {
  if (sp_group.size() == 1) return single_rank_attention(c);
  return std::make_unique<RingDilatedAttention<float>>(dilated_spec_from(c), c.model.seq_len, sp_group,
                                                       ring_schedule_from(c));
}

}  // namespace dilatron
