// MPI's lifetime in a process: construct one MpiRuntime at the top of main(). Works as a
// singleton (plain ./binary), under mpirun, and under srun --mpi=pmix.
#pragma once

namespace dilatron {

class MpiRuntime {
 public:
  // MPI_Init_thread asking for MPI_THREAD_FUNNELED (only the main thread calls MPI); throws
  // if less is provided, or if MPI was initialised before (MPI can start once per process).
  // Sets MPI_ERRORS_RETURN on MPI_COMM_WORLD and MPI_COMM_SELF.
  MpiRuntime();
  // MPI_Finalize. If an exception is unwinding through it, MPI_Abort instead: the other
  // ranks may be blocked in a collective and would wait forever in MPI_Finalize.
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  // Between construction and destruction of the MpiRuntime.
  static bool active();
  // Ends every rank of the job with `status`: for a main() that caught an error on one rank
  // only, where returning normally would leave the others hanging.
  [[noreturn]] static void abort(int status);
};

}  // namespace dilatron
