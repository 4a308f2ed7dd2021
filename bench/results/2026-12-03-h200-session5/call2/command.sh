set -u
tar xJf .kit/devkit.tar.xz && source .devkit/env.sh
R=$OUT/r; mkdir -p $R
b=.devkit/bin
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > $R/gpu.txt
t() { local name=$1 lim=$2; shift 2; local s=$SECONDS; timeout $lim "$@" > $R/$name.log 2>&1; echo "$name rc=$? $((SECONDS-s))s $(grep -a 'test cases:' $R/$name.log | tail -1 | sed 's/\x1b\[[0-9;]*m//g')" >> $R/summary.txt; }
common=(--set logging.every=1 --set logging.progress_bar=false --set data.eval_every=0 --set checkpoint.every=0 --set checkpoint.at_end=false --set sample.tokens=0 --set schedule.warmup_steps=5)
t norms_rest 150 $b/layers_gpu_test -tc='rmsnorm*,*bitwise*,timing: layernorm*'
s=$SECONDS; DILATRON_PROFILE=1 timeout 50 mpirun -np 1 --bind-to none $b/dilatron train --config configs/gpt2-124m-1k.yaml "${common[@]}" --set schedule.max_steps=6 --set logging.run_dir=/tmp/prof > $R/profile-1k.log 2>&1; echo "profile rc=$? $((SECONDS-s))s" >> $R/summary.txt
(command -v nsys; command -v ncu; ls /usr/local/cuda/bin | head -40) > $R/tools.txt 2>&1
if command -v nsys > /dev/null; then s=$SECONDS; timeout 70 nsys profile -o $R/attn --stats=false $b/attention_gpu_test -tc='timing: bf16*' > $R/nsys.log 2>&1; timeout 40 nsys stats -r cuda_gpu_kern_sum $R/attn.nsys-rep > $R/kern_sum.txt 2>&1; rm -f $R/attn.nsys-rep $R/attn.sqlite; echo "nsys rc=$? $((SECONDS-s))s" >> $R/summary.txt; fi
s=$SECONDS; OUT=$R/b32k timeout 150 bench/gpu_bench.sh configs/gpt2-124m-dilated-32k.yaml 12 --set attention.mode=head_groups > $R/b32k.txt 2>&1; echo "b32k rc=$? $((SECONDS-s))s" >> $R/summary.txt
tail -4 $R/b32k.txt
grep -A24 "^op " $R/profile-1k.log | head -26
grep -a "TIMING\|FAIL" $R/norms_rest.log | head
head -30 $R/kern_sum.txt | cut -c1-200
cat $R/summary.txt
cd $OUT && tar czf results.tgz r && rm -rf r
