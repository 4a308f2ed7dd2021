set -u
tar xJf .kit/devkit.tar.xz && source .devkit/env.sh
R=$OUT/r; mkdir -p $R
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader > $R/gpu.txt
timeout 200 .devkit/bin/attention_gpu_test > $R/attention.log 2>&1; echo "attention rc=$?" >> $R/summary.txt
(cd bench/reference && timeout 120 python3 attention_torch_bench.py) > $R/torch_attention.log 2>&1; echo "torch rc=$?" >> $R/summary.txt
timeout 100 mpirun -np 2 .devkit/bin/ring_attention_gpu_test_bin > $R/ring_np2.log 2>&1; echo "ring_np2 rc=$?" >> $R/summary.txt
timeout 150 compute-sanitizer --tool racecheck --error-exitcode 9 .devkit/bin/attention_gpu_test -tce='*timing*,*4096*' > $R/racecheck_attention.log 2>&1; echo "racecheck rc=$?" >> $R/summary.txt
grep -h "test cases\|TIMING\|TORCH\|ERROR\|FAILED\|hazard" $R/*.log | grep -v "^\[" | head -60
cat $R/summary.txt
cd $OUT && tar czf results.tgz r && rm -rf r
