#!/bin/sh
# A run killed with SIGKILL at any point and resumed from its last checkpoint ends with weights
# bit-identical to an uninterrupted run: at batch 1 and with minibatches (with batchnorm's running
# statistics too), with 1 and 2 threads,
# killed at several moments after its first checkpoint. Also: SIGINT and SIGTERM write a checkpoint and exit 130 and 143.
# Usage: check_resume.sh TRAINER SOURCE_DIR
set -u
trainer=$1
src=$2
# shellcheck source=tests/testlib.sh
. "$(dirname "$0")/testlib.sh"

# mode name, config, extra settings
run_case() {
    name=$1 config=$2 threads=$3 delay=$4
    shift 4
    dir="$work/$name-$threads-$delay"
    mkdir -p "$dir"
    # Both runs have the same config (checkpoint settings included), so that the saved files,
    # which carry the config, can be compared whole.
    checkpoint="training.checkpoint={\"path\":\"$dir/ck.npz\",\"every_steps\":23}"
    "$trainer" "$config" "$@" --threads "$threads" --set "$checkpoint" \
        --save "$dir/ref.npz" >/dev/null || {
        fail "$name: the uninterrupted run failed"
        return
    }
    rm -f "$dir/ck.npz"
    "$trainer" "$config" "$@" --threads "$threads" --set "$checkpoint" \
        --save "$dir/killed.npz" >/dev/null 2>&1 &
    pid=$!
    # Kill it $delay seconds after its first checkpoint appears (or once it has ended).
    tries=0
    while [ ! -f "$dir/ck.npz" ] && kill -0 "$pid" 2>/dev/null && [ $tries -lt 1200 ]; do
        sleep 0.05
        tries=$((tries + 1))
    done
    sleep "$delay"
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    if [ -f "$dir/killed.npz" ]; then
        cp "$dir/killed.npz" "$dir/res.npz" # it finished before the kill
    elif [ -f "$dir/ck.npz" ]; then
        "$trainer" --resume "$dir/ck.npz" --threads "$threads" --save "$dir/res.npz" >/dev/null ||
            { fail "$name: --resume failed"; return; }
    else
        fail "$name: no checkpoint was written before the run ended"
        return
    fi
    checks=$((checks + 1))
    cmp -s "$dir/ref.npz" "$dir/res.npz" ||
        fail "$name, $threads threads, killed after ${delay}s: resumed weights differ"
}

report="$src/config/report.json"
lenet="$src/config/bench/lenet-b32.json"
for threads in 1 2; do
    for delay in 0 0.3; do
        run_case report-b1 "$report" "$threads" "$delay" --set training.epochs=8 \
            --set data.test.limit=100
        run_case lenet-b32 "$lenet" "$threads" "$delay" --set data.train.limit=8000 \
            --set training.epochs=3
    done
    # Optimizer state (adam's two moments) and a schedule travel in the checkpoint too.
    run_case lenet-adam "$lenet" "$threads" 0.1 --set data.train.limit=8000 \
        --set training.epochs=3 --set training.optimizer=adam \
        --set training.learning_rate=0.002 --set training.lr_schedule=cosine
    # batchnorm's running statistics (buffers) travel in the checkpoint with the weights.
    run_case lenet-batchnorm "$lenet" "$threads" 0.2 --set data.train.limit=8000 \
        --set training.epochs=3 --set 'network[1]={"type":"batchnorm"}' \
        --set 'network[7]={"type":"batchnorm","momentum":0.3}'
done

# SIGINT / SIGTERM: a checkpoint, exit 128 + signal, and the resumed run still ends identical.
for sig in INT TERM; do
    dir="$work/signal-$sig"
    mkdir -p "$dir"
    "$trainer" "$lenet" --set data.train.limit=8000 --set training.epochs=3 \
        --checkpoint "$dir/ck.npz" --save "$dir/never.npz" >"$dir/out" 2>"$dir/err" &
    pid=$!
    # The header is printed once the signal handlers are in place; then let it train a moment.
    tries=0
    while ! grep -q "^train " "$dir/out" 2>/dev/null && [ $tries -lt 1200 ]; do
        sleep 0.05
        tries=$((tries + 1))
    done
    sleep 0.3
    kill -"$sig" "$pid"
    wait "$pid"
    code=$?
    want=130
    [ "$sig" = TERM ] && want=143
    checks=$((checks + 1))
    [ "$code" -eq "$want" ] || fail "SIG$sig: exit $code, expected $want ($(cat "$dir/err"))"
    [ -f "$dir/ck.npz" ] || fail "SIG$sig: no checkpoint written"
    [ -f "$dir/never.npz" ] && fail "SIG$sig: --save written by an interrupted run"
    grep -q "interrupted (SIG$sig); checkpoint written" "$dir/err" || fail "SIG$sig: message: $(cat "$dir/err")"
    "$trainer" "$lenet" --set data.train.limit=8000 --set training.epochs=3 \
        --save "$dir/ref.npz" >/dev/null
    "$trainer" --resume "$dir/ck.npz" --save "$dir/res.npz" >/dev/null
    cmp -s "$dir/ref.npz" "$dir/res.npz" || fail "SIG$sig: resumed weights differ"
done

echo "$((checks - failures)) passed, $failures failed"
[ "$failures" -eq 0 ]
