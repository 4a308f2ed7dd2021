"""dilatron's GPT written independently in PyTorch, as plain functions over a dict of tensors named
like dilatron's parameters (model/gpt.h, gpt_param_specs; the names of `dilatron export`).

Two users: gpt_reference.py (fp64 on the CPU, on exported weights, to check dilatron's loss) and
gpt_torch_bench.py (fp32 master weights under bf16 autocast on the GPU, as dilatron's speed peer).

Semantics (model/gpt.h): pre-norm blocks x += attn(norm1(x)); x += mlp(norm2(x)); a final norm;
tied LM head logits = x . wte^T. qkv is one Linear (3C, C) with rows [q; k; v]. GELU is the tanh
approximation (model/gelu.cc). Norm eps 1e-5 (model/layernorm.h). Positions: rotary on q and k,
or a learned table wpe added to the token embedding.

`cfg` is a flat dict with the keys of dilatron's config.json (n_layers, d_model, n_heads,
vocab_size, seq_len, d_ff, position, norm; rope_theta optional, 10000 by default).
"""
import math

import torch
import torch.nn.functional as F

NORM_EPS = 1e-5


def ff_width(cfg):
    return cfg.get("d_ff", 0) or 4 * cfg["d_model"]


def param_specs(cfg):
    """[(name, shape, weight_decay)] in dilatron's order; weight decay only on 2-D matmul weights."""
    L, C, V, F_ = cfg["n_layers"], cfg["d_model"], cfg["vocab_size"], ff_width(cfg)
    layernorm = cfg["norm"] == "layernorm"

    def norm_specs(prefix):
        return [(prefix + ".weight", (C,), False)] + ([(prefix + ".bias", (C,), False)] if layernorm else [])

    specs = [("wte", (V, C), False)]
    if cfg["position"] == "learned":
        specs.append(("wpe", (cfg["seq_len"], C), False))
    for l in range(L):
        p = f"blocks.{l}."
        specs += norm_specs(p + "ln1")
        specs += [(p + "attn.qkv.weight", (3 * C, C), True), (p + "attn.qkv.bias", (3 * C,), False),
                  (p + "attn.proj.weight", (C, C), True), (p + "attn.proj.bias", (C,), False)]
        specs += norm_specs(p + "ln2")
        specs += [(p + "mlp.fc.weight", (F_, C), True), (p + "mlp.fc.bias", (F_,), False),
                  (p + "mlp.proj.weight", (C, F_), True), (p + "mlp.proj.bias", (C,), False)]
    specs += norm_specs("ln_f")
    return specs


def init_params(cfg, device, init_std=0.02, generator=None):
    """fp32 leaf tensors with dilatron's init distribution (not its Philox values): matmul weights and
    embeddings N(0, init_std), output projections N(0, init_std / sqrt(2 L)), biases 0, norm weights 1."""
    proj_std = init_std / math.sqrt(2 * cfg["n_layers"])
    params = {}
    for name, shape, _ in param_specs(cfg):
        t = torch.empty(shape, dtype=torch.float32, device=device)
        if name.endswith("ln1.weight") or name.endswith("ln2.weight") or name == "ln_f.weight":
            t.fill_(1.0)
        elif name.endswith(".bias"):
            t.zero_()
        elif name.endswith("attn.proj.weight") or name.endswith("mlp.proj.weight"):
            t.normal_(0.0, proj_std, generator=generator)
        else:
            t.normal_(0.0, init_std, generator=generator)
        params[name] = t.requires_grad_()
    return params


def norm(x, w, b, kind):
    if kind == "rmsnorm":
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + NORM_EPS) * w
    return F.layer_norm(x, (x.shape[-1],), w, b, eps=NORM_EPS)


def rotary(x, theta):
    # x (B, T, H, D): pairs (2i, 2i+1) of each head rotated by position * theta^(-2i/D).
    T, D = x.shape[1], x.shape[3]
    pos = torch.arange(T, dtype=torch.float64, device=x.device)[:, None]
    freq = theta ** (-2.0 * torch.arange(D // 2, dtype=torch.float64, device=x.device) / D)
    angle = (pos * freq)[:, None, :]  # (T, 1, D/2), broadcast over heads
    c, s = torch.cos(angle).to(x.dtype), torch.sin(angle).to(x.dtype)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x0 * c - x1 * s
    out[..., 1::2] = x0 * s + x1 * c
    return out


def dense_attention(q, k, v, causal=True):
    # q, k, v (B, T, H, D) -> (B, T, H, D); SDPA wants (B, H, T, D). Scale 1/sqrt(D) as dilatron.
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal)
    return out.transpose(1, 2)


def block(w, cfg, l, x, attention):
    p = f"blocks.{l}."
    B, T, C = x.shape
    H = cfg["n_heads"]
    kind = cfg["norm"]
    h = norm(x, w[p + "ln1.weight"], w.get(p + "ln1.bias"), kind)
    qkv = F.linear(h, w[p + "attn.qkv.weight"], w[p + "attn.qkv.bias"])  # (B, T, 3C)
    q, k, v = (t.reshape(B, T, H, C // H) for t in qkv.split(C, dim=-1))
    if cfg["position"] == "rotary":
        theta = cfg.get("rope_theta", 10000.0)
        q, k = rotary(q, theta), rotary(k, theta)
    att = attention(q, k, v).reshape(B, T, C)
    x = x + F.linear(att, w[p + "attn.proj.weight"], w[p + "attn.proj.bias"])
    h = norm(x, w[p + "ln2.weight"], w.get(p + "ln2.bias"), kind)
    h = F.gelu(F.linear(h, w[p + "mlp.fc.weight"], w[p + "mlp.fc.bias"]), approximate="tanh")
    return x + F.linear(h, w[p + "mlp.proj.weight"], w[p + "mlp.proj.bias"])


def forward(w, cfg, tokens, attention=dense_attention, recompute=False):
    """tokens (B, T) int64 -> logits (B, T, V). attention(q, k, v) maps (B, T, H, D) to (B, T, H, D).
    recompute: keep only each block's input and recompute the block in the backward (model.recompute)."""
    T = tokens.shape[1]
    x = w["wte"][tokens]
    if cfg["position"] == "learned":
        x = x + w["wpe"][:T]
    for l in range(cfg["n_layers"]):
        if recompute:
            from torch.utils.checkpoint import checkpoint

            x = checkpoint(block, w, cfg, l, x, attention, use_reentrant=False)
        else:
            x = block(w, cfg, l, x, attention)
    x = norm(x, w["ln_f.weight"], w.get("ln_f.bias"), cfg["norm"])
    return F.linear(x, w["wte"])
