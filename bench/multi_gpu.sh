#!/usr/bin/env bash
# multi_gpu.sh: the runs of the multi-GPU issue on one host with N GPUs (N = 2, 4 or 8), one
# command per machine start. From the repository root, with the kit unpacked:
#
#   source .devkit/env.sh && bench/multi_gpu.sh N [PART ...]
#
# PARTs, in this order by default (each one's logs under $OUT/PART, its summary lines in
# $OUT/summary.txt, and printed):
#   collectives  collectives_gpu_test_bin on n = 2, 4, .. N ranks (NCCL and MPI on device
#                buffers, wrong-element counts, 256 MiB all_reduce bus bandwidth), and NCCL's own
#                all_reduce of the same size through torchrun (bench/reference/nccl_allreduce_bench.py)
#   ring         ring_attention_gpu_test_bin on n ranks (outputs, lse and gradients of the ring over
#                NCCL against one rank, both modes, causal; its OVERLAP lines: the exchange's time
#                alone, the compute's alone, both overlapped and serial, and the fraction hidden)
#   parity       50 steps of configs/test-micro.yaml with dilated attention and ZeRO-3 on 1 rank
#                and on N ranks in every layout SP x DP = N (SP = N, DP = N, and 2 x N/2, N/2 x 2):
#                losses within bf16 tolerance of 1 rank (2e-3 relative at every step, median
#                gradient-norm difference 1e-3); the layout 2 x N/2 (SP = N when N = 2) stopped at
#                step 25 and resumed is bit-identical; its step-25 checkpoint resumed on N/2 ranks
#                continues to step 50 within the same tolerance
#   weak         the 124M dilated model with WEAK_TOKENS (131072) tokens per GPU, SP = n for
#                n = 1, 2, .. N: tokens/s per GPU and efficiency against 1 GPU; with ZeRO-3 too, at
#                zero.prefetch_depth 1 and 0 (gathers waited for at once), whose difference is the
#                time the prefetch hides; at SP = N once more with parallel.overlap_ring=false (the
#                ring's K/V exchange waited before each step computes), giving the fraction of the
#                exchange the overlap hides, (T_serial - T_overlap) / (T_serial - T_1), with T_1 the
#                1-GPU step: this assumes a GPU's compute at SP = N equals the 1-GPU run's
#   longest      the 124M dilated model with SP = N at LONGEST (8388608, space-separated list) tokens
#   largest      GPT shapes LARGEST ("L C H" list) with ZeRO-3 and CPU offload on N ranks
#
# Environment: DILATRON (.devkit/bin/dilatron), BIN (.devkit/bin: the test programs), OUT
# (/tmp/multi_gpu), MPIRUN ("mpirun --bind-to none"), STEPS (weak: 6; longest and largest run 2).
# DEVICE=cpu runs parity, weak, longest and largest on the CPU over MPI, a check of this script
# itself on a machine without GPUs; WEAK_CONFIG, WEAK_TOKENS and SEGMENT0 (2048, the first
# dilated segment) shrink the shapes for it (bench/multi_gpu_test.sh).
set -uo pipefail

die() { echo "multi_gpu: $*" >&2; exit 2; }
usage="usage: bench/multi_gpu.sh N [collectives|ring|parity|weak|longest|largest ...], N = 2, 4, 8, .."
[ $# -ge 1 ] && [[ $1 =~ ^[0-9]+$ ]] && [ "$1" -ge 2 ] && [ $(($1 & ($1 - 1))) -eq 0 ] || die "$usage"
N=$1; shift
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(collectives ring parity weak longest largest)
[ -f configs/test-micro.yaml ] || die "run from the repository root"
dilatron=${DILATRON:-.devkit/bin/dilatron}
bin=${BIN:-.devkit/bin}
device=${DEVICE:-cuda}
out=${OUT:-/tmp/multi_gpu}
steps=${STEPS:-6}
read -r -a mpirun <<< "${MPIRUN:-mpirun --bind-to none}"
[ -x "$dilatron" ] || die "$dilatron is missing: build and pack it (bazel build //trainer:dilatron, ../shared/tools/devkit)"
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/multi_gpu.XXXXXX")
# The GPT-2 configs read the tinyshakespeare bytes as a uint16 token shard (gpu_bench.sh).
shard=runs/data/tinyshakespeare-bytes.bin
need_shard() {
  [ -f "$shard" ] || python3 bench/reference/text_to_byte_shard.py data/tinyshakespeare.txt "$shard" > /dev/null \
    || die "could not write $shard"
}

# Rank counts 2, 4, .. up to N (1 first where a part needs the single-GPU baseline).
counts=()
for ((n = 2; n <= N; n *= 2)); do counts+=($n); done

say() { echo "$*" | tee -a "$out/summary.txt"; }

# train NAME NP ARGS...: dilatron train on NP ranks into $work/NAME (log in $out/NAME.log).
train() {
  local name=$1 np=$2; shift 2
  "${mpirun[@]}" -np "$np" "$dilatron" train --set device="$device" --set logging.run_dir="$work/$name" \
    --set logging.every=1 --set logging.progress_bar=false --set sample.tokens=0 "$@" > "$out/$name.log" 2>&1
}

# speed NAME: the median tokens/s and step time of run NAME over the steps after the first two.
speed() {
  python3 - "$work/$1/metrics.jsonl" <<'PY'
import json, statistics, sys
rows = [r for r in map(json.loads, open(sys.argv[1])) if "tokens_per_s" in r][2:]
print("%.0f %.3f" % (statistics.median(r["tokens_per_s"] for r in rows), statistics.median(r["step_time_s"] for r in rows)))
PY
}

# measured NAME NP ARGS...: trains run NAME (train), then prints its speed (speed); without a
# figure it prints "rc=RC: no figure" and fails.
measured() {
  local name=$1
  train "$@"
  local rc=$?
  [ $rc -eq 0 ] && speed "$name" 2> /dev/null && return
  echo "rc=$rc: no figure"
  return 1
}

# last_step NAME: the last step's time, tokens/s and loss of run NAME, or the first error line of
# its log.
last_step() {
  python3 -c "import json; r=[json.loads(l) for l in open('$work/$1/metrics.jsonl')][-1]; print('%.2f s/step, %.0f tokens/s, loss %.3f' % (r['step_time_s'], r['tokens_per_s'], r['loss']))" 2>/dev/null \
    || echo "no step: $(grep -a -m1 -iE 'error|memory' "$out/$1.log")"
}

# hidden_fraction T_SERIAL T_OVERLAP T_1: the part of the ring's exchange that the overlap hides,
# (T_serial - T_overlap) / (T_serial - T_1), from step times in seconds (T_1 empty: no 1-GPU run).
hidden_fraction() {
  [ -n "$3" ] || { echo "n/a (no 1-GPU step)"; return; }
  python3 -c "s, o, one = $1, $2, $3; print('%.2f' % ((s - o) / (s - one)) if s > one else 'n/a (serialised step not slower than 1 GPU)')"
}

# Segment lengths and rates of the dilated branches for T tokens: SEGMENT0, 2 SEGMENT0, .. T at
# rates 1, 2, 4, .. (as bench/longest_context.sh).
branches() {
  local T=$1 w=${SEGMENT0:-2048} r=1 seg=() rat=()
  while [ "$w" -le "$T" ]; do seg+=($w); rat+=($r); w=$((w * 2)); r=$((r * 2)); done
  echo "--set attention.segment_lengths=[$(IFS=,; echo "${seg[*]}")] --set attention.dilation_rates=[$(IFS=,; echo "${rat[*]}")]"
}

# dilated_shape T SP STEPS: sets `shape` to the arguments of the 124M dilated model (WEAK_CONFIG)
# at T tokens, SP ranks of sequence parallelism, STEPS steps, without evaluation or checkpoints.
dilated_shape() {
  shape=(--config "${WEAK_CONFIG:-configs/gpt2-124m-dilated-32k.yaml}" --set model.seq_len=$1 --set model.position=rotary
         $(branches $1) --set data.path=$shard --set data.format=tokens --set parallel.sequence_parallel=$2
         --set schedule.max_steps=$3 --set schedule.warmup_steps=1 --set data.eval_every=0 --set checkpoint.every=0
         --set checkpoint.at_end=false)
}

part_collectives() {
  for n in "${counts[@]}"; do
    "${mpirun[@]}" -np "$n" "$bin/collectives_gpu_test_bin" > "$out/collectives-np$n.log" 2>&1
    say "collectives np$n rc=$? $(grep -a 'test cases:' "$out/collectives-np$n.log" | tail -1 | sed 's/\x1b\[[0-9;]*m//g')"
    grep -a '^bandwidth:' "$out/collectives-np$n.log" | tee -a "$out/summary.txt"
    (cd bench/reference && torchrun --standalone --nproc_per_node "$n" nccl_allreduce_bench.py) \
      > "$out/torch-nccl-np$n.log" 2>&1
    grep -a '^bandwidth:' "$out/torch-nccl-np$n.log" | tee -a "$out/summary.txt" \
      || say "torch-nccl np$n: no figure (see torch-nccl-np$n.log)"
  done
}

part_ring() {
  for n in "${counts[@]}"; do
    "${mpirun[@]}" -np "$n" "$bin/ring_attention_gpu_test_bin" > "$out/ring-np$n.log" 2>&1
    say "ring np$n rc=$? $(grep -a 'test cases:' "$out/ring-np$n.log" | tail -1 | sed 's/\x1b\[[0-9;]*m//g')"
    # The test's timing case: the fraction of the exchange hidden, per transport, dtype and pass.
    sed 's/\x1b\[[0-9;]*m//g' "$out/ring-np$n.log" | grep -a '^OVERLAP' | tee -a "$out/summary.txt"
  done
}

# compare A B [FIRST] [exact]: steps FIRST.. of run B against run A; bf16 tolerance, or equal bits.
compare() {
  python3 - "$work/$1/metrics.jsonl" "$work/$2/metrics.jsonl" "${3:-1}" "${4:-}" <<'PY'
import json, statistics, sys
def steps(path):
    try:
        return {r["step"]: r for r in map(json.loads, open(path)) if "grad_norm" in r}
    except OSError as e:
        print("FAIL: no metrics (%s)" % e)
        sys.exit(1)
a, b, first, exact = steps(sys.argv[1]), steps(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "exact"
want = [s for s in sorted(a) if s >= first]
if not want or any(s not in b for s in want):
    print("FAIL: steps missing (%d of %d there)" % (sum(s in b for s in want), len(want)))
    sys.exit(1)
rel = lambda x, y: abs(x - y) / abs(y)
loss = [rel(b[s]["loss"], a[s]["loss"]) for s in want]
norm = [rel(b[s]["grad_norm"], a[s]["grad_norm"]) for s in want]
if exact:
    ok = all(b[s]["loss"] == a[s]["loss"] and b[s]["grad_norm"] == a[s]["grad_norm"] for s in want)
else:
    ok = max(loss) <= 2e-3 and statistics.median(norm) <= 1e-3
print("%s: steps %d-%d, worst loss difference %.2e, worst gradient-norm difference %.2e (median %.2e)%s"
      % ("PASS" if ok else "FAIL", want[0], want[-1], max(loss), max(norm), statistics.median(norm),
         ", bit-identical" if exact and ok else ""))
sys.exit(0 if ok else 1)
PY
}

part_parity() {
  local micro=(--config configs/test-micro.yaml --set attention.kind=dilated --set "attention.segment_lengths=[8,16,32]"
               --set "attention.dilation_rates=[1,2,4]" --set zero.stage=3 --set data.batch_size=8
               --set data.micro_batch_size=1 --set data.eval_every=0 --set schedule.max_steps=50
               --set schedule.warmup_steps=5 --set checkpoint.every=25)
  train parity-1 1 "${micro[@]}"; say "parity 1 rank rc=$?"
  # Layouts SP x DP of N ranks.
  local layouts=("$N 1" "1 $N")
  [ "$N" -ge 4 ] && layouts+=("2 $((N / 2))")
  [ "$N" -ge 8 ] && layouts+=("$((N / 2)) 2")
  local main_layout="$N 1"
  [ "$N" -ge 4 ] && main_layout="2 $((N / 2))"
  for layout in "${layouts[@]}"; do
    read -r sp dp <<< "$layout"
    train "parity-sp$sp-dp$dp" "$N" "${micro[@]}" --set parallel.sequence_parallel="$sp"
    say "parity SP $sp x DP $dp rc=$? $(compare parity-1 "parity-sp$sp-dp$dp")"
  done
  read -r sp dp <<< "$main_layout"
  local whole="parity-sp$sp-dp$dp" parts="parity-resume-sp$sp-dp$dp"
  train "$parts" "$N" "${micro[@]}" --set parallel.sequence_parallel="$sp" --stop-at-step 25
  train "$parts" "$N" "${micro[@]}" --set parallel.sequence_parallel="$sp" --resume auto
  say "parity resume on SP $sp x DP $dp rc=$? $(compare "$whole" "$parts" 1 exact)"
  local half=$((N / 2)) half_sp=$((sp < N / 2 ? sp : N / 2))
  train "parity-onto-$half" "$half" "${micro[@]}" --set parallel.sequence_parallel="$half_sp" \
    --resume "$work/$whole/checkpoints/step_00000025"
  say "parity resume from $N ranks (SP $sp) onto $half (SP $half_sp) rc=$? $(compare "$whole" "parity-onto-$half" 26)"
}

part_weak() {
  need_shard
  local per=${WEAK_TOKENS:-131072} base="" base_step="" shape line
  for n in 1 "${counts[@]}"; do
    local T=$((per * n))
    dilated_shape $T $n $steps
    if ! line=$(measured "weak-n$n" "$n" "${shape[@]}"); then say "weak n=$n T=$T $line"; continue; fi
    read -r tps step <<< "$line"
    local per_gpu=$((${tps%.*} / n))
    [ -n "$base" ] || base=$per_gpu
    [ "$n" -ne 1 ] || base_step=$step
    say "weak n=$n T=$T: $tps tokens/s, $per_gpu per GPU, step $step s, efficiency $(python3 -c "print('%.1f %%' % (100 * $per_gpu / $base))")"
    if [ "$n" -eq "$N" ]; then
      if ! line=$(measured "weak-serial-n$n" "$n" "${shape[@]}" --set parallel.overlap_ring=false); then
        say "  ring exchange serialised $line"
      else
        read -r _ serial_step <<< "$line"
        say "  ring exchange serialised (parallel.overlap_ring=false): $line (tokens/s, step s); hidden fraction" \
          "(T_serial - T_overlap) / (T_serial - T_1) = ($serial_step - $step) / ($serial_step - ${base_step:-?}) =" \
          "$(hidden_fraction "$serial_step" "$step" "$base_step"), assuming a GPU's compute equals the 1-GPU run's"
      fi
    fi
    for depth in 1 0; do
      if ! line=$(measured "weak-zero3-d$depth-n$n" "$n" "${shape[@]}" --set zero.stage=3 --set zero.prefetch_depth=$depth); then
        say "  ZeRO-3 prefetch_depth $depth $line"
        continue
      fi
      say "  ZeRO-3 prefetch_depth $depth: $line (tokens/s, step s)"
    done
  done
}

part_longest() {
  need_shard
  local shape
  for T in ${LONGEST:-8388608}; do
    dilated_shape $T $N 2
    train "longest-$T" "$N" "${shape[@]}"
    local rc=$?
    say "longest T=$T on $N ranks rc=$rc $(last_step "longest-$T")"
  done
}

part_largest() {
  need_shard
  local shapes=()
  read -r -a words <<< "${LARGEST:-48 6144 48}"
  for ((i = 0; i + 2 < ${#words[@]}; i += 3)); do shapes+=("${words[i]} ${words[i + 1]} ${words[i + 2]}"); done
  for shape in "${shapes[@]}"; do
    read -r L C H <<< "$shape"
    train "largest-$L-$C" "$N" --config configs/gpt2-124m-1k.yaml --set model.n_layers=$L --set model.d_model=$C \
      --set model.n_heads=$H --set model.position=rotary --set model.recompute=true --set data.path=$shard --set data.format=tokens \
      --set data.batch_size=$N --set data.micro_batch_size=1 --set zero.stage=3 --set zero.offload_params=cpu \
      --set zero.offload_optimizer=cpu --set schedule.max_steps=2 --set schedule.warmup_steps=1 \
      --set data.eval_every=0 --set checkpoint.every=0 --set checkpoint.at_end=false
    local rc=$?
    say "largest L=$L C=$C H=$H on $N ranks (ZeRO-3, cpu offload) rc=$rc $(grep -a -m1 -o 'model: [0-9]* parameters' "$out/largest-$L-$C.log"), $(last_step "largest-$L-$C")"
  done
}

say "multi_gpu: $N ranks, device $device, $(date -u +%FT%TZ)"
command -v nvidia-smi > /dev/null && nvidia-smi -L >> "$out/summary.txt" 2>&1
for part in "${parts[@]}"; do
  case $part in
    collectives | ring | parity | weak | longest | largest) "part_$part" ;;
    *) die "unknown part '$part' (collectives, ring, parity, weak, longest, largest)" ;;
  esac
done
rm -rf "$work"
