#!/usr/bin/env bash
# gpu_bench.sh: dilatron against its PyTorch peer on one GPU, same config, same batch shape.
#
#   source .devkit/env.sh && bench/gpu_bench.sh CONFIG [STEPS] [--set key.path=value ...]
#
# From the repository root on the GPU machine, with .devkit/ holding dilatron (on the build
# machine: bazel build //trainer:dilatron && ../shared/tools/devkit bazel-bin/trainer/dilatron).
#  1. dilatron trains CONFIG for STEPS steps (default 20) into a fresh run dir under /tmp
#     (no eval, no sample, checkpoint only at the end, a metrics line every step); its figure is
#     the median over the steps after the first 3 of metrics.jsonl's tokens_per_s and step_time_s.
#  2. bench/reference/gpt_torch_bench.py trains the same config in PyTorch (3 warm-up steps, the
#     first of which compiles, then STEPS - 3 timed; median reported).
#  3. Both get MFU from the same FLOPs per token (gpt_torch_bench.py --flops-only: nanoGPT's
#     6 N + attention count, H100 SXM bf16 peak 989e12), and a two-row table is printed.
# Each --set goes to both. Raw outputs go to $OUT when set (else to the /tmp work dir).
# Environment: DILATRON (default .devkit/bin/dilatron); DILATRON_LAUNCH (default
# "mpirun -np 1 --bind-to none", empty: no launcher); TORCH_BENCH_ARGS (extra arguments of
# gpt_torch_bench.py, e.g. "--attention dense" or "--sdpa any").
set -euo pipefail

die() { echo "gpu_bench: $*" >&2; exit 2; }
usage="usage: bench/gpu_bench.sh CONFIG [STEPS] [--set key.path=value ...]"
[ $# -ge 1 ] || die "$usage"
config=$1
shift
steps=20
if [ $# -ge 1 ] && [[ $1 != --* ]]; then
  steps=$1
  shift
fi
[[ $steps =~ ^[0-9]+$ ]] && [ "$steps" -gt 3 ] || die "STEPS must be an integer > 3 (3 are warm-up), got '$steps'; $usage"
overrides=()
while [ $# -ge 1 ]; do
  [ "$1" = --set ] && [ $# -ge 2 ] || die "expected --set key.path=value, got '$1'; $usage"
  overrides+=(--set "$2")
  shift 2
done

[ -f bench/reference/gpt_torch_bench.py ] || die "run from the repository root"
[ -f "$config" ] || die "no config file '$config'"
dilatron=${DILATRON:-.devkit/bin/dilatron}
[ -x "$dilatron" ] || die "$dilatron is missing: build and pack it (bazel build //trainer:dilatron && ../shared/tools/devkit bazel-bin/trainer/dilatron), carry .devkit, 'source .devkit/env.sh'"
read -r -a launch <<< "${DILATRON_LAUNCH-mpirun -np 1 --bind-to none}"  # set and empty: run it directly
read -r -a torch_args <<< "${TORCH_BENCH_ARGS:-}"
command -v python3 > /dev/null || die "python3 not found"

# The GPT-2 configs read the tinyshakespeare bytes as a uint16 token shard (configs/gpt2-124m-1k.yaml).
shard=runs/data/tinyshakespeare-bytes.bin
[ -f "$shard" ] || python3 bench/reference/text_to_byte_shard.py data/tinyshakespeare.txt "$shard"

work=$(mktemp -d /tmp/gpu_bench.XXXXXX)
run_dir=$work/run
out=${OUT:-$work}
mkdir -p "$out"
name=$(basename "$config" .yaml)
command -v nvidia-smi > /dev/null && nvidia-smi -L > "$out/$name.nvidia-smi.txt" 2>&1 || true

echo "gpu_bench: dilatron train, $steps steps of $config, run dir $run_dir" >&2
if ! ${launch[@]+"${launch[@]}"} "$dilatron" train --config "$config" ${overrides[@]+"${overrides[@]}"} \
    --set logging.run_dir="$run_dir" --set schedule.max_steps="$steps" --set schedule.warmup_steps="$steps" \
    --set logging.every=1 --set logging.progress_bar=false --set data.eval_every=0 \
    --set checkpoint.every=0 --set sample.tokens=0 > "$out/$name.dilatron.log" 2>&1; then
  tail -n 20 "$out/$name.dilatron.log" >&2
  die "dilatron train failed (log above, whole log in $out/$name.dilatron.log)"
fi
[ -s "$run_dir/metrics.jsonl" ] || die "dilatron wrote no $run_dir/metrics.jsonl (see $out/$name.dilatron.log)"
cp "$run_dir/metrics.jsonl" "$out/$name.dilatron.metrics.jsonl"
cp "$run_dir/config.yaml" "$out/$name.dilatron.config.yaml"
rm -rf "$run_dir/checkpoints"  # the final checkpoint is not needed: GiBs under /tmp

python3 bench/reference/gpt_torch_bench.py --config "$config" ${overrides[@]+"${overrides[@]}"} --flops-only \
  > "$out/$name.flops.json" || die "gpt_torch_bench.py --flops-only failed on $config"

echo "gpu_bench: PyTorch peer, 3 warm-up + $((steps - 3)) timed steps" >&2
if ! python3 bench/reference/gpt_torch_bench.py --config "$config" ${overrides[@]+"${overrides[@]}"} \
    --warmup 3 --steps $((steps - 3)) ${torch_args[@]+"${torch_args[@]}"} \
    > "$out/$name.pytorch.json" 2> "$out/$name.pytorch.log"; then
  tail -n 20 "$out/$name.pytorch.log" >&2
  die "the PyTorch peer failed (log above, whole log in $out/$name.pytorch.log)"
fi

python3 - "$out" "$name" <<'PY'
import json, statistics, sys

out, name = sys.argv[1], sys.argv[2]
prefix = f"{out}/{name}"
rows = [json.loads(line) for line in open(f"{prefix}.dilatron.metrics.jsonl") if line.strip()]
timed = [r for r in rows if r["step"] > 3]  # steps 1..3 warm up (allocations, cuBLASLt heuristics)
if not timed:
    sys.exit(f"gpu_bench: no steps after the 3 warm-up steps in {prefix}.dilatron.metrics.jsonl")
flops = json.load(open(f"{prefix}.flops.json"))
tokens_per_s = statistics.median(r["tokens_per_s"] for r in timed)
ours = {"impl": "dilatron", "config": flops["config"], "attention": flops["attention"],
        "tokens_per_s": round(tokens_per_s, 1),
        "step_ms": round(statistics.median(r["step_time_s"] for r in timed) * 1e3, 3),
        "mfu": round(tokens_per_s * flops["flops_per_token"] / flops["peak_flops"], 4),
        "flops_per_token": flops["flops_per_token"], "timed_steps": len(timed), "last_loss": timed[-1]["loss"]}
json.dump(ours, open(f"{prefix}.dilatron.json", "w"))
lines = [line for line in open(f"{prefix}.pytorch.json") if line.strip()]
peer = json.loads(lines[-1])
table = [f"{name}: {flops['params']:,} parameters, {peer['batch']} x {peer['seq_len']} tokens per step "
         f"({peer['accum']} micro-batches of {peer['micro_batch']}), {peer['device']}, torch {peer['torch']}",
         f"{'impl':<10} {'attention':<38} {'tokens/s':>12} {'step ms':>10} {'MFU':>7} {'peak GiB':>9}"]
for r, mem in ((ours, "-"), (peer, f"{peer['peak_mem_gib']:.2f}")):
    table.append(f"{r['impl']:<10} {r['attention']:<38} {r['tokens_per_s']:>12,.0f} {r['step_ms']:>10.2f} "
                 f"{r['mfu']:>7.1%} {mem:>9}")
table.append(f"MFU = tokens/s x FLOPs per token / {flops['peak_flops']:.3g}; FLOPs per token: dilatron "
             f"{ours['flops_per_token']:,}, PyTorch {peer['flops_per_token']:,} (bench/reference/gpt_torch_bench.py)")
if peer.get("note"):
    table.append("note: " + peer["note"])
text = "\n".join(table)
print(text)
open(f"{prefix}.table.txt", "w").write(text + "\n")
PY
echo "gpu_bench: raw outputs in $out" >&2
