set -u
tar xJf .kit/devkit.tar.xz && source .devkit/env.sh
R=$OUT/r; mkdir -p $R
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > $R/gpu.txt
s=$SECONDS; OUT=$R/overlap timeout 150 bench/offload_overlap.sh cpu "12 1536 12" 8 5 > $R/overlap.txt 2>&1; echo "overlap rc=$? $((SECONDS-s))s" >> $R/summary.txt
s=$SECONDS; OUT=$R/nvme timeout 170 bench/largest_gpu_model.sh nvme "20 2048 16" > $R/nvme.txt 2>&1; echo "nvme rc=$? $((SECONDS-s))s" >> $R/summary.txt
s=$SECONDS; OUT=$R/longest timeout 150 bench/longest_context.sh 1048576 > $R/longest.txt 2>&1; echo "longest rc=$? $((SECONDS-s))s" >> $R/summary.txt
tail -6 $R/overlap.txt; tail -4 $R/nvme.txt; tail -4 $R/longest.txt; cat $R/summary.txt
cd $OUT && tar czf results.tgz r && rm -rf r
