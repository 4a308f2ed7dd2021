#!/usr/bin/env python3
"""The PyTorch peer of attention_gpu_test's timings, at the same shapes, bf16, causal:
dense attention through flash SDPA (B=16, T=1024, H=12, D=64: the micro-batch of
configs/gpt2-124m-1k.yaml) and the 32k config's head_groups dilated attention the seed's way
(dilated_torch.py: one SDPA call per branch on gathered rows), forward and backward, median of
20 event-timed runs after warm-up. TFLOP/s count the same scored pairs as the C++ test:
4 D FLOPs per pair forward, 10 D backward, m (m + 1) / 2 pairs per causal block of m rows."""
import torch
import torch.nn.functional as F

from cuda_timing import median_ms
from dilated_torch import dilated_attention_head_groups, head_group_sizes


def dense(q, k, v):
    # (B, T, H, D) -> SDPA's (B, H, T, D), as the model peer (gpt_torch.py) calls it.
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                          is_causal=True).transpose(1, 2)


def time_case(name, attention, B, T, H, D, pairs):
    g = torch.Generator(device="cuda").manual_seed(7)
    q, k, v, dout = (torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(4))
    for x in (q, k, v):
        x.requires_grad_(True)
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.FLASH_ATTENTION):
        fwd = median_ms(lambda: attention(q, k, v))
        out = attention(q, k, v)
        bwd = median_ms(lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True))
    print(f"TORCH {name:<34} bf16 B={B} n={T} H={H} D={D}: forward {fwd:.3f} ms "
          f"({4 * D * pairs / fwd / 1e9:.1f} TFLOP/s), backward {bwd:.3f} ms "
          f"({10 * D * pairs / bwd / 1e9:.1f} TFLOP/s), forward+backward {fwd + bwd:.3f} ms")


def causal_pairs(m):
    return m * (m + 1) / 2


def main():
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    B, T, H, D = 16, 1024, 12, 64
    time_case("dense causal (flash SDPA)", dense, B, T, H, D, B * H * causal_pairs(T))

    T = 32768
    segments, rates = [2048, 4096, 8192, 16384, 32768], [1, 2, 4, 8, 16]
    pairs = sum(hg * (T // w) * causal_pairs(w // r)
                for w, r, hg in zip(segments, rates, head_group_sizes(H, len(segments))))
    time_case("dilated 32k head_groups (SDPA/branch)",
              lambda q, k, v: dilated_attention_head_groups(q, k, v, segments, rates, causal=True), 1, T, H, D,
              pairs)


if __name__ == "__main__":
    main()
