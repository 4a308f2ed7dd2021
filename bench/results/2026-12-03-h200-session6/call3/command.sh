set -u
tar xJf .kit/devkit.tar.xz && source .devkit/env.sh
R=$OUT/r; mkdir -p $R
b=.devkit/bin
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > $R/gpu.txt
t() { local name=$1 lim=$2; shift 2; local s=$SECONDS; timeout $lim "$@" > $R/$name.log 2>&1; echo "$name rc=$? $((SECONDS-s))s $(grep -a 'test cases:' $R/$name.log | tail -1 | sed 's/\x1b\[[0-9;]*m//g')" >> $R/summary.txt; }
t train_np2 120 mpirun -np 2 --bind-to none $b/train_gpu_test_bin
mkdir -p $R/metrics; for d in /tmp/gpu-train-sp2-*; do cp $d/metrics.jsonl $R/metrics/$(basename $d).jsonl 2>/dev/null; done; rm -rf /tmp/gpu-train-*
s=$SECONDS; OUT=$R/b1k timeout 90 bench/gpu_bench.sh configs/gpt2-124m-1k.yaml 25 > $R/b1k.txt 2>&1; echo "b1k rc=$? $((SECONDS-s))s" >> $R/summary.txt
s=$SECONDS; OUT=$R/longest timeout 90 bench/longest_context.sh 2097152 > $R/longest.txt 2>&1; echo "longest rc=$? $((SECONDS-s))s" >> $R/summary.txt
s=$SECONDS; OUT=$R/nvme timeout 180 bench/largest_gpu_model.sh nvme "28 2560 20" > $R/nvme.txt 2>&1; echo "nvme rc=$? $((SECONDS-s))s" >> $R/summary.txt
grep -a "2 ranks vs 1 rank" $R/train_np2.log
tail -4 $R/b1k.txt | head -2; tail -4 $R/longest.txt; cat $R/nvme.txt
grep -a "FAIL\|ERROR" $R/*.log | head
cat $R/summary.txt
cd $OUT && tar czf results.tgz r && rm -rf r
