#!/usr/bin/env python3
"""An independent PyTorch implementation of dilatron's GPT (dense causal attention), loaded from
`dilatron export` output. Prints the mean cross-entropy over the first (seq_len + 1)-token window
of a byte-level text file as `val_loss <float>`, to compare with `dilatron eval --data FILE`.

    python3 bench/reference/gpt_reference.py out/model.safetensors out/config.json window.txt
"""
import json
import math
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file


def norm(x, w, b, kind):
    if kind == "rmsnorm":
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w
    return F.layer_norm(x, (x.shape[-1],), w, b, eps=1e-5)


def rotary(x, theta):
    # x (T, H, D): pairs (2i, 2i+1) of each head rotated by position * theta^(-2i/D).
    T, _, D = x.shape
    pos = torch.arange(T, dtype=torch.float64)[:, None]
    freq = theta ** (-2.0 * torch.arange(D // 2, dtype=torch.float64) / D)
    angle = (pos * freq)[:, None, :]
    c, s = torch.cos(angle).to(x.dtype), torch.sin(angle).to(x.dtype)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x0 * c - x1 * s
    out[..., 1::2] = x0 * s + x1 * c
    return out


def forward(w, cfg, tokens):
    L, C, H = cfg["n_layers"], cfg["d_model"], cfg["n_heads"]
    D, T = C // H, tokens.shape[0]
    kind, position = cfg["norm"], cfg["position"]
    x = w["wte"][tokens]
    if position == "learned":
        x = x + w["wpe"][:T]
    for l in range(L):
        p = f"blocks.{l}."
        h = norm(x, w[p + "ln1.weight"], w.get(p + "ln1.bias"), kind)
        qkv = h @ w[p + "attn.qkv.weight"].T + w[p + "attn.qkv.bias"]
        q, k, v = (t.reshape(T, H, D) for t in qkv.split(C, dim=-1))
        if position == "rotary":
            q, k = rotary(q, 10000.0), rotary(k, 10000.0)
        att = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), is_causal=True)
        att = att.transpose(0, 1).reshape(T, C)
        x = x + att @ w[p + "attn.proj.weight"].T + w[p + "attn.proj.bias"]
        h = norm(x, w[p + "ln2.weight"], w.get(p + "ln2.bias"), kind)
        h = F.gelu(h @ w[p + "mlp.fc.weight"].T + w[p + "mlp.fc.bias"], approximate="tanh")
        x = x + h @ w[p + "mlp.proj.weight"].T + w[p + "mlp.proj.bias"]
    x = norm(x, w["ln_f.weight"], w.get("ln_f.bias"), kind)
    return x @ w["wte"].T


def main():
    weights_path, config_path, text_path = sys.argv[1:4]
    cfg = json.load(open(config_path))
    w = {name: t.double() for name, t in load_file(weights_path).items()}
    data = open(text_path, "rb").read()[: cfg["seq_len"] + 1]
    window = torch.tensor(list(data), dtype=torch.long)
    logits = forward(w, cfg, window[:-1])
    loss = F.cross_entropy(logits, window[1:]).item()
    assert math.isfinite(loss)
    print(f"tensors {len(w)} parameters {sum(t.numel() for t in w.values())}")
    print(f"val_loss {loss:.6f}")


if __name__ == "__main__":
    main()
