#!/usr/bin/env python3
"""The PyTorch peer of a dilatron GPU training run: the same model, batch and optimizer built from a
dilatron YAML config, trained on random tokens, timed, and reported as ONE JSON line.

    python3 bench/reference/gpt_torch_bench.py --config configs/gpt2-124m-1k.yaml
    python3 bench/reference/gpt_torch_bench.py --config configs/gpt2-124m-dilated-32k.yaml
    python3 bench/reference/gpt_torch_bench.py --config X.yaml --flops-only   # no torch, no GPU

How it trains (the usual strong PyTorch baseline): fp32 master weights, bf16 autocast, fused AdamW
with dilatron's hyperparameters and weight-decay split, global-norm gradient clipping, torch.compile,
gradient accumulation over data.batch_size / data.micro_batch_size micro-batches of (micro, seq_len)
tokens, activation checkpointing per block when model.recompute. Attention:
  dense config:    F.scaled_dot_product_attention(is_causal=attention.causal), flash backend only;
  dilated config:  dilated_torch.py, the seed project's SDPA-per-branch computation of head_groups.
                   The seed has no longnet mode: for a longnet config the peer runs head_groups and
                   says so in "note" (its FLOPs are then about 1/G of the config's attention).
  --attention dense forces dense causal SDPA on any config (e.g. flash at 32k as a peer).

MFU (nanoGPT's estimate_mfu, the PaLM appendix B count), per token, forward + backward = 3 x forward:
  flops_per_token = 6 * N + 3 * L * attention_forward_flops_per_token_per_layer
  N = all parameters except the learned position table wpe (the tied wte is kept: it is the LM-head
      matmul); attention forward per token per layer, counted WITHOUT the causal discount as nanoGPT
      does: dense 4 * C * T (so the term is nanoGPT's 12 * L * C * T); dilated sum over branches of
      4 * D * H_b * w_b / r_b^2 (docs/attention.md "Cost"; H_b = H in longnet, the group's heads in
      head_groups), which is 4 * C * T for the one branch (T, 1).
  mfu = tokens_per_s * flops_per_token / peak, peak = 989e12 (H100 SXM bf16 dense, no sparsity).
"""
import argparse
import json
import statistics
import sys
import time

H100_BF16_DENSE_PEAK = 989e12

# dilatron's defaults for the keys the peer reads (docs/config.md); other keys are ignored here,
# dilatron itself validates the file.
DEFAULTS = {
    "seed": 1337,
    "model": {"n_layers": 4, "d_model": 128, "n_heads": 4, "vocab_size": 256, "seq_len": 128, "d_ff": 0,
              "position": "rotary", "norm": "layernorm", "rope_theta": 10000.0, "init_std": 0.02,
              "recompute": False},
    "attention": {"kind": "dense", "mode": "longnet", "segment_lengths": [], "dilation_rates": [],
                  "causal": True},
    "data": {"batch_size": 16, "micro_batch_size": 0},
    "optimizer": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1, "grad_clip": 1.0},
}


# ---------------------------------------------------------------------------------------------
# The config: PyYAML when present, else a reader for the subset dilatron's configs use (nested
# block maps, scalars, flow lists of scalars, comments).

def parse_scalar(text):
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1].strip()
        return [parse_scalar(item) for item in inner.split(",")] if inner else []
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    if text in ("true", "false"):
        return text == "true"
    if text in ("", "~", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def strip_comment(line):
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def parse_simple_yaml(text):
    root = {}
    stack = [(-1, root)]  # (indent, map)
    for number, raw in enumerate(text.splitlines(), 1):
        line = strip_comment(raw).rstrip()
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        key, sep, value = line.strip().partition(":")
        if not sep:
            raise ValueError(f"line {number}: expected 'key: value', got {raw!r} (install PyYAML for full YAML)")
        while indent <= stack[-1][0]:
            stack.pop()
        parent = stack[-1][1]
        if value.strip():
            parent[key.strip()] = parse_scalar(value)
        else:
            parent[key.strip()] = {}
            stack.append((indent, parent[key.strip()]))
    return root


def parse_yaml(text):
    try:
        import yaml
    except ImportError:
        return parse_simple_yaml(text)
    return yaml.safe_load(text) or {}


def load_config(path, overrides):
    """The YAML file with dilatron's --set key.path=value overrides applied, over DEFAULTS."""
    with open(path) as f:
        loaded = parse_yaml(f.read())
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set: expected key.path=value, got {override!r}")
        node = loaded
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = parse_yaml(f"v: {value}")["v"]
    cfg = {}
    for section, defaults in DEFAULTS.items():
        given = loaded.get(section)
        if not isinstance(defaults, dict):
            cfg[section] = defaults if given is None else given
            continue
        cfg[section] = dict(defaults, **(given or {}))
        for key, default in defaults.items():
            # PyYAML (YAML 1.1) reads 1e-4 as a string; dilatron's reader takes it as a number.
            if isinstance(default, float) and isinstance(cfg[section][key], str):
                cfg[section][key] = float(cfg[section][key])
    return cfg


# ---------------------------------------------------------------------------------------------
# FLOPs (see the module docstring).

def head_group_sizes(n_heads, n_groups):
    base, extra = divmod(n_heads, n_groups)
    return [base + (1 if g < extra else 0) for g in range(n_groups)]


def num_params(model):
    """(all parameters, the learned position table) of dilatron's gpt_param_specs."""
    L, C, V = model["n_layers"], model["d_model"], model["vocab_size"]
    F_ = model["d_ff"] or 4 * C
    norm = 2 * C if model["norm"] == "layernorm" else C
    per_block = 2 * norm + (3 * C * C + 3 * C) + (C * C + C) + (F_ * C + F_) + (C * F_ + C)
    wpe = model["seq_len"] * C if model["position"] == "learned" else 0
    return V * C + wpe + L * per_block + norm, wpe


def attention_forward_flops(model, attention, kind, mode):
    """Forward FLOPs per token per layer, non-causal count; kind/mode: what actually runs."""
    C, H, T = model["d_model"], model["n_heads"], model["seq_len"]
    D = C // H
    if kind == "dense":
        return 4 * C * T
    branches = list(zip(attention["segment_lengths"], attention["dilation_rates"]))
    heads = [H] * len(branches) if mode == "longnet" else head_group_sizes(H, len(branches))
    return sum(4 * D * h * w / (r * r) for h, (w, r) in zip(heads, branches))


def flops_per_token(model, attention, kind, mode):
    n_all, wpe = num_params(model)
    return int(round(6 * (n_all - wpe) + 3 * model["n_layers"] * attention_forward_flops(model, attention, kind, mode)))


def describe_attention(a):
    """The config's attention in a few words, for the table."""
    causal = " causal" if a["causal"] else ""
    if a["kind"] == "dense":
        return "dense" + causal
    return f"dilated {a['mode']}{causal}, {len(a['segment_lengths'])} branches"


def peer_attention(cfg, choice):
    """(kind, mode, description, note) of the attention the peer runs."""
    a = cfg["attention"]
    if choice == "dense" or a["kind"] == "dense":
        note = "" if a["kind"] == "dense" else "the config is dilated; the peer ran dense attention (--attention dense)"
        return "dense", None, "sdpa dense causal" if a["causal"] else "sdpa dense", note
    note = ""
    if a["mode"] == "longnet":
        note = ("the seed (dilated-attention-pytorch) implements head_groups only; the config's mode is "
                "longnet, so the peer ran head_groups, about 1/G of the config's attention FLOPs")
    return "dilated", "head_groups", "seed head_groups (SDPA per branch)", note


# ---------------------------------------------------------------------------------------------
# The timed run.

def run(args, cfg):
    import torch
    import torch.nn.functional as F

    import gpt_torch
    from dilated_torch import dilated_attention_head_groups

    if not torch.cuda.is_available():
        raise SystemExit("gpt_torch_bench: no CUDA device visible to PyTorch")
    model, a, data, opt = cfg["model"], cfg["attention"], cfg["data"], cfg["optimizer"]
    kind, mode, described, note = peer_attention(cfg, args.attention)
    if args.sdpa == "flash":
        # Only the flash kernel: a shape it cannot take fails loudly instead of silently using another.
        torch.backends.cuda.enable_flash_sdp(True)
        torch.backends.cuda.enable_mem_efficient_sdp(False)
        torch.backends.cuda.enable_math_sdp(False)
        torch.backends.cuda.enable_cudnn_sdp(False)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True

    T, causal = model["seq_len"], a["causal"]
    batch = data["batch_size"]
    micro = data["micro_batch_size"] or batch
    if batch % micro:
        raise SystemExit(f"data.micro_batch_size = {micro} must divide data.batch_size = {batch}")
    accum = batch // micro

    if kind == "dense":
        def attention(q, k, v):
            return gpt_torch.dense_attention(q, k, v, causal)
    else:
        segments, rates = list(a["segment_lengths"]), list(a["dilation_rates"])

        def attention(q, k, v):
            return dilated_attention_head_groups(q, k, v, segments, rates, causal)

    device = torch.device("cuda")
    generator = torch.Generator(device=device).manual_seed(cfg["seed"])
    params = gpt_torch.init_params(model, device, model["init_std"], generator)
    decay = {name for name, _, wd in gpt_torch.param_specs(model) if wd}
    groups = [{"params": [p for n, p in params.items() if n in decay], "weight_decay": opt["weight_decay"]},
              {"params": [p for n, p in params.items() if n not in decay], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=opt["lr"], betas=(opt["beta1"], opt["beta2"]), eps=opt["eps"],
                                  fused=True)
    recompute = bool(model["recompute"])

    def loss_of(tokens, targets):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = gpt_torch.forward(params, model, tokens, attention, recompute)  # (micro, T, V)
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())

    compiled = loss_of if args.no_compile else torch.compile(loss_of)
    # Random tokens, drawn once: per micro-batch (micro, T + 1) windows cut into inputs and shifted
    # targets, each its own contiguous tensor (same strides and offset every call: no recompiles).
    windows = torch.randint(0, model["vocab_size"], (accum, micro, T + 1), device=device, generator=generator)
    micro_batches = [(w[:, :-1].contiguous(), w[:, 1:].contiguous()) for w in windows]
    all_params = list(params.values())

    def step():
        for tokens, targets in micro_batches:
            loss = compiled(tokens, targets)
            (loss / accum).backward()  # every token of the batch weighs 1 / (batch * T), as in dilatron
        if opt["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(all_params, opt["grad_clip"], foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    for _ in range(args.warmup):  # the first one compiles
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        loss = step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    last_loss = loss.item()
    if last_loss != last_loss:
        raise SystemExit("gpt_torch_bench: the loss is NaN")

    seconds = statistics.median(times)
    tokens_per_s = batch * T / seconds
    fpt = flops_per_token(model, a, kind, mode)
    n_all, wpe = num_params(model)
    return {
        "impl": "pytorch",
        "config": args.config,
        "attention": described,
        "sdpa": args.sdpa,
        "compile": not args.no_compile,
        "tokens_per_s": round(tokens_per_s, 1),
        "step_ms": round(seconds * 1e3, 3),
        "step_ms_min": round(min(times) * 1e3, 3),
        "mfu": round(tokens_per_s * fpt / args.peak_flops, 4),
        "flops_per_token": fpt,
        "config_flops_per_token": flops_per_token(model, a, a["kind"], a["mode"]),
        "peak_flops": args.peak_flops,
        "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3),
        "params": n_all,
        "params_without_wpe": n_all - wpe,
        "batch": batch,
        "micro_batch": micro,
        "accum": accum,
        "seq_len": T,
        "recompute": recompute,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "last_loss": round(last_loss, 4),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(),
        "note": note,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="dilatron YAML config")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="override a config key as dilatron does: --set key.path=value (repeatable)")
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps (median reported)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (the first compiles)")
    parser.add_argument("--attention", choices=["auto", "dense"], default="auto",
                        help="auto: dense SDPA for a dense config, the seed's head_groups for a dilated one; "
                             "dense: dense SDPA whatever the config says")
    parser.add_argument("--sdpa", choices=["flash", "any"], default="flash",
                        help="flash: only the flash SDPA backend; any: let PyTorch choose (e.g. cuDNN)")
    parser.add_argument("--no-compile", action="store_true", help="run eagerly (for debugging)")
    parser.add_argument("--peak-flops", type=float, default=H100_BF16_DENSE_PEAK,
                        help="the device's dense bf16 peak in FLOP/s, for MFU (default: H100 SXM, 989e12)")
    parser.add_argument("--flops-only", action="store_true",
                        help="print the config's parameters and FLOPs per token as JSON and exit (no torch)")
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 1:
        parser.error("--steps and --warmup must be >= 1")
    cfg = load_config(args.config, args.overrides)
    if args.flops_only:
        model, a = cfg["model"], cfg["attention"]
        n_all, wpe = num_params(model)
        print(json.dumps({"config": args.config, "attention": describe_attention(a),
                          "params": n_all, "params_without_wpe": n_all - wpe,
                          "flops_per_token": flops_per_token(model, a, a["kind"], a["mode"]),
                          "peak_flops": args.peak_flops}))
        return
    print(json.dumps(run(args, cfg)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
