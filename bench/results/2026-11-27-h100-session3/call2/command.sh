set -u
tar xJf .kit/devkit.tar.xz && source .devkit/env.sh
R=$OUT/r; mkdir -p $R
timeout 150 .devkit/bin/attention_gpu_test > $R/attention.log 2>&1; echo "attention rc=$?" >> $R/summary.txt
timeout 60 mpirun -np 2 .devkit/bin/ring_attention_gpu_test_bin > $R/ring_np2.log 2>&1; echo "ring_np2 rc=$?" >> $R/summary.txt
timeout 200 compute-sanitizer --tool racecheck --error-exitcode 9 .devkit/bin/attention_gpu_test -tc='*bf16*' > $R/racecheck_attention_bf16.log 2>&1; echo "racecheck_bf16 rc=$?" >> $R/summary.txt
timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 .devkit/bin/attention_gpu_test -tc='*bf16*' > $R/memcheck_attention_bf16.log 2>&1; echo "memcheck_bf16 rc=$?" >> $R/summary.txt
grep -ah "test cases\|TIMING.*bf16\|ERROR\|FAILED\|hazard\|error" $R/*.log | grep -v "^\[" | head -40
cat $R/summary.txt
cd $OUT && tar czf results.tgz r && rm -rf r
