"""Dilated attention in head_groups mode the way the seed project (dilated-attention-pytorch's
DilatedAttention) computes it: one scaled_dot_product_attention call per branch on gathered rows.

Semantics are dilatron's head_groups mode (docs/attention.md): the H heads are split in order into
G = (number of branches) groups, the first H mod G groups one head larger. Group g uses only branch
g = (segment length w, dilation rate r): the sequence is cut into segments of w, and in each segment
the rows at offset o = g mod r, o + r, o + 2r, ... attend to each other (causal inside the dilated
segment when causal). Positions a group does not cover output 0, and the result is divided by G.

The seed has no longnet mode (every branch on every head, merged by log-sum-exp); this file has
none either.
"""
import torch
import torch.nn.functional as F


def head_group_sizes(n_heads, n_groups):
    """Heads per group, in order; the first n_heads mod n_groups groups get one extra head."""
    if not 1 <= n_groups <= n_heads:
        raise ValueError(f"head_groups needs 1 <= branches ({n_groups}) <= heads ({n_heads})")
    base, extra = divmod(n_heads, n_groups)
    return [base + (1 if g < extra else 0) for g in range(n_groups)]


def check_branches(seq_len, segment_lengths, dilation_rates):
    if len(segment_lengths) != len(dilation_rates) or not segment_lengths:
        raise ValueError("segment_lengths and dilation_rates must be non-empty lists of the same length")
    for w, r in zip(segment_lengths, dilation_rates):
        if r < 1 or w % r != 0 or seq_len % w != 0:
            raise ValueError(f"branch (w={w}, r={r}): need r >= 1, r | w and w | seq_len = {seq_len}")


def dilated_attention_head_groups(q, k, v, segment_lengths, dilation_rates, causal=True):
    """q, k, v (B, T, H, D) -> (B, T, H, D), with T divisible by every segment length."""
    B, T, H, D = q.shape
    check_branches(T, segment_lengths, dilation_rates)
    G = len(segment_lengths)
    out = q.new_zeros(q.shape)  # contiguous, whatever the strides of q
    h0 = 0
    for g, (w, r, hg) in enumerate(zip(segment_lengths, dilation_rates, head_group_sizes(H, G))):
        o, S, m = g % r, T // w, w // r

        def gather(x):
            # The group's heads, cut into S segments of w rows, keeping rows o, o+r, ...:
            # (B, S, m, hg, D) -> (B*S, hg, m, D), one SDPA batch entry per dilated segment.
            x = x[:, :, h0:h0 + hg].reshape(B, S, w, hg, D)[:, :, o::r]
            return x.reshape(B * S, m, hg, D).transpose(1, 2)

        y = F.scaled_dot_product_attention(gather(q), gather(k), gather(v), is_causal=causal)
        out.view(B, S, w, H, D)[:, :, o::r, h0:h0 + hg] = y.transpose(1, 2).reshape(B, S, m, hg, D)
        h0 += hg
    return out / G
