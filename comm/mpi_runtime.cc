#include "comm/mpi_runtime.h"

#include <mpi.h>

#include <exception>

#include "comm/mpi_check.h"

namespace dilatron {
namespace {
bool g_active = false;
}  // namespace

MpiRuntime::MpiRuntime() {
  int initialized = 0;
  DILATRON_MPI_CHECK(MPI_Initialized(&initialized));
  DILATRON_CHECK(!initialized, "MPI is already initialised: construct one MpiRuntime per process");
  int provided = 0;
  DILATRON_MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided));
  g_active = true;
  DILATRON_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  DILATRON_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN));
  DILATRON_CHECK(provided >= MPI_THREAD_FUNNELED, "MPI provides thread level {}, dilatron needs MPI_THREAD_FUNNELED",
                 provided);
}

MpiRuntime::~MpiRuntime() {
  if (std::uncaught_exceptions() > 0) abort(1);
  g_active = false;
  MPI_Finalize();  // nothing useful to do with a failure while the process ends
}

bool MpiRuntime::active() { return g_active; }

void MpiRuntime::abort(int status) {
  MPI_Abort(MPI_COMM_WORLD, status);
  std::terminate();  // MPI_Abort does not return; this keeps [[noreturn]] honest
}

}  // namespace dilatron
