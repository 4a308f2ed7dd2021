set -u
tar xJf .kit/devkit.tar.xz && source .devkit/env.sh
R=$OUT/r; mkdir -p $R
b=.devkit/bin
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > $R/gpu.txt
t() { local name=$1 lim=$2; shift 2; local s=$SECONDS; timeout $lim "$@" > $R/$name.log 2>&1; echo "$name rc=$? $((SECONDS-s))s $(grep -a 'test cases:' $R/$name.log | tail -1 | sed 's/\x1b\[[0-9;]*m//g')" >> $R/summary.txt; }
t attention 80 $b/attention_gpu_test -tce='timing: fp32*'
(cd bench/reference && timeout 30 python3 attention_torch_bench.py) > $R/torch_attention.log 2>&1
s=$SECONDS; OUT=$R/b1k timeout 150 bench/gpu_bench.sh configs/gpt2-124m-1k.yaml 25 > $R/b1k.txt 2>&1; echo "b1k rc=$? $((SECONDS-s))s" >> $R/summary.txt
t norms 110 $b/layers_gpu_test -tc='*norm*'
t gpt_cuda 40 $b/gpt_cuda_gpu_test
t ring_np2 40 mpirun -np 2 --bind-to none $b/ring_attention_gpu_test_bin
s=$SECONDS; OUT=$R/b32k timeout 90 bench/gpu_bench.sh configs/gpt2-124m-dilated-32k.yaml 12 --set attention.mode=head_groups > $R/b32k.txt 2>&1; echo "b32k rc=$? $((SECONDS-s))s" >> $R/summary.txt
tail -4 $R/b1k.txt; tail -4 $R/b32k.txt
grep -ah "TIMING\|TORCH" $R/attention.log $R/torch_attention.log $R/norms.log
grep -a "FAILED\|ERROR" $R/attention.log $R/norms.log $R/gpt_cuda.log | head -20
cat $R/summary.txt
cd $OUT && tar czf results.tgz r && rm -rf r
