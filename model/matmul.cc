#include "model/matmul.h"

#include <Eigen/Dense>

namespace dilatron {
namespace {

template <typename T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

}  // namespace

template <typename T>
void matmul_forward(T* out, const T* inp, const T* weight, const T* bias, int64_t N, int IC,
                    int OC) {
  Eigen::Map<const RowMatrix<T>> x(inp, N, IC), w(weight, OC, IC);
  Eigen::Map<RowMatrix<T>> y(out, N, OC);
  y.noalias() = x * w.transpose();
  if (bias != nullptr) y.rowwise() += Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>>(bias, OC);
}

template <typename T>
void matmul_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                     int64_t N, int IC, int OC) {
  Eigen::Map<const RowMatrix<T>> dy(dout, N, OC), x(inp, N, IC), w(weight, OC, IC);
  Eigen::Map<RowMatrix<T>> dx(dinp, N, IC), dw(dweight, OC, IC);
  dx.noalias() += dy * w;
  dw.noalias() += dy.transpose() * x;
  // Summed row by row in a fixed order, independent of alignment: results are reproducible.
  if (dbias != nullptr)
    for (int64_t n = 0; n < N; ++n)
      for (int oc = 0; oc < OC; ++oc) dbias[oc] += dout[n * OC + oc];
}

template void matmul_forward<float>(float*, const float*, const float*, const float*, int64_t,
                                    int, int);
template void matmul_forward<double>(double*, const double*, const double*, const double*,
                                     int64_t, int, int);
template void matmul_backward<float>(float*, float*, float*, const float*, const float*,
                                     const float*, int64_t, int, int);
template void matmul_backward<double>(double*, double*, double*, const double*, const double*,
                                      const double*, int64_t, int, int);

}  // namespace dilatron
