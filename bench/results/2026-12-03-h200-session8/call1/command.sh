set -u
tar xJf .kit/devkit.tar.xz && source .devkit/env.sh
R=$OUT/r; mkdir -p $R
b=.devkit/bin
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > $R/gpu.txt
mkdir -p runs/data && python3 bench/reference/text_to_byte_shard.py data/tinyshakespeare.txt runs/data/tinyshakespeare-bytes.bin
t() { local name=$1 lim=$2; shift 2; local s=$SECONDS; timeout $lim "$@" > $R/$name.log 2>&1; echo "$name rc=$? $((SECONDS-s))s $(grep -a 'test cases:' $R/$name.log | tail -1 | sed 's/\x1b\[[0-9;]*m//g') $(grep -a 'ERROR SUMMARY' $R/$name.log | tail -1)" >> $R/summary.txt; }
t layers 150 $b/layers_gpu_test
t gpt_cuda 120 $b/gpt_cuda_gpu_test
t gpt_cuda_memcheck 200 compute-sanitizer --tool memcheck $b/gpt_cuda_gpu_test -tc='GPU model in bf16*'
t gpt_cuda_oldbound 120 $b/gpt_cuda_gpu_test_oldbound
t gpt_cuda_oldbound_memcheck 200 compute-sanitizer --tool memcheck $b/gpt_cuda_gpu_test_oldbound -tc='GPU model in bf16*'
t kernels 120 $b/kernels_gpu_test
t optim 60 $b/optim_gpu_test
t train_np2 120 mpirun -np 2 --bind-to none $b/train_gpu_test_bin
grep -a "tokens almost all distinct\|FAIL\|ERROR\|error" $R/gpt_cuda*.log | head -30
cat $R/summary.txt
cd $OUT && tar czf results.tgz r && rm -rf r
