set -u
tar xJf .kit/devkit.tar.xz && source .devkit/env.sh
R=$OUT/r; mkdir -p $R
free -m > $R/free.txt
OUT=$R/device timeout 200 bench/largest_gpu_model.sh device "34 4096 32" "32 4096 32"; echo "device rc=$?" >> $R/summary.txt
OUT=$R/cpu timeout 300 bench/largest_gpu_model.sh cpu "36 4096 32"; echo "cpu rc=$?" >> $R/summary.txt
cat $R/device/summary.txt $R/cpu/summary.txt $R/summary.txt; grep -ih "error\|memory" $R/device/train-*.log $R/cpu/train-*.log | head -12
cd $OUT && tar czf results.tgz r && rm -rf r
