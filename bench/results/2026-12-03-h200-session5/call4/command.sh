set -u
tar xJf .kit/devkit.tar.xz && source .devkit/env.sh
R=$OUT/r; mkdir -p $R
b=.devkit/bin
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > $R/gpu.txt
t() { local name=$1 lim=$2; shift 2; local s=$SECONDS; timeout $lim "$@" > $R/$name.log 2>&1; echo "$name rc=$? $((SECONDS-s))s $(grep -a 'test cases:' $R/$name.log | tail -1 | sed 's/\x1b\[[0-9;]*m//g')" >> $R/summary.txt; }
t matmul 35 $b/kernels_gpu_test -tc='matmul*'
t gpt_cuda 25 $b/gpt_cuda_gpu_test
s=$SECONDS; OUT=$R/b1k_residual timeout 75 bench/gpu_bench.sh configs/gpt2-124m-1k.yaml 25 > $R/b1k_residual.txt 2>&1; echo "b1k_residual rc=$? $((SECONDS-s))s" >> $R/summary.txt
t racecheck_attention_bf16 45 compute-sanitizer --tool racecheck --error-exitcode 9 $b/attention_gpu_test -tc='*matches the CPU (bf16)'
tail -4 $R/b1k_residual.txt | head -2
grep -a "ERROR SUMMARY\|hazard" $R/racecheck_attention_bf16.log | tail -2
grep -a "FAIL\|ERROR" $R/matmul.log $R/gpt_cuda.log | head
cat $R/summary.txt
cd $OUT && tar czf results.tgz r && rm -rf r
