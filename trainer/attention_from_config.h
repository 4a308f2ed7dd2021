// Chooses the attention the model runs: dense or dilated on one rank, or ring dilated
// attention over the sequence-parallel group (dense then being the one-branch pattern (n, 1)).
#pragma once

#include <memory>

#include "attention/dilated_spec.h"
#include "attention/ring_dilated_attention.h"
#include "attention/sequence_attention.h"
#include "comm/communicator.h"
#include "trainer/config.h"

namespace dilatron {

// The pattern the config asks for over the whole sequence (dense: one branch (n, 1)).
DilatedSpec dilated_spec_from(const Config& config);

// The ring's schedule: parallel.overlap_ring, or the exchange serialised to time it.
RingSchedule ring_schedule_from(const Config& config);

// For a rank holding the whole sequence (sequence_parallel 1, or generation).
std::unique_ptr<SequenceAttention<float>> single_rank_attention(const Config& config);

// For this rank's chunk: single_rank_attention when the group has one rank, else the ring.
std::unique_ptr<SequenceAttention<float>> sequence_attention_for(const Config& config, Communicator& sp_group);

}  // namespace dilatron
