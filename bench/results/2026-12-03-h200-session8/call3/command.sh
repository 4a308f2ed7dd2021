set -u
tar xJf .kit/devkit.tar.xz && source .devkit/env.sh
R=$OUT/r; mkdir -p $R
b=.devkit/bin
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > $R/gpu.txt
mkdir -p runs/data && python3 bench/reference/text_to_byte_shard.py data/tinyshakespeare.txt runs/data/tinyshakespeare-bytes.bin
t() { local name=$1 lim=$2; shift 2; local s=$SECONDS; timeout $lim "$@" > $R/$name.log 2>&1; echo "$name rc=$? $((SECONDS-s))s $(grep -a 'test cases:' $R/$name.log | tail -1 | sed 's/\x1b\[[0-9;]*m//g') $(grep -a 'ERROR SUMMARY\|RACECHECK SUMMARY' $R/$name.log | tail -1)" >> $R/summary.txt; }
SETS="--set logging.every=1 --set logging.progress_bar=false --set data.eval_every=0 --set checkpoint.every=0 --set checkpoint.at_end=false --set sample.tokens=0"
dl() { local name=$1 bin=$2 s=$SECONDS; rm -rf /tmp/dl; timeout 60 mpirun -np 1 --bind-to none $bin train --config configs/gpt2-124m-1k.yaml $SETS --set logging.run_dir=/tmp/dl --set schedule.max_steps=25 --set schedule.warmup_steps=25 > $R/$name.log 2>&1; echo "$name rc=$? $((SECONDS-s))s $(python3 -c "import json,statistics as s;m=[json.loads(l) for l in open('/tmp/dl/metrics.jsonl')];m=[x for x in m if 'tokens_per_s' in x][3:];print('tokens/s median',round(s.median(x['tokens_per_s'] for x in m)),'n',len(m))" 2>&1)" >> $R/summary.txt; }
t ring_np1 60 $b/ring_attention_gpu_test_bin
t ring_np2 90 mpirun -np 2 --bind-to none $b/ring_attention_gpu_test_bin
t ring_np4 120 mpirun -np 4 --bind-to none --oversubscribe $b/ring_attention_gpu_test_bin
t att 120 $b/attention_gpu_test
t racecheck_attention_bf16 90 compute-sanitizer --tool racecheck $b/attention_gpu_test -tc='*bf16*' -tce='timing*'
t att_timing 70 $b/attention_gpu_test -tc='timing: bf16*'
t att_prev_timing 70 $b/attention_gpu_test_prev -tc='timing: bf16*'
t train_np2 90 mpirun -np 2 --bind-to none $b/train_gpu_test_bin
for round in 1 2; do dl dl_prev_$round $b/dilatron_prev; dl dl_new_$round $b/dilatron; done
grep -a "TIMING\|serial" $R/att*_timing.log $R/ring_np*.log | head -40
cat $R/summary.txt
cd $OUT && tar czf results.tgz r && rm -rf r
