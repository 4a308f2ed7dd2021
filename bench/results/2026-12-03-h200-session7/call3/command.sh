set -u
tar xJf .kit/devkit.tar.xz && source .devkit/env.sh
R=$OUT/r; mkdir -p $R
b=.devkit/bin
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > $R/gpu.txt
t() { local name=$1 lim=$2; shift 2; local s=$SECONDS; timeout $lim "$@" > $R/$name.log 2>&1; echo "$name rc=$? $((SECONDS-s))s $(grep -a 'test cases:' $R/$name.log | tail -1 | sed 's/\x1b\[[0-9;]*m//g')" >> $R/summary.txt; }
SETS="--set logging.every=1 --set logging.progress_bar=false --set data.eval_every=0 --set checkpoint.every=0 --set checkpoint.at_end=false --set sample.tokens=0"
dl() { local name=$1 bin=$2 s=$SECONDS; rm -rf /tmp/dl; timeout 60 mpirun -np 1 --bind-to none $bin train --config configs/gpt2-124m-1k.yaml $SETS --set logging.run_dir=/tmp/dl --set schedule.max_steps=25 --set schedule.warmup_steps=25 > $R/$name.log 2>&1; echo "$name rc=$? $((SECONDS-s))s $(python3 -c "import json,statistics as s;m=[json.loads(l) for l in open('/tmp/dl/metrics.jsonl')];m=[x for x in m if 'tokens_per_s' in x][3:];print('tokens/s median',round(s.median(x['tokens_per_s'] for x in m)),'n',len(m))" 2>&1)" >> $R/summary.txt; }
# correctness of every new kernel (fu holds dq-from-dS in two tiles, the 32-row forward and the unrolled dK/dV)
t att_fu 60 $b/attention_gpu_test_fu -tce='timing*'
t racecheck_attention_fu 60 compute-sanitizer --tool racecheck --error-exitcode 9 $b/attention_gpu_test_fu -tc='*matches the CPU (bf16)'
t ring_np1_fu 40 mpirun -np 1 --bind-to none $b/ring_attention_gpu_test_bin
t ring_np4_fu 60 mpirun -np 4 --bind-to none $b/ring_attention_gpu_test_bin
t gpt_cuda_fu 60 $b/gpt_cuda_gpu_test
for v in new u f fu; do bin=$b/attention_gpu_test; [ $v = new ] || bin=${bin}_$v; t att_${v}_timing 60 $bin -tc='timing: bf16*'; done
for round in 1 2; do for v in prev new u f fu; do bin=$b/dilatron; [ $v = new ] || bin=${bin}_$v; dl dl_${v}_$round $bin; done; done
best=$(python3 - $R/summary.txt <<'PY'
import re,sys,collections
d=collections.defaultdict(list)
for line in open(sys.argv[1]):
    m=re.match(r"dl_(\w+?)_\d rc=0 .*median (\d+)",line)
    if m: d[m.group(1)].append(int(m.group(2)))
print(max(d,key=lambda v:sum(d[v])/len(d[v])))
PY
)
echo "best $best" >> $R/summary.txt
bin=$b/dilatron; [ "$best" = new ] || bin=${bin}_$best
s=$SECONDS; DILATRON=$bin OUT=$R/b1k timeout 85 bench/gpu_bench.sh configs/gpt2-124m-1k.yaml 25 > $R/b1k.txt 2>&1; echo "b1k ($best) rc=$? $((SECONDS-s))s" >> $R/summary.txt
cp $bin $b/dilatron
s=$SECONDS; OUT=$R/longest timeout 45 bench/longest_context.sh 2097152 > $R/longest.txt 2>&1; echo "longest ($best) rc=$? $((SECONDS-s))s" >> $R/summary.txt
left=$((585 - SECONDS)); s=$SECONDS; OUT=$R/cpu timeout $left bench/largest_gpu_model.sh cpu "34 4096 32" > $R/cpu.txt 2>&1; echo "cpu ($best) rc=$? $((SECONDS-s))s (limit $left)" >> $R/summary.txt
grep -a "TIMING" $R/att_*timing.log | grep "B=16\|head_groups causal\|D=128"
tail -4 $R/b1k.txt | head -2; tail -4 $R/longest.txt; cat $R/cpu.txt
grep -a "FAIL\|RACECHECK SUMMARY" $R/*.log | head
cat $R/summary.txt
cd $OUT && tar czf results.tgz r && rm -rf r
