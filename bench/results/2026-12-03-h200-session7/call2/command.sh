set -u
tar xJf .kit/devkit.tar.xz && source .devkit/env.sh
R=$OUT/r; mkdir -p $R
b=.devkit/bin
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > $R/gpu.txt
t() { local name=$1 lim=$2; shift 2; local s=$SECONDS; timeout $lim "$@" > $R/$name.log 2>&1; echo "$name rc=$? $((SECONDS-s))s $(grep -a 'test cases:' $R/$name.log | tail -1 | sed 's/\x1b\[[0-9;]*m//g')" >> $R/summary.txt; }
SETS="--set logging.every=1 --set logging.progress_bar=false --set data.eval_every=0 --set checkpoint.every=0 --set checkpoint.at_end=false --set sample.tokens=0"
dl() { local name=$1 bin=$2 s=$SECONDS; rm -rf /tmp/dl; timeout 90 mpirun -np 1 --bind-to none $bin train --config configs/gpt2-124m-1k.yaml $SETS --set logging.run_dir=/tmp/dl --set schedule.max_steps=25 --set schedule.warmup_steps=25 > $R/$name.log 2>&1; echo "$name rc=$? $((SECONDS-s))s $(python3 -c "import json,statistics as s;m=[json.loads(l) for l in open('/tmp/dl/metrics.jsonl')];m=[x for x in m if 'tokens_per_s' in x][3:];print('tokens/s median',round(s.median(x['tokens_per_s'] for x in m)),'n',len(m))" 2>&1)" >> $R/summary.txt; }
t att 150 $b/attention_gpu_test -tce='timing*'
t att_timing 60 $b/attention_gpu_test -tc='timing: bf16*'
t att_prev_timing 60 $b/attention_gpu_test_v2 -tc='timing: bf16*'
t racecheck_attention_bf16 60 compute-sanitizer --tool racecheck --error-exitcode 9 $b/attention_gpu_test -tc='*matches the CPU (bf16)'
t memcheck_attention_scratch 90 compute-sanitizer --tool memcheck --error-exitcode 9 $b/attention_gpu_test -tc='bf16 backward with its dS scratch*'
t ring_np1 40 mpirun -np 1 --bind-to none $b/ring_attention_gpu_test_bin
t ring_np4 90 mpirun -np 4 --bind-to none $b/ring_attention_gpu_test_bin
t gpt_cuda 60 $b/gpt_cuda_gpu_test
s=$SECONDS; OUT=$R/b1k timeout 100 bench/gpu_bench.sh configs/gpt2-124m-1k.yaml 25 > $R/b1k.txt 2>&1; echo "b1k rc=$? $((SECONDS-s))s" >> $R/summary.txt
for round in 1 2; do dl dl_main_$round $b/dilatron; dl dl_prev_$round $b/dilatron_v2; done
s=$SECONDS; OUT=$R/b32k timeout 140 bench/gpu_bench.sh configs/gpt2-124m-dilated-32k.yaml 12 --set attention.mode=head_groups > $R/b32k.txt 2>&1; echo "b32k rc=$? $((SECONDS-s))s" >> $R/summary.txt
rm -rf /tmp/dl; s=$SECONDS; timeout 100 ncu --clock-control none --set full -k regex:"dkdv_kernel|dq_from_ds_kernel" --launch-skip 24 -c 2 -o $R/ncu_main $b/dilatron train --config configs/gpt2-124m-1k.yaml $SETS --set logging.run_dir=/tmp/dl --set schedule.max_steps=2 --set schedule.warmup_steps=2 > $R/ncu_main.log 2>&1; echo "ncu_main rc=$? $((SECONDS-s))s" >> $R/summary.txt
ncu --import $R/ncu_main.ncu-rep --page details > $R/ncu_main.txt 2>&1
ncu --import $R/ncu_main.ncu-rep --page raw 2>&1 | grep -i "smsp__pcsamp_warps_issue_stalled\|smsp__average_warp" | grep -v "not_issued" | sort -k3 -n -r | head -60 > $R/ncu_main_stalls.txt
rm -f $R/ncu_main.ncu-rep
grep -a "TIMING" $R/att_*timing.log | grep "B=16\|head_groups causal"
tail -4 $R/b1k.txt | head -2; tail -4 $R/b32k.txt | head -2
grep -a "FAIL\|ERROR SUMMARY\|hazard" $R/*.log | head
grep -a "Duration\|Registers Per\|Achieved Occupancy\|excessive" $R/ncu_main.txt | head
cat $R/summary.txt
cd $OUT && tar czf results.tgz r && rm -rf r
