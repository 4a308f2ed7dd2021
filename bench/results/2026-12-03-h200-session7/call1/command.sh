set -u
tar xJf .kit/devkit.tar.xz && source .devkit/env.sh
R=$OUT/r; mkdir -p $R
b=.devkit/bin
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > $R/gpu.txt
t() { local name=$1 lim=$2; shift 2; local s=$SECONDS; timeout $lim "$@" > $R/$name.log 2>&1; echo "$name rc=$? $((SECONDS-s))s $(grep -a 'test cases:' $R/$name.log | tail -1 | sed 's/\x1b\[[0-9;]*m//g')" >> $R/summary.txt; }
SETS="--set logging.every=1 --set logging.progress_bar=false --set data.eval_every=0 --set checkpoint.every=0 --set checkpoint.at_end=false --set sample.tokens=0"
# dilatron alone, 25 steps of the 1k config: median tokens/s over steps after the first 3
dl() { local name=$1 bin=$2 s=$SECONDS; rm -rf /tmp/dl; timeout 90 mpirun -np 1 --bind-to none $bin train --config configs/gpt2-124m-1k.yaml $SETS --set logging.run_dir=/tmp/dl --set schedule.max_steps=25 --set schedule.warmup_steps=25 > $R/$name.log 2>&1; echo "$name rc=$? $((SECONDS-s))s $(python3 -c "import json,statistics as s;m=[json.loads(l) for l in open('/tmp/dl/metrics.jsonl')];m=[x for x in m if 'tokens_per_s' in x][3:];print('tokens/s median',round(s.median(x['tokens_per_s'] for x in m)),'n',len(m))" 2>&1)" >> $R/summary.txt; }
# attention correctness + timing, variants
t att_v2 200 $b/attention_gpu_test_v2
t att_v3 200 $b/attention_gpu_test_v3
t att_main_timing 100 $b/attention_gpu_test -tc='timing: bf16*'
t att_v2_timing 100 $b/attention_gpu_test_v2 -tc='timing: bf16*'
t att_v3_timing 100 $b/attention_gpu_test_v3 -tc='timing: bf16*'
t train_np2 120 mpirun -np 2 --bind-to none $b/train_gpu_test_bin
mkdir -p $R/metrics; for d in /tmp/gpu-train-sp2-*; do cp $d/metrics.jsonl $R/metrics/$(basename $d).jsonl 2>/dev/null; done; rm -rf /tmp/gpu-train-*
s=$SECONDS; OUT=$R/b1k timeout 100 bench/gpu_bench.sh configs/gpt2-124m-1k.yaml 25 > $R/b1k.txt 2>&1; echo "b1k main rc=$? $((SECONDS-s))s" >> $R/summary.txt
for round in 1 2; do dl dl_main_$round $b/dilatron; dl dl_v2_$round $b/dilatron_v2; dl dl_v3_$round $b/dilatron_v3; done
# stall reasons of the dK/dV kernel in the 1k model (main and v2)
for v in main v2; do bin=$b/dilatron; [ $v = v2 ] && bin=$b/dilatron_v2; rm -rf /tmp/dl
  s=$SECONDS; timeout 150 ncu --clock-control none --set full -k regex:"dkdv_kernel|dq_from_ds_kernel" --launch-skip 24 -c 2 -o $R/ncu_$v $bin train --config configs/gpt2-124m-1k.yaml $SETS --set logging.run_dir=/tmp/dl --set schedule.max_steps=2 --set schedule.warmup_steps=2 > $R/ncu_$v.log 2>&1; echo "ncu_$v rc=$? $((SECONDS-s))s" >> $R/summary.txt
  ncu --import $R/ncu_$v.ncu-rep --page details > $R/ncu_$v.txt 2>&1; done
grep -a "TIMING" $R/att_*_timing.log
tail -4 $R/b1k.txt | head -2
grep -a "2 ranks vs 1 rank\|FAIL\|ERROR" $R/*.log | head
grep -a "Registers Per\|Achieved Occupancy\|Theoretical Occupancy\|Duration\|Stall\|Shared Memory Throughput\|Compute (SM) Throughput" $R/ncu_*.txt | head -40
cat $R/summary.txt
cd $OUT && tar czf results.tgz r && rm -rf r
