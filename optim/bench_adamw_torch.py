"""Peer timing for //optim:optim_gpu_test: torch.optim.AdamW(fused=True) on one flat fp32 tensor
of 64M elements, timed like our kernel (CUDA events around each step, median of 100 after 10
warm-up steps) and reported with the same byte count (p, g, m, v read; p, m, v written).

    python3 optim/bench_adamw_torch.py
"""
import statistics

import torch

N = 64 << 20
WARMUP, REPS = 10, 100


def main():
    torch.manual_seed(9)
    dev = torch.device("cuda")
    param = torch.nn.Parameter(torch.randn(N, device=dev))
    param.grad = 0.01 * torch.randn(N, device=dev)
    opt = torch.optim.AdamW([param], lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, fused=True)
    for _ in range(WARMUP):
        opt.step()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(REPS):
        start.record()
        opt.step()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    ms = statistics.median(times)
    assert torch.isfinite(param).all().item(), "non-finite parameters after the timed steps"
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}")
    print(f"TIMING torch AdamW(fused=True) n={N}: median {ms:.4f} ms, "
          f"{28.0 * N / (ms * 1e-3) / 1e9:.1f} GB/s (28 bytes/element)")


if __name__ == "__main__":
    main()
