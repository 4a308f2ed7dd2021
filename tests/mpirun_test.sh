#!/usr/bin/env bash
# mpirun_test.sh N BINARY [ARGS...]: runs BINARY on N ranks of this machine and exits with
# mpirun's status. Output lines carry their rank ("[1,R]<stdout>:"); a failing job is named
# with the ranks that reported failure. A job that runs past MPIRUN_TEST_TIMEOUT seconds
# (default 240) is killed by mpirun and fails, so a deadlock cannot hang the test run.
set -uo pipefail

if [ $# -lt 2 ]; then
  echo "usage: $0 N BINARY [ARGS...]" >&2
  exit 2
fi
ranks=$1
binary=$2
shift 2
# A relative path is relative to the runfiles tree we run in; mpirun needs it spelled out.
case "$binary" in /*) ;; *) binary="$PWD/$binary" ;; esac

# Inside Bazel's sandbox mpirun gets the same small PID, hence the same job id, in every test
# running at once; shared-memory files named after the job in the shared /dev/shm would then
# collide (ranks of different tests mapping each other's segments: SIGSEGV). The session
# directory and those files go to the test's private tmp instead.
export TMPDIR="${TEST_TMPDIR:-${TMPDIR:-/tmp}}"
export OMPI_MCA_btl_vader_backing_directory="$TMPDIR"
export OMPI_MCA_mpi_yield_when_idle=1

log="$TMPDIR/mpirun_test.$$.log"
mpirun -np "$ranks" --oversubscribe --bind-to none --tag-output \
  --timeout "${MPIRUN_TEST_TIMEOUT:-240}" "$binary" "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ]; then
  failed=$(grep -aoE 'FAILED on rank [0-9]+' "$log" | grep -oE '[0-9]+$' | sort -nu | tr '\n' ' ')
  echo "mpirun_test: $(basename "$binary") on $ranks ranks exited with status $status;" \
    "failed ranks: ${failed:-none reported (mpirun names the first rank that exited, above)}" >&2
fi
rm -f "$log"
exit "$status"
