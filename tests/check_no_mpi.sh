#!/bin/sh
# A trainer built without MPI, started by mpirun as one of several processes, refuses to train
# (each process would train its own copy): exit 2, one message naming the fix.
# Usage: check_no_mpi.sh TRAINER SOURCE_DIR MPIEXEC
set -u
trainer=$1
src=$2
mpiexec=$3
err=$(mktemp)
trap 'rm -f "$err"' EXIT
launch="$mpiexec --oversubscribe --bind-to none"
[ "$(id -u)" -eq 0 ] && launch="$launch --allow-run-as-root"
timeout 120 $launch -np 2 "$trainer" "$src/config/report.json" >/dev/null 2>"$err"
status=$?
failures=0
[ "$status" -eq 2 ] || { echo "FAIL: exit $status, expected 2"; failures=1; }
grep -q "built without MPI" "$err" || { echo "FAIL: no message: $(cat "$err")"; failures=1; }
[ "$(grep -c '^trainer:' "$err")" -eq 1 ] || { echo "FAIL: not one message: $(cat "$err")"; failures=1; }
[ "$failures" -eq 0 ] && echo "refused with one message, exit 2"
exit "$failures"
