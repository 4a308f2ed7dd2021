#include "comm/process_groups.h"

#include "core/check.h"

namespace dilatron {

ProcessGroups make_process_groups(std::unique_ptr<Communicator> world, int sequence_parallel) {
  DILATRON_CHECK(world != nullptr, "make_process_groups needs a world communicator");
  const int world_size = world->size(), rank = world->rank(), sp = sequence_parallel;
  DILATRON_CHECK_INPUT(sp >= 1, "parallel.sequence_parallel: must be at least 1, got {}", sp);
  DILATRON_CHECK_INPUT(world_size % sp == 0, "parallel.sequence_parallel: {} does not divide the world size {}", sp,
                       world_size);
  ProcessGroups groups;
  groups.sp_size = sp;
  groups.sp_rank = rank % sp;
  groups.dp_size = world_size / sp;
  groups.dp_rank = rank / sp;
  // Colors: SP group g holds ranks [g * sp, (g + 1) * sp); DP group p holds ranks p, p + sp, ...
  groups.sequence_parallel = world->split(groups.dp_rank, rank, "sp");
  groups.data_parallel = world->split(groups.sp_rank, rank, "dp");
  DILATRON_CHECK(groups.sequence_parallel->size() == sp && groups.sequence_parallel->rank() == groups.sp_rank);
  DILATRON_CHECK(groups.data_parallel->size() == groups.dp_size && groups.data_parallel->rank() == groups.dp_rank);
  groups.world = std::move(world);
  return groups;
}

}  // namespace dilatron
