#!/usr/bin/env python3
"""An independent PyTorch implementation of dilatron's GPT (dense causal attention), loaded from
`dilatron export` output. Prints the mean cross-entropy over the first (seq_len + 1)-token window
of a byte-level text file as `val_loss <float>`, to compare with `dilatron eval --data FILE`.
The model itself is in gpt_torch.py.

    python3 bench/reference/gpt_reference.py out/model.safetensors out/config.json window.txt
"""
import json
import math
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from gpt_torch import forward


def main():
    weights_path, config_path, text_path = sys.argv[1:4]
    cfg = json.load(open(config_path))
    w = {name: t.double() for name, t in load_file(weights_path).items()}
    data = open(text_path, "rb").read()[: cfg["seq_len"] + 1]
    window = torch.tensor(list(data), dtype=torch.long)
    logits = forward(w, cfg, window[None, :-1])[0]
    loss = F.cross_entropy(logits, window[1:]).item()
    assert math.isfinite(loss)
    print(f"tensors {len(w)} parameters {sum(t.numel() for t in w.values())}")
    print(f"val_loss {loss:.6f}")


if __name__ == "__main__":
    main()
