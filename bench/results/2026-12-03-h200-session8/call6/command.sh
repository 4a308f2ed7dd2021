set -u
tar xJf .kit/devkit.tar.xz && source .devkit/env.sh
R=$OUT/r; mkdir -p $R
b=.devkit/bin
export CUDA_FORCE_PTX_JIT=1
t() { local name=$1 lim=$2; shift 2; local s=$SECONDS; timeout $lim "$@" > $R/$name.log 2>&1; echo "$name rc=$? $((SECONDS-s))s $(grep -a 'test cases:' $R/$name.log | tail -1 | sed 's/\x1b\[[0-9;]*m//g')" >> $R/summary.txt; }
t gpt_cuda_sm80 50 $b/gpt_cuda_gpu_test_sm80
t attention_sm80 60 $b/attention_gpu_test_sm80 -tce='timing*'
t kernels_sm80 35 $b/kernels_gpu_test_sm80 -tce='timing*'
t layers_sm80 35 $b/layers_gpu_test_sm80 -tce='timing*'
t optim_sm80 20 $b/optim_gpu_test_sm80 -tce='timing*'
cat $R/summary.txt; grep -a "error\|FAIL" $R/*.log | head
cd $OUT && tar czf results.tgz r && rm -rf r
