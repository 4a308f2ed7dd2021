set -u
tar xJf .kit/devkit.tar.xz && source .devkit/env.sh
R=$OUT/r; mkdir -p $R
OUT=$R/b1k timeout 170 bench/gpu_bench.sh configs/gpt2-124m-1k.yaml 30 > $R/b1k.txt 2>&1; echo "b1k rc=$?" >> $R/summary.txt
tail -4 $R/b1k.txt; cat $R/summary.txt
cd $OUT && tar czf results.tgz r && rm -rf r
