#!/usr/bin/env python3
"""The PyTorch peer of model/kernels_gpu_test's matmul timing: bf16 linear with bias, forward
and backward (dinp, dweight, dbias), N=8192, IC=768, OC=3072, median of 20 after warm-up."""
import torch

from cuda_timing import median_ms

N, IC, OC = 8192, 768, 3072
x = torch.randn(N, IC, device="cuda", dtype=torch.bfloat16, requires_grad=True)
lin = torch.nn.Linear(IC, OC, device="cuda", dtype=torch.bfloat16)
dy = torch.randn(N, OC, device="cuda", dtype=torch.bfloat16)

fwd = median_ms(lambda: lin(x))
y = lin(x)
bwd = median_ms(lambda: torch.autograd.grad(y, (x, lin.weight, lin.bias), dy, retain_graph=True))
flops = 2 * N * IC * OC
print(f"torch {torch.__version__} linear forward bf16 N={N} IC={IC} OC={OC} (+bias): median {fwd:.4f} ms, {flops / fwd / 1e9:.1f} TFLOP/s")
print(f"torch linear backward bf16 (dinp, dweight, dbias): median {bwd:.4f} ms, {2 * flops / bwd / 1e9:.1f} TFLOP/s")
