set -u
tar xJf .kit/devkit.tar.xz && source .devkit/env.sh
R=$OUT/r; mkdir -p $R
b=.devkit/bin
t() { local name=$1 lim=$2; shift 2; local s=$SECONDS; timeout $lim "$@" > $R/$name.log 2>&1; echo "$name rc=$? $((SECONDS-s))s $(grep -a 'test cases:' $R/$name.log | tail -1 | sed 's/\x1b\[[0-9;]*m//g')" >> $R/summary.txt; }
t racecheck_attention_bf16 80 compute-sanitizer --tool racecheck --error-exitcode 9 $b/attention_gpu_test -tc='*bf16*'
t layers_rest 130 $b/layers_gpu_test -tc='*cross_entropy on bf16*,*gelu*,*embeddings*,*rotary*,*bitwise*'
grep -ah "SUMMARY" $R/racecheck_attention_bf16.log
cat $R/summary.txt
cd $OUT && tar czf results.tgz r && rm -rf r
