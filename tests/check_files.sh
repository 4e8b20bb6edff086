#!/bin/sh
# What a run does with the user's files and streams: a closed stdout stops the printing, not the
# run; an output given through a symbolic link replaces the file and keeps the link; a resumed
# run that diverges keeps the metrics of the epochs before; --checkpoint supplies the path that
# training.checkpoint leaves out; a batch larger than the data trains without sizing for it.
# Usage: check_files.sh TRAINER SOURCE_DIR
set -u
trainer=$1
base=$2/tests/bad/base.json
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
failed=0
ok() { passed=$((passed + 1)); }
fail() {
    echo "FAIL $1"
    failed=$((failed + 1))
}

# stdout closed after one line (trainer ... | head -1): exit 0, every file written.
("$trainer" "$base" --set training.epochs=3 --save "$work/pipe.npz" --metrics "$work/pipe.csv" \
    --checkpoint "$work/pipe-ck.npz" 2>"$work/pipe.err"; echo $? >"$work/pipe.rc") | head -1 >/dev/null
[ "$(cat "$work/pipe.rc")" = 0 ] || fail "broken pipe: exit $(cat "$work/pipe.rc"): $(cat "$work/pipe.err")"
[ -s "$work/pipe.npz" ] && [ -s "$work/pipe-ck.npz" ] && [ "$(wc -l <"$work/pipe.csv")" -eq 4 ] && ok ||
    fail "broken pipe: the parameters, checkpoint or 3 metrics rows are missing"

# An output through a symbolic link: the link stays, its file gets the parameters.
: >"$work/target.npz"
ln -s "$work/target.npz" "$work/link.npz"
"$trainer" "$base" --save "$work/link.npz" >/dev/null 2>&1 || fail "symbolic link: the run failed"
[ -L "$work/link.npz" ] && [ -s "$work/target.npz" ] && ok ||
    fail "symbolic link: the link was replaced, or its file not written"

# A resumed run that diverges in its first epoch still writes the metrics of the epochs before
# (a weight of the checkpoint made NaN: the first step's loss is not finite).
"$trainer" "$base" --checkpoint "$work/div.npz" >/dev/null 2>&1 || fail "divergence: no checkpoint"
if command -v python3 >/dev/null; then
    python3 - "$work/div.npz" "$work/nan.npz" <<'PY'
import struct, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    members = [(i.filename, z.read(i.filename)) for i in z.infolist()]
with zipfile.ZipFile(sys.argv[2], "w") as z:
    for name, data in members:
        if name == "3_dense_weight.npy":
            start = 10 + struct.unpack("<H", data[8:10])[0]
            data = data[:start] + struct.pack("<f", float("nan")) + data[start + 4:]
        z.writestr(name, data)
PY
    "$trainer" --resume "$work/nan.npz" --set training.epochs=2 --metrics "$work/div.csv" \
        >/dev/null 2>"$work/div.err"
    code=$?
    [ "$code" -eq 3 ] && [ "$(wc -l <"$work/div.csv" 2>/dev/null)" = 2 ] && ok ||
        fail "divergence after resuming: exit $code, metrics: $(cat "$work/div.csv" 2>&1)"
fi

# --checkpoint gives the path for a config's training.checkpoint.every_steps.
"$trainer" "$base" --set 'training.checkpoint={"every_steps":1}' --checkpoint "$work/steps.npz" \
    >/dev/null 2>"$work/steps.err" && [ -s "$work/steps.npz" ] && ok ||
    fail "--checkpoint with every_steps: $(cat "$work/steps.err")"

# A batch far larger than the data: sized for the data (one image), not for the batch.
"$trainer" "$base" --set training.batch_size=1048576 --set data.train.limit=1 --max-memory 64M \
    >/dev/null 2>"$work/batch.err" && ok || fail "huge batch, one image: $(cat "$work/batch.err")"

echo "files: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
