set -u
tar xJf .kit/devkit.tar.xz && source .devkit/env.sh
R=$OUT/r; mkdir -p $R
df -h /tmp > $R/df.txt; free -g >> $R/df.txt
OUT=$R/nvme timeout 470 bench/largest_gpu_model.sh nvme "32 3328 26"; echo "nvme rc=$?" >> $R/summary.txt
df -h /tmp >> $R/df.txt
cat $R/nvme/summary.txt $R/summary.txt; tail -5 $R/nvme/train-*.log
cd $OUT && tar czf results.tgz r && rm -rf r
