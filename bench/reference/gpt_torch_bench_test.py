#!/usr/bin/env python3
"""The parts of gpt_torch_bench.py that need no torch: the config reader (the fallback parser must
read every shipped config as PyYAML does) and the FLOPs count, against numbers worked out by hand.

    python3 bench/reference/gpt_torch_bench_test.py        (or: pytest bench/reference/gpt_torch_bench_test.py)
"""
import glob
import os
import sys

import gpt_torch_bench as bench

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def config_path(name):
    return os.path.join(ROOT, "configs", name)


def test_fallback_parser_reads_shipped_configs_like_pyyaml():
    try:
        import yaml
    except ImportError:
        print("skip: PyYAML is not installed, nothing to compare with")
        return
    paths = sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml")))
    assert paths, "no configs found"
    for path in paths:
        text = open(path).read()
        assert bench.parse_simple_yaml(text) == (yaml.safe_load(text) or {}), path


def test_overrides_and_defaults():
    cfg = bench.load_config(config_path("gpt2-124m-dilated-32k.yaml"),
                            ["attention.mode=head_groups", "attention.dilation_rates=[1, 2, 4, 8, 8]",
                             "model.recompute=false", "optimizer.lr=1e-4"])
    assert cfg["attention"]["mode"] == "head_groups"
    assert cfg["attention"]["dilation_rates"] == [1, 2, 4, 8, 8]
    assert cfg["model"]["recompute"] is False and cfg["optimizer"]["lr"] == 1e-4
    assert cfg["model"]["d_ff"] == 0 and cfg["optimizer"]["beta2"] == 0.95  # dilatron's defaults


def test_gpt2_124m_params_and_flops():
    cfg = bench.load_config(config_path("gpt2-124m-1k.yaml"), [])
    # llm.c's GPT-2 124M with the vocabulary padded to 50304 has 124,475,904 parameters
    # (`dilatron config` prints the same); wpe is 1024 x 768.
    assert bench.num_params(cfg["model"]) == (124_475_904, 786_432)
    # 6 N (N without wpe) + 12 L C T = 6 * 123,689,472 + 12 * 12 * 768 * 1024
    assert bench.flops_per_token(cfg["model"], cfg["attention"], "dense", None) == 742_136_832 + 113_246_208


def test_dilated_flops():
    cfg = bench.load_config(config_path("gpt2-124m-dilated-32k.yaml"), [])
    m, a = cfg["model"], cfg["attention"]
    assert bench.num_params(m) == (148_855_296, 25_165_824)
    # longnet: sum w / r^2 = 2048 + 1024 + 512 + 256 + 128 = 3968 (docs/attention.md "Cost");
    # forward per token per layer 4 * D * H * 3968 with D = 64, H = 12; times 3 L for fwd + bwd.
    assert bench.flops_per_token(m, a, "dilated", "longnet") == 742_136_832 + 3 * 12 * 4 * 64 * 12 * 3968
    # head_groups: groups of 3, 3, 2, 2, 2 heads, one branch each.
    per_layer = 4 * 64 * (3 * 2048 + 3 * 1024 + 2 * 512 + 2 * 256 + 2 * 128)
    assert bench.flops_per_token(m, a, "dilated", "head_groups") == 742_136_832 + 3 * 12 * per_layer
    # One branch (T, 1) is dense attention.
    one = {"segment_lengths": [32768], "dilation_rates": [1]}
    assert bench.flops_per_token(m, one, "dilated", "longnet") == bench.flops_per_token(m, one, "dense", None)


if __name__ == "__main__":
    tests = [test_fallback_parser_reads_shipped_configs_like_pyyaml, test_overrides_and_defaults,
             test_gpt2_124m_params_and_flops, test_dilated_flops]
    failed = 0
    for test in tests:
        try:
            test()
            print(f"ok   {test.__name__}")
        except AssertionError as e:
            print(f"FAIL {test.__name__}: {e!r}")
            failed += 1
    print(f"{len(tests) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
