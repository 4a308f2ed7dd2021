// cuBLAS / cuBLASLt status check in the family of core/check.h: a failed call throws
// dilatron::Error carrying the expression, file:line and the status name.
#pragma once

#ifdef DILATRON_CUDA
#include <cublas_api.h>

#include <string>

#include "core/check.h"

#define DILATRON_CUBLAS_CHECK(expr)                                                         \
  do {                                                                                      \
    cublasStatus_t dilatron_status_ = (expr);                                               \
    if (dilatron_status_ != CUBLAS_STATUS_SUCCESS) [[unlikely]]                             \
      ::dilatron::detail::throw_check_failure(                                              \
          #expr, __FILE__, __LINE__, std::string(cublasGetStatusName(dilatron_status_)));   \
  } while (0)
#endif
