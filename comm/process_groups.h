// How the world is cut: world = data-parallel x sequence-parallel. Each sequence-parallel
// group is `sequence_parallel` consecutive ranks (so they share a node where possible); the
// data-parallel group of a rank is the ranks with the same position in their SP group.
#pragma once

#include <memory>

#include "comm/communicator.h"

namespace dilatron {

// Where this process runs: its rank among the ranks of its node (MPI's shared-memory split),
// which picks its GPU later.
struct Placement {
  int local_rank = 0, local_size = 1;
};

struct ProcessGroups {
  std::unique_ptr<Communicator> world, sequence_parallel, data_parallel;
  int sp_size = 1, sp_rank = 0, dp_size = 1, dp_rank = 0;
  Placement placement;  // set by the launcher (mpi_placement); one rank alone by default
};

// Throws InputError ("parallel.sequence_parallel: ...") unless sequence_parallel divides the world size.
ProcessGroups make_process_groups(std::unique_ptr<Communicator> world, int sequence_parallel);

}  // namespace dilatron
