#!/usr/bin/env bash
# The dilatron binary as a user meets it: exit statuses, one-line errors naming the key or
# file, SIGTERM ending in a checkpoint and status 0, and generate from that checkpoint.
set -uo pipefail
bin=$1
work=${TEST_TMPDIR:-$(mktemp -d)}
fails=0
expect() {  # expect STATUS PATTERN -- command...
  local want=$1 pattern=$2; shift 3
  local out status
  out=$("$@" 2>&1); status=$?
  if [ "$status" -ne "$want" ] || ! grep -q -- "$pattern" <<<"$out"; then
    echo "FAIL: $* -> status $status (want $want), output:"; echo "$out" | tail -5; echo "(wanted /$pattern/)"
    fails=$((fails + 1))
  else
    echo "ok: $* -> $status"
  fi
}
micro=configs/test-micro.yaml
expect 2 "model.n_layer" -- "$bin" config --config $micro --set model.n_layer=3
expect 2 "model.n_heads" -- "$bin" config --config $micro --set model.n_heads=5
expect 2 "nonexistent.yaml" -- "$bin" train --config nonexistent.yaml
expect 2 "no-such-data.txt" -- "$bin" train --config $micro --set data.path=no-such-data.txt --set logging.run_dir=$work/nodata
printf 'hi' > $work/short.txt
expect 2 "short.txt" -- "$bin" train --config $micro --set data.path=$work/short.txt --set logging.run_dir=$work/short
expect 2 "device: cuda" -- "$bin" train --config $micro --set device=cuda --set logging.run_dir=$work/cuda
expect 2 "zero.nvme_path" -- "$bin" train --config $micro --set zero.stage=3 --set zero.offload_optimizer=nvme --set logging.run_dir=$work/nvme
expect 2 "attention.segment_lengths" -- "$bin" train --config $micro --set attention.kind=dilated --set attention.segment_lengths=[12] --set attention.dilation_rates=[1] --set logging.run_dir=$work/dil
expect 2 "no-such-flag" -- "$bin" train --config $micro --no-such-flag
expect 0 "parameters" -- "$bin" config --config $micro
expect 2 "checkpoint" -- "$bin" generate --checkpoint $work/none

# Under mpirun: a sequence-parallel run through the CLI, and bad input on every rank ending
# the job with status 2 (not a hang). Shared-memory files stay in this test's directory.
export OMPI_MCA_btl_vader_backing_directory=$work TMPDIR=$work
mpi=(mpirun -np 2 --oversubscribe --bind-to none --timeout 120)
expect 0 "steps 3 loss" -- "${mpi[@]}" "$bin" train --config $micro --set parallel.sequence_parallel=2 --set schedule.max_steps=3 --set sample.tokens=0 --set logging.run_dir=$work/sp2
expect 2 "no-such-data.txt" -- "${mpi[@]}" "$bin" train --config $micro --set data.path=no-such-data.txt --set logging.run_dir=$work/sp2-nodata
expect 2 "data.batch_size" -- "${mpi[@]}" "$bin" train --config $micro --set data.batch_size=3 --set logging.run_dir=$work/dp2-odd

# ZeRO-3 over 2 ranks with the optimizer state on NVMe, then export and eval of its checkpoint.
expect 0 "steps 4 loss" -- "${mpi[@]}" "$bin" train --config $micro --set zero.stage=3 --set zero.offload_optimizer=nvme --set zero.nvme_path=$work/swap --set zero.nvme_block_bytes=65536 --set zero.nvme_queue_depth=4 --set schedule.max_steps=4 --set sample.tokens=0 --set logging.run_dir=$work/zero3
expect 0 "model.safetensors" -- "$bin" export --checkpoint $work/zero3/checkpoints/step_00000004 --out $work/export/model.safetensors
if ! python3 scripts/read_safetensors.py $work/export/model.safetensors | grep -q '"blocks.1.mlp.fc.weight"' || ! grep -q '"n_layers": *2' $work/export/config.json; then
  echo "FAIL: export wrote no readable weights or config.json"; fails=$((fails + 1))
else
  echo "ok: export -> readable safetensors and config.json"
fi
[ -z "$(ls -A $work/swap 2>/dev/null)" ] && echo "ok: swap files removed at exit" || { echo "FAIL: swap files left: $(ls -R $work/swap)"; fails=$((fails + 1)); }
expect 0 "^val_loss [0-9.]*$" -- "$bin" eval --checkpoint $work/zero3/checkpoints/step_00000004 --batches 2
expect 0 "^val_loss [0-9.]*$" -- "$bin" eval --checkpoint $work/zero3/checkpoints/step_00000004 --data data/tinyshakespeare.txt --batches 1
expect 2 "short.txt" -- "$bin" eval --checkpoint $work/zero3/checkpoints/step_00000004 --data $work/short.txt

# SIGTERM mid-run: the step in progress finishes, a checkpoint is written, exit status 0.
run=$work/sigterm
"$bin" train --config $micro --set schedule.max_steps=100000 --set logging.run_dir=$run --set logging.progress_bar=false > $work/sigterm.log 2>&1 &
pid=$!
for _ in $(seq 1 200); do [ -s $run/metrics.jsonl ] && break; sleep 0.1; done
kill -TERM $pid
wait $pid; status=$?
ck=$(ls -d $run/checkpoints/step_* 2>/dev/null | tail -1)
if [ "$status" -ne 0 ] || [ -z "$ck" ]; then
  echo "FAIL: SIGTERM -> status $status, checkpoint '${ck}'"; tail -5 $work/sigterm.log; fails=$((fails + 1))
else
  echo "ok: SIGTERM -> status 0 and $ck"
fi
expect 0 "To be" -- "$bin" generate --checkpoint "$ck" --prompt "To be" --tokens 5
expect 2 "temperature" -- "$bin" generate --checkpoint "$ck" --temperature 0

# scripts/plot turns the run's metrics.jsonl into a PNG.
if ! scripts/plot "$run" >/dev/null || ! head -c 8 "$run/loss.png" | grep -q PNG; then
  echo "FAIL: scripts/plot $run wrote no PNG"; fails=$((fails + 1))
else
  echo "ok: scripts/plot -> $run/loss.png"
fi
expect 2 "metrics.jsonl" -- scripts/plot "$work/none"

[ $fails -eq 0 ] && echo "cli_test: all passed" || echo "cli_test: $fails failed"
exit $fails
