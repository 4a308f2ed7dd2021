set -u
tar xJf .kit/devkit.tar.xz && source .devkit/env.sh
R=$OUT/r; mkdir -p $R
b=.devkit/bin
t() { local name=$1 lim=$2; shift 2; local s=$SECONDS; timeout $lim "$@" > $R/$name.log 2>&1; echo "$name rc=$? $((SECONDS-s))s $(grep -a 'test cases:' $R/$name.log | tail -1 | sed 's/\x1b\[[0-9;]*m//g')" >> $R/summary.txt; }
t attention_fused 90 $b/attention_gpu_test_fused
t attention_two 60 $b/attention_gpu_test_two -tc='*timing*'
bwd() { grep -a "TIMING dense causal.*bf16 B=16" $R/$1.log | sed -E 's/.*backward ([0-9.]+) ms.*/\1/'; }
f=$(bwd attention_fused); w=$(bwd attention_two); echo "dense B=16 backward: fused $f two-kernel $w" >> $R/summary.txt
best=two; awk -v f=$f -v w=$w 'BEGIN{exit !(f < w)}' && best=fused; echo "best=$best" >> $R/summary.txt
DILATRON=$b/dilatron_$best OUT=$R/b1k timeout 170 bench/gpu_bench.sh configs/gpt2-124m-1k.yaml 30 > $R/b1k.txt 2>&1; echo "b1k($best) rc=$?" >> $R/summary.txt
DILATRON=$b/dilatron_$best OUT=$R/b32k timeout 130 bench/gpu_bench.sh configs/gpt2-124m-dilated-32k.yaml 15 --set attention.mode=head_groups > $R/b32k.txt 2>&1; echo "b32k($best) rc=$?" >> $R/summary.txt
t layers 150 $b/layers_gpu_test
grep -ah "TIMING.*bf16 B=16\|TIMING.*head_groups\|TIMING.*longnet.*bf16" $R/attention_*.log
tail -4 $R/b1k.txt; tail -4 $R/b32k.txt
cat $R/summary.txt
cd $OUT && tar czf results.tgz r && rm -rf r
