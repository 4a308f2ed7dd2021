"""NCCL's own all-reduce through torch.distributed, timed as comm/collectives_gpu_test times ours
(256 MiB of fp32, median of event-timed runs), for the bus bandwidth beside ours:

    torchrun --standalone --nproc_per_node N bench/reference/nccl_allreduce_bench.py [--mib 256]

Rank 0 prints one line: "bandwidth: torch-nccl all_reduce 256 MiB f32 on N rank(s): T ms,
algbw A GB/s, busbw B GB/s" (nccl-tests: algbw = bytes / time, busbw = algbw * 2 (n - 1) / n).
"""
import argparse
import os

import torch
import torch.distributed as dist

from cuda_timing import median_ms


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="size of the reduced buffer in MiB")
    args = parser.parse_args()
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank))
    size = dist.get_world_size()
    count = args.mib * (1 << 20) // 4
    buf = torch.ones(count, dtype=torch.float32, device="cuda")

    def all_reduce():
        dist.all_reduce(buf)

    ms = median_ms(all_reduce, reps=20, warmup=5)
    # The slowest rank sets the pace, as in collectives_gpu_test.
    slowest = torch.tensor([ms], dtype=torch.float64, device="cuda")
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
    ms = slowest.item()
    algbw = count * 4 / (ms * 1e-3) / 1e9
    busbw = algbw * 2.0 * (size - 1) / size
    if dist.get_rank() == 0:
        print(f"bandwidth: torch-nccl all_reduce {args.mib} MiB f32 on {size} rank(s): {ms:.3f} ms, "
              f"algbw {algbw:.1f} GB/s, busbw {busbw:.1f} GB/s", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
