#include "comm/mpi_check.h"

#include <string>

namespace dilatron::detail {

void throw_mpi_failure(const char* expr, const char* file, int line, int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  std::string message;
  if (MPI_Error_string(code, text, &length) == MPI_SUCCESS) {
    message = "MPI error " + std::to_string(code) + ": " + std::string(text, static_cast<size_t>(length));
  } else {
    message = "MPI error " + std::to_string(code);
  }
  throw_check_failure(expr, file, line, message);
}

}  // namespace dilatron::detail
