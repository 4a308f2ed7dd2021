set -u
tar xJf .kit/devkit.tar.xz && source .devkit/env.sh
R=$OUT/r; mkdir -p $R
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > $R/gpu.txt
s=$SECONDS; OUT=$R/longest timeout 120 bench/longest_context.sh 2097152 > $R/longest.txt 2>&1; echo "longest rc=$? $((SECONDS-s))s" >> $R/summary.txt
s=$SECONDS; OUT=$R/cpu timeout 200 bench/largest_gpu_model.sh cpu "36 3072 24" > $R/cpu.txt 2>&1; echo "cpu rc=$? $((SECONDS-s))s" >> $R/summary.txt
tail -4 $R/longest.txt; tail -4 $R/cpu.txt; cat $R/summary.txt
cd $OUT && tar czf results.tgz r && rm -rf r
