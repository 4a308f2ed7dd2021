"""Timing of the PyTorch peers the way core/cuda_timing.h times ours: warm up, time each run with
CUDA events, take the median."""
import torch


def median_ms(fn, reps=20, warmup=5):
    """Median of `reps` event-timed calls of fn after `warmup` untimed ones, in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]
