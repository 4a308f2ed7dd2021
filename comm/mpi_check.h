// DILATRON_MPI_CHECK(expr): every MPI call goes through it. Communicators use
// MPI_ERRORS_RETURN, so a failing call returns a code, which becomes a dilatron::Error with
// the expression, file:line and MPI_Error_string's text.
#pragma once

#include <mpi.h>

#include "core/check.h"

namespace dilatron::detail {

[[noreturn]] void throw_mpi_failure(const char* expr, const char* file, int line, int code);

}  // namespace dilatron::detail

#define DILATRON_MPI_CHECK(expr)                                                       \
  do {                                                                                 \
    int dilatron_mpi_rc_ = (expr);                                                     \
    if (dilatron_mpi_rc_ != MPI_SUCCESS) [[unlikely]]                                  \
      ::dilatron::detail::throw_mpi_failure(#expr, __FILE__, __LINE__, dilatron_mpi_rc_); \
  } while (0)
