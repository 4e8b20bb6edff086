#!/bin/sh
# Several processes train to the weights of one (docs/mpi.md):
#   - mpirun -np R (R = 1, 2, 3) x 1 and 2 threads each ends with parameter files byte-identical
#     to a run without mpirun, for even and uneven lane shares, with a partial last batch that
#     leaves a process without samples, with dropout, shifts, shuffling, Nesterov and Adam; the
#     printed losses and accuracies are the same too;
#   - a process killed with SIGKILL ends the whole job (no hang); the last checkpoint is intact
#     and resumes, with another number of processes or with none, to the same weights;
#   - a write that fails on process 0 during training ends the whole job with its reason;
#   - batch normalisation's whole-batch statistics give the same weights too;
#   - batch size 1, fewer lanes than processes, and (with batchnorm) a last batch with fewer
#     samples than processes are refused with exit 2 and a message.
# Usage: check_mpi.sh TRAINER SOURCE_DIR MPIEXEC
set -u
trainer=$1
src=$2
mpiexec=$3
# shellcheck source=tests/testlib.sh
. "$(dirname "$0")/testlib.sh"

launch=$(mpi_launch "$mpiexec")
# Threads come from OMP_NUM_THREADS so that every run has the same config (saved in the files).
run_mpi() { # PROCESSES THREADS ARGS...
    procs=$1 threads=$2
    shift 2
    OMP_NUM_THREADS=$threads timeout 300 $launch -np "$procs" "$trainer" "$@"
}

# The figures of the epoch lines, without the timings.
figures() {
    grep '^epoch' "$1" | sed 's/  [0-9.]* s  [0-9]* img\/s$//'
}

mnist="$src/config/mnist-small.json"
report="$src/config/report.json"
# name, config, settings: 290 samples in batches of 32 leave a last batch of 2 samples, fewer
# than the processes.
check_equal() {
    name=$1 config=$2
    shift 2
    dir="$work/$name"
    mkdir -p "$dir"
    OMP_NUM_THREADS=1 "$trainer" "$config" "$@" --save "$dir/one.npz" --metrics "$dir/one.csv" \
        >"$dir/one.txt" || {
        fail "$name: the single-process run failed"
        return
    }
    for procs in 1 2 3; do
        for threads in 1 2; do
            out="$dir/r$procs-t$threads"
            run_mpi "$procs" "$threads" "$config" "$@" --save "$out.npz" --metrics "$out.csv" \
                >"$out.txt" 2>"$out.err" || {
                fail "$name: mpirun -np $procs with $threads threads failed: $(tail -3 "$out.err")"
                continue
            }
            checks=$((checks + 1))
            cmp -s "$dir/one.npz" "$out.npz" ||
                fail "$name: $procs processes x $threads threads: the weights differ from one process"
            [ "$(figures "$dir/one.txt")" = "$(figures "$out.txt")" ] ||
                fail "$name: $procs processes x $threads threads: the printed figures differ"
            [ "$(cut -d, -f1-5 "$dir/one.csv")" = "$(cut -d, -f1-5 "$out.csv")" ] ||
                fail "$name: $procs processes x $threads threads: the metrics differ"
            grep -q "x $procs processes" "$out.txt" || [ "$procs" -eq 1 ] ||
                fail "$name: the header does not name the $procs processes"
        done
    done
}

small="--set data.train.limit=290 --set data.test.limit=100 --set training.epochs=2"
# shellcheck disable=SC2086 # word splitting of the settings is meant
check_equal mnist-lanes6 "$mnist" $small --set training.batch_size=32 --set training.lanes=6
# shellcheck disable=SC2086
check_equal mnist-lanes5-adam "$mnist" $small --set training.batch_size=32 \
    --set training.lanes=5 --set training.optimizer=adam \
    --set training.learning_rate=0.002
# shellcheck disable=SC2086
check_equal report-plain-sgd "$report" $small --set training.batch_size=7 --set training.lanes=4 \
    --set training.shuffle=true
# Batch normalisation: the batch statistics are summed over every process's lanes mid-pass, so
# each process's share normalises with the whole batch's; 291 samples leave a last batch of 3.
bn_net='network=[{"type":"conv2d","filters":8,"kernel":5,"padding":"same"},{"type":"batchnorm"},
{"type":"relu"},{"type":"maxpool","size":2},{"type":"conv2d","filters":16,"kernel":3},
{"type":"batchnorm"},{"type":"relu"},{"type":"maxpool","size":2},{"type":"dense","units":32},
{"type":"batchnorm"},{"type":"relu"},{"type":"dense","units":10},{"type":"softmax"}]'
# shellcheck disable=SC2086
check_equal mnist-batchnorm "$mnist" $small --set data.train.limit=291 \
    --set training.batch_size=32 --set training.lanes=6 --set "$bn_net"

# ---- a process dies: the job ends, the checkpoint is intact and resumes with other counts ----
dir="$work/killed"
mkdir -p "$dir"
long="--set data.train.limit=6000 --set data.test.limit=100 --set training.epochs=2
      --set training.batch_size=32 --set training.lanes=6"
checkpoint="training.checkpoint={\"path\":\"$dir/ck.npz\",\"every_steps\":10}"
# shellcheck disable=SC2086
OMP_NUM_THREADS=1 "$trainer" "$mnist" $long --set "$checkpoint" --save "$dir/one.npz" >/dev/null ||
    fail "killed: the single-process run failed"
rm -f "$dir/ck.npz"
# shellcheck disable=SC2086
OMP_NUM_THREADS=1 timeout 120 $launch -np 3 "$trainer" "$mnist" $long --set "$checkpoint" \
    --save "$dir/killed.npz" >"$dir/killed.txt" 2>"$dir/killed.err" &
job=$!
tries=0
while [ ! -f "$dir/ck.npz" ] && kill -0 "$job" 2>/dev/null && [ $tries -lt 1200 ]; do
    sleep 0.05
    tries=$((tries + 1))
done
sleep 0.3
# The trainer processes are the children of mpirun, itself the child of `timeout` ($job); kill
# the last of them. (/proc, so as not to need procps.)
children() { # the processes whose parent is $parent
    for stat in /proc/[0-9]*/stat; do
        # "pid (comm) state ppid ...": the ppid is the second field after the last ')'
        ppid=$(sed 's/.*) [^ ]* \([0-9]*\).*/\1/' "$stat" 2>/dev/null) || continue
        if [ "$ppid" = "$parent" ]; then
            pid=${stat#/proc/}
            echo "${pid%/stat}"
        fi
    done
}
parent=$job
launcher=$(children | head -1)
parent=$launcher
victim=$(children | sort -n | tail -1)
if [ -n "$victim" ]; then kill -9 "$victim"; else fail "killed: no trainer process found"; fi
wait "$job"
status=$?
checks=$((checks + 1))
if [ -f "$dir/killed.npz" ]; then
    fail "killed: the job finished before a process could be killed (make it longer)"
elif [ "$status" -eq 0 ] || [ "$status" -eq 124 ]; then
    fail "killed: the job $([ "$status" -eq 0 ] && echo "exited 0" || echo "hung")"
elif ! grep -q "signal 9\|killed\|Killed" "$dir/killed.err"; then
    fail "killed: no message says a process was killed: $(cat "$dir/killed.err")"
elif [ ! -f "$dir/ck.npz" ]; then
    fail "killed: no checkpoint"
else
    run_mpi 2 1 --resume "$dir/ck.npz" --save "$dir/resumed2.npz" >/dev/null 2>"$dir/r2.err" ||
        fail "killed: resuming with 2 processes failed: $(cat "$dir/r2.err")"
    cmp -s "$dir/one.npz" "$dir/resumed2.npz" ||
        fail "killed: resumed with 2 processes, the weights differ from one process"
    OMP_NUM_THREADS=2 "$trainer" --resume "$dir/ck.npz" --save "$dir/resumed1.npz" >/dev/null ||
        fail "killed: resuming without mpirun failed"
    cmp -s "$dir/one.npz" "$dir/resumed1.npz" ||
        fail "killed: resumed without mpirun, the weights differ from one process"
    checks=$((checks + 2))
fi

# ---- a write that fails on process 0 while all train ends the job, with the reason ----
dir="$work/write-fails"
mkdir -p "$dir/out"
# shellcheck disable=SC2086
OMP_NUM_THREADS=1 timeout 120 $launch -np 2 "$trainer" "$mnist" $long \
    --metrics "$dir/out/m.csv" >"$dir/run.txt" 2>"$dir/run.err" &
job=$!
tries=0
while ! grep -q "^train " "$dir/run.txt" 2>/dev/null && kill -0 "$job" 2>/dev/null &&
    [ $tries -lt 1200 ]; do
    sleep 0.05
    tries=$((tries + 1))
done
rm -rf "$dir/out" # the metrics file's folder vanishes before the first epoch ends
wait "$job"
status=$?
checks=$((checks + 1))
if [ "$status" -eq 0 ] || [ "$status" -eq 124 ]; then
    fail "write-fails: the job $([ "$status" -eq 0 ] && echo "exited 0" || echo "hung")"
elif ! grep -q "^trainer: .*m.csv.*cannot create" "$dir/run.err"; then
    fail "write-fails: no message naming the metrics file: $(cat "$dir/run.err")"
fi

# ---- what several processes cannot do ----
refused() { # NAME EXPECTED-TEXT PROCESSES ARGS...
    name=$1 text=$2 procs=$3
    shift 3
    run_mpi "$procs" 1 "$@" >"$work/$name.out" 2>"$work/$name.err"
    status=$?
    checks=$((checks + 1))
    [ "$status" -eq 2 ] || fail "$name: exit $status, expected 2"
    grep -q "$text" "$work/$name.err" || fail "$name: no message with '$text': $(cat "$work/$name.err")"
    [ "$(grep -c "^trainer:" "$work/$name.err")" -eq 1 ] ||
        fail "$name: expected one message, not one per process: $(cat "$work/$name.err")"
}
refused batch1 "per-sample SGD" 2 "$report"
refused lanes "set training.lanes to 3 or more" 3 "$mnist" --set training.lanes=2
refused small-batch "at least one sample per process" 3 "$mnist" --set training.batch_size=2
refused missing-data "cannot open" 2 "$mnist" --set data.train.images=/nonexistent.gz
# A last batch of 2 samples cannot give each of 3 processes a share of batchnorm's sums.
# shellcheck disable=SC2086
refused batchnorm-last-batch "last batch has 2 samples" 3 "$mnist" $small \
    --set training.batch_size=32 --set training.lanes=6 --set "$bn_net"

echo "$checks checks, $failures failures"
[ "$failures" -eq 0 ]
