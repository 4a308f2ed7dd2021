#!/usr/bin/env python3
"""dilated_torch.dilated_attention_head_groups against an explicit-mask fp64 reference written from
docs/attention.md (head_groups): output and the gradients of q, k, v, on fresh random inputs.
Runs on the CPU; needs PyTorch >= 2.0 (scaled_dot_product_attention). Prints the shape and the max
error of every case; exits non-zero on a failure.

    python3 bench/reference/dilated_torch_test.py        (or: pytest bench/reference/dilated_torch_test.py)
"""
import math
import sys

import torch

from dilated_torch import dilated_attention_head_groups, head_group_sizes
from gpt_torch import dense_attention

TOLERANCE = 1e-10  # fp64, relative to the reference's largest magnitude

# (B, T, H, D, segment_lengths, dilation_rates)
CASES = [
    (2, 8, 2, 4, [4, 8], [1, 2]),  # docs/attention.md's worked example
    (2, 16, 5, 4, [4, 8], [1, 2]),  # uneven groups 3 + 2
    (1, 16, 4, 8, [4, 8, 16], [1, 2, 4]),  # uneven groups 2 + 1 + 1, offset 2 of rate 4
    (2, 32, 6, 4, [2, 4, 8, 16], [1, 2, 4, 8]),  # offsets 0, 1, 2, 3
    (1, 256, 12, 8, [8, 16, 32, 64, 128], [1, 2, 4, 8, 16]),  # the 32k config's pattern, scaled down
]


def reference(q, k, v, segment_lengths, dilation_rates, causal):
    B, T, H, D = q.shape
    G = len(segment_lengths)
    group_of_head = [g for g, n in enumerate(head_group_sizes(H, G)) for _ in range(n)]
    pos = torch.arange(T)
    heads = []
    for h in range(H):
        g = group_of_head[h]
        w, r = segment_lengths[g], dilation_rates[g]
        on = pos % r == g % r
        mask = (pos[:, None] // w == pos[None, :] // w) & on[:, None] & on[None, :]
        if causal:
            mask &= pos[None, :] <= pos[:, None]
        covered = mask.any(-1)  # (T,) rows that see at least one key
        s = q[:, :, h] @ k[:, :, h].transpose(-1, -2) / math.sqrt(D)  # (B, T, T)
        s = s.masked_fill(~mask, float("-inf")).masked_fill(~covered[:, None], 0.0)
        p = torch.softmax(s, dim=-1) * covered[:, None]
        heads.append(p @ v[:, :, h])  # (B, T, D)
    return torch.stack(heads, dim=2) / G


def max_error(got, want):
    return ((got - want).abs().max() / want.abs().max().clamp_min(1e-300)).item()


def run_case(B, T, H, D, segment_lengths, dilation_rates, causal, generator):
    q, k, v, dout = (torch.randn(B, T, H, D, dtype=torch.float64, generator=generator) for _ in range(4))
    results = []
    for fn in (dilated_attention_head_groups, reference):
        qq, kk, vv = (t.clone().requires_grad_() for t in (q, k, v))
        out = fn(qq, kk, vv, segment_lengths, dilation_rates, causal)
        out.backward(dout)
        results.append([out.detach(), qq.grad, kk.grad, vv.grad])
    errors = {name: max_error(g, w) for name, g, w in zip(("out", "dq", "dk", "dv"), *results)}
    ok = all(e <= TOLERANCE for e in errors.values())
    print(f"{'ok  ' if ok else 'FAIL'} (B,T,H,D)=({B},{T},{H},{D}) w={segment_lengths} r={dilation_rates} "
          f"causal={causal}: " + " ".join(f"{n} {e:.2e}" for n, e in errors.items()))
    return ok


def test_head_groups_matches_explicit_mask():
    generator = torch.Generator().manual_seed(20261127)
    results = [run_case(*case, causal, generator) for case in CASES for causal in (True, False)]
    assert all(results), "dilated_attention_head_groups differs from the explicit-mask reference"


def test_one_full_branch_is_dense_attention():
    generator = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(2, 64, 3, 8, dtype=torch.float64, generator=generator) for _ in range(3))
    for causal in (True, False):
        error = max_error(dilated_attention_head_groups(q, k, v, [64], [1], causal), dense_attention(q, k, v, causal))
        print(f"{'ok  ' if error <= TOLERANCE else 'FAIL'} one branch (64, 1) vs dense, causal={causal}: out {error:.2e}")
        assert error <= TOLERANCE


def test_uncovered_rows_are_zero():
    # Group 1 of the worked example (branch (8, 2), offset 1) covers only odd positions.
    q, k, v = (torch.randn(1, 8, 2, 4, dtype=torch.float64) for _ in range(3))
    out = dilated_attention_head_groups(q, k, v, [4, 8], [1, 2], causal=False)
    assert torch.all(out[:, 0::2, 1] == 0) and torch.all(out[:, 1::2, 1] != 0)


if __name__ == "__main__":
    failed = 0
    for test in (test_head_groups_matches_explicit_mask, test_one_full_branch_is_dense_attention,
                 test_uncovered_rows_are_zero):
        try:
            test()
        except AssertionError as e:
            print(f"FAIL {test.__name__}: {e}")
            failed += 1
    print(f"{3 - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
