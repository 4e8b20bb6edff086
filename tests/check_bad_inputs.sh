#!/bin/sh
# Bad input never crashes: every malformed config, damaged data file and damaged checkpoint in the
# corpus (tests/bad/, made by tools/make_bad_corpus.py; checkpoints are damaged here) must end the
# trainer with exit code 2 and exactly one line on stderr that names the file and the problem,
# print nothing on stdout, and leave no result file behind.
# Usage: check_bad_inputs.sh TRAINER SOURCE_DIR
set -u
trainer=$1
bad=$2/tests/bad
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
failed=0

# check NAME NEEDLE WANT -- ARGS...: runs the trainer with ARGS plus output files, then checks.
check() {
    name=$1 needle=$2 want=$3
    shift 4
    out="$work/out"
    rm -rf "$out"
    mkdir -p "$out"
    "$trainer" "$@" --save "$out/w.npz" --metrics "$out/m.csv" >"$work/stdout" 2>"$work/stderr"
    code=$?
    why=""
    [ "$code" -eq 2 ] || why="exit code $code, expected 2"
    lines=$(wc -l <"$work/stderr")
    [ -z "$why" ] && [ "$lines" -ne 1 ] && why="$lines lines on stderr, expected 1"
    [ -z "$why" ] && ! grep -qF -- "$needle" "$work/stderr" && why="the message does not name $needle"
    [ -z "$why" ] && ! grep -qF -- "$want" "$work/stderr" && why="the message lacks: $want"
    [ -z "$why" ] && [ -s "$work/stdout" ] && why="printed on stdout: $(head -c 200 "$work/stdout")"
    [ -z "$why" ] && [ -n "$(ls -A "$out")" ] && why="left files: $(ls -A "$out" | tr '\n' ' ')"
    if [ -n "$why" ]; then
        echo "FAIL $name: $why"
        echo "     stderr: $(head -c 400 "$work/stderr")"
        failed=$((failed + 1))
    else
        passed=$((passed + 1))
    fi
}

# Configs and data files, as listed in expect.tsv.
tab=$(printf '\t')
while IFS="$tab" read -r kind file want; do
    case "$kind" in
    "#"* | "") continue ;;
    config) check "$file" "$file" "$want" -- "$bad/$file" ;;
    config-data) check "$file" "${want%%: *}" "$want" -- "$bad/$file" ;;
    images) check "$file" "$file" "$want" -- "$bad/base.json" --set "data.train.images=$file" ;;
    labels) check "$file" "$file" "$want" -- "$bad/base.json" --set "data.train.labels=$file" ;;
    test-images) check "$file" "$file" "$want" -- "$bad/base.json" --set "data.test.images=$file" ;;
    *) echo "FAIL expect.tsv: unknown kind $kind"; failed=$((failed + 1)) ;;
    esac
done <"$bad/expect.tsv"

# Checkpoints and parameter files, damaged here from a good one.
base="$bad/base.json"
ck="$work/good.npz"
"$trainer" "$base" --checkpoint "$ck" >/dev/null || { echo "FAIL: could not make a checkpoint"; exit 1; }
size=$(wc -c <"$ck")
head -c $((size / 2)) "$ck" >"$work/truncated.npz"
check truncated-checkpoint truncated.npz "not an .npz file (no zip directory; truncated?)" -- --resume "$work/truncated.npz"
check truncated-load truncated.npz "not an .npz file" -- "$base" --load "$work/truncated.npz"
cp "$ck" "$work/crc.npz"
printf '\377' | dd of="$work/crc.npz" bs=1 seek=300 conv=notrunc 2>/dev/null
check crc-checkpoint crc.npz "CRC mismatch (the file is damaged)" -- --resume "$work/crc.npz"
: >"$work/empty.npz"
check empty-checkpoint empty.npz "not an .npz file (too short for a zip archive)" -- --resume "$work/empty.npz"
echo "not a zip file at all, just some words to be long enough" >"$work/text.npz"
check text-checkpoint text.npz "not an .npz file" -- --resume "$work/text.npz"
"$trainer" "$base" --set 'network[3].units=12' --set 'network[4]={"type":"relu"}' \
    --set 'network[5]={"type":"dense","units":10}' --set 'network[6]={"type":"softmax"}' \
    --checkpoint "$work/other.npz" >/dev/null
check other-network other.npz "3_dense_weight.npy has shape (676, 12), this network needs (676, 10)" -- "$base" --load "$work/other.npz"
check other-network-extra other.npz "array 5_dense_weight.npy does not belong to this network" -- "$base" --set 'network[3].units=12' --load "$work/other.npz"
"$trainer" "$base" --save "$work/params.npz" >/dev/null
check not-a-checkpoint params.npz "has no state.json (is it a checkpoint?)" -- --resume "$work/params.npz"
check missing-checkpoint nowhere.npz "nowhere.npz: cannot open" -- --resume "$work/nowhere.npz"

echo "bad inputs: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
