#include "trainer/model_from_config.h"

#include "core/check.h"

namespace dilatron {

GptShape gpt_shape_from(const ModelConfig& m) {
  GptShape s;
  s.n_layers = m.n_layers;
  s.d_model = m.d_model;
  s.n_heads = m.n_heads;
  s.vocab_size = m.vocab_size;
  s.seq_len = m.seq_len;
  s.d_ff = m.d_ff;
  s.position = m.position == PositionEncoding::learned ? PositionKind::learned : PositionKind::rotary;
  s.norm = m.norm == NormType::rmsnorm ? NormKind::rmsnorm : NormKind::layernorm;
  s.rope_theta = m.rope_theta;
  s.init_std = m.init_std;
  s.recompute = m.recompute;
  return s;
}

DataSpec data_spec_from(const Config& c) {
  DataSpec d;
  d.path = c.data.path;
  d.format = c.data.format == DataFormat::tokens ? TokenFileFormat::tokens : TokenFileFormat::text;
  d.val_path = c.data.val_path;
  d.val_fraction = c.data.val_fraction;
  d.seq_len = c.model.seq_len;
  d.vocab_size = c.model.vocab_size;
  return d;
}



}  // namespace dilatron
