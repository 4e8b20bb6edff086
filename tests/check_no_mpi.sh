#!/bin/sh
# A trainer built without MPI, started by mpirun as one of several processes, refuses to train
# (each process would train its own copy): exit 2, one message naming the fix.
# Usage: check_no_mpi.sh TRAINER SOURCE_DIR MPIEXEC
set -u
trainer=$1
src=$2
mpiexec=$3
# shellcheck source=tests/testlib.sh
. "$(dirname "$0")/testlib.sh"
err="$work/err"
timeout 120 $(mpi_launch "$mpiexec") -np 2 "$trainer" "$src/config/report.json" >/dev/null 2>"$err"
status=$?
[ "$status" -eq 2 ] || fail "exit $status, expected 2"
grep -q "built without MPI" "$err" || fail "no message: $(cat "$err")"
[ "$(grep -c '^trainer:' "$err")" -eq 1 ] || fail "not one message: $(cat "$err")"
[ "$failures" -eq 0 ] && echo "refused with one message, exit 2"
[ "$failures" -eq 0 ]
