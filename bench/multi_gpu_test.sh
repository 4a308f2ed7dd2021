#!/usr/bin/env bash
# bench/multi_gpu.sh checked on the CPU (DEVICE=cpu, 2 ranks over MPI): its parity part must pass
# every comparison with the real trainer, and must fail the ones against 1 rank when the 2-rank
# runs train differently (a wrapper raises their learning rate by 5 %), while the resume of
# those runs, compared with each other, stays bit-identical.
#   multi_gpu_test.sh DILATRON
set -uo pipefail
dilatron=$(realpath "$1")
tmp=${TEST_TMPDIR:-$(mktemp -d)}
export TMPDIR=$tmp OMPI_MCA_btl_vader_backing_directory=$tmp OMPI_MCA_mpi_yield_when_idle=1
export DEVICE=cpu MPIRUN="mpirun --oversubscribe --bind-to none"
fails=0
check() {  # check SUMMARY COUNT PATTERN: COUNT lines of SUMMARY match PATTERN
  local got
  got=$(grep -c -- "$3" "$1")
  if [ "$got" -ne "$2" ]; then echo "FAIL: $1 has $got lines /$3/, want $2"; fails=$((fails + 1)); else echo "ok: $2 x /$3/"; fi
}

DILATRON=$dilatron OUT=$tmp/real bench/multi_gpu.sh 2 parity
check "$tmp/real/summary.txt" 4 ' rc=0 PASS: '
check "$tmp/real/summary.txt" 1 'bit-identical'

# More than one rank: lr 1.05e-3 instead of the config's 1e-3.
cat > "$tmp/perturbed" <<WRAP
#!/usr/bin/env bash
if [ "\${OMPI_COMM_WORLD_SIZE:-1}" -gt 1 ]; then exec "$dilatron" "\$@" --set optimizer.lr=1.05e-3; fi
exec "$dilatron" "\$@"
WRAP
chmod +x "$tmp/perturbed"
DILATRON=$tmp/perturbed OUT=$tmp/perturbed-out bench/multi_gpu.sh 2 parity
check "$tmp/perturbed-out/summary.txt" 2 'parity SP .* FAIL: '
check "$tmp/perturbed-out/summary.txt" 1 'bit-identical'
echo "$fails failed"
[ "$fails" -eq 0 ]
