set -u
tar xJf .kit/devkit.tar.xz && source .devkit/env.sh
R=$OUT/r; mkdir -p $R
b=.devkit/bin
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > $R/gpu.txt
t() { local name=$1 lim=$2; shift 2; local s=$SECONDS; timeout $lim "$@" > $R/$name.log 2>&1; echo "$name rc=$? $((SECONDS-s))s $(grep -a 'test cases:' $R/$name.log | tail -1 | sed 's/\x1b\[[0-9;]*m//g')" >> $R/summary.txt; }
OUT=$R/b1k timeout 150 bench/gpu_bench.sh configs/gpt2-124m-1k.yaml 25 > $R/b1k.txt 2>&1; echo "b1k rc=$?" >> $R/summary.txt
OUT=$R/b32k timeout 110 bench/gpu_bench.sh configs/gpt2-124m-dilated-32k.yaml 12 --set attention.mode=head_groups > $R/b32k.txt 2>&1; echo "b32k rc=$?" >> $R/summary.txt
t attention_timing 40 $b/attention_gpu_test -tc='timing: bf16*'
(cd bench/reference && timeout 30 python3 attention_torch_bench.py) > $R/torch_attention.log 2>&1
t optim 40 $b/optim_gpu_test
t collectives_np1 30 mpirun -np 1 --bind-to none $b/collectives_gpu_test_bin
t collectives_np2 40 mpirun -np 2 --bind-to none $b/collectives_gpu_test_bin
t ring_np1 30 mpirun -np 1 --bind-to none $b/ring_attention_gpu_test_bin
t ring_np4 60 mpirun -np 4 --bind-to none $b/ring_attention_gpu_test_bin
t memcheck_gpt 60 compute-sanitizer --tool memcheck --error-exitcode 9 $b/gpt_cuda_gpu_test
tail -4 $R/b1k.txt; tail -4 $R/b32k.txt
grep -ah "TIMING.*bf16 B=16\|TIMING.*head_groups\|TORCH" $R/attention_timing.log $R/torch_attention.log
cat $R/summary.txt
cd $OUT && tar czf results.tgz r && rm -rf r
