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

# verdict NAME CODE NEEDLE WANT [OUT]: the last run (exit code $code, $work/stdout, $work/stderr)
# must have exited with CODE, written one line starting 'trainer: ' that names NEEDLE and says
# WANT, nothing on stdout, and (when OUT is given) no file in OUT.
verdict() {
    name=$1 want_code=$2 needle=$3 want=$4 out=${5:-}
    why=""
    [ "$code" -eq "$want_code" ] || why="exit code $code, expected $want_code"
    lines=$(wc -l <"$work/stderr")
    [ -z "$why" ] && [ "$lines" -ne 1 ] && why="$lines lines on stderr, expected 1"
    [ -z "$why" ] && ! grep -q '^trainer: ' "$work/stderr" && why="the message does not start with 'trainer: '"
    [ -z "$why" ] && ! grep -qF -- "$needle" "$work/stderr" && why="the message does not name $needle"
    [ -z "$why" ] && ! grep -qF -- "$want" "$work/stderr" && why="the message lacks: $want"
    [ -z "$why" ] && [ -s "$work/stdout" ] && why="printed on stdout: $(head -c 200 "$work/stdout")"
    [ -z "$why" ] && [ -n "$out" ] && [ -n "$(ls -A "$out")" ] && why="left files: $(ls -A "$out" | tr '\n' ' ')"
    if [ -n "$why" ]; then
        echo "FAIL $name: $why"
        echo "     stderr: $(head -c 400 "$work/stderr")"
        failed=$((failed + 1))
    else
        passed=$((passed + 1))
    fi
}

# check NAME NEEDLE WANT -- ARGS...: runs the trainer with ARGS plus output files; exit 2 wanted.
check() {
    name=$1 needle=$2 want=$3
    shift 4
    out="$work/out"
    rm -rf "$out"
    mkdir -p "$out"
    "$trainer" "$@" --save "$out/w.npz" --metrics "$out/m.csv" >"$work/stdout" 2>"$work/stderr"
    code=$?
    verdict "$name" 2 "$needle" "$want" "$out"
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
    folder) check "$file" "$file" "$want" -- "$bad/images.json" --set "data.train.images=$file" ;;
    folder-test) check "$file" "$file" "$want" -- "$bad/images.json" --set "data.test={\"format\":\"folder\",\"images\":\"$file\"}" ;;
    csv) check "$file" "$file" "$want" -- "$bad/images.json" --set "data.train={\"format\":\"csv\",\"images\":\"$file\",\"shape\":[6,5,1]}" ;;
    cifar) check "$file" "$file" "$want" -- "$bad/images.json" --set "data.train={\"format\":\"cifar\",\"images\":\"$file\",\"shape\":[6,5,1]}" ;;
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
printf 'PK\005\006\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000' >"$work/empty.zip"
check not-a-checkpoint params.npz "has no state.json (is it a checkpoint?)" -- --resume "$work/params.npz"
check missing-checkpoint nowhere.npz "nowhere.npz: cannot open" -- --resume "$work/nowhere.npz"

# check_plain NAME CODE NEEDLE WANT -- ARGS...: the command as given (no output files added),
# which must exit with CODE.
check_plain() {
    name=$1 want_code=$2 needle=$3 want=$4
    shift 5
    "$trainer" "$@" >"$work/stdout" 2>"$work/stderr"
    code=$?
    verdict "$name" "$want_code" "$needle" "$want"
}

# --set values are read whole: what is not entirely JSON is a string, which numbers refuse.
check set-trailing-junk training.epochs 'expected a positive integer, got "2 junk"' -- "$base" --set 'training.epochs=2 junk'
check set-list-of-two training.epochs 'got "3,4"' -- "$base" --set 'training.epochs=3,4'
check set-trueish training.shuffle 'expected true or false, got "trueish"' -- "$base" --set 'training.shuffle=trueish'
check set-number-prefix data.train.limit 'got "2024-train.gz"' -- "$base" --set 'data.train.limit=2024-train.gz'
check set-leading-zero training.epochs 'got "01"' -- "$base" --set 'training.epochs=01'
check set-nul-escape training.init 'expected one of' -- "$base" --set 'training.init="he\u0000xx"'
# batchnorm: its keys' ranges, and the whole-batch statistics that batch size 1 cannot give.
check batchnorm-batch1 'network[1]' 'training.batch_size is 1: set training.batch_size to 2 or more' -- "$base" --set 'network[1]={"type":"batchnorm"}' --set training.batch_size=1
check batchnorm-momentum 'network[1].momentum' 'expected a number from 0 to 1' -- "$base" --set 'network[1]={"type":"batchnorm","momentum":1.5}'
check batchnorm-eps 'network[1].eps' 'expected' -- "$base" --set 'network[1]={"type":"batchnorm","eps":0}'
check batchnorm-unknown-key 'network[1].epsilon' 'unknown key' -- "$base" --set 'network[1]={"type":"batchnorm","epsilon":0.1}'
newline_key=$(printf 'training.ep\nochs=3')
check set-newline-key 'training.ep\nochs' 'unknown key' -- "$base" --set "$newline_key"

# Outputs: never a device, a FIFO or a folder; never an input or another output (by inode).
before=$(cksum <"$base")
# Devices of our own (as root), so that a regression replaces them and not /dev/null.
if mknod "$work/null" c 1 3 2>/dev/null && mknod "$work/full" c 1 7 2>/dev/null; then
    check_plain save-device 2 null 'is a device; an output must be a regular file' -- "$base" --save "$work/null"
    check_plain metrics-device 2 full 'is a device' -- "$base" --metrics "$work/full"
    [ -c "$work/null" ] || { echo "FAIL: the device was replaced"; failed=$((failed + 1)); }
fi
check_plain save-folder 2 "$work" 'is a folder' -- "$base" --save "$work"
mkfifo "$work/fifo"
check_plain save-fifo 2 fifo 'is a FIFO' -- "$base" --save "$work/fifo"
check_plain metrics-is-config 2 base.json 'is also the config file' -- "$base" --metrics "$base"
check_plain save-is-load 2 params.npz 'is also --load' -- "$base" --load "$work/params.npz" --save "$work/params.npz"
check_plain checkpoint-is-data 2 images.idx 'is also the training images' -- "$base" --checkpoint "$bad/data/images.idx"
check_plain two-outputs 2 same.npz 'are the same file; each output needs its own' -- "$base" --save "$work/same.npz" --metrics "$work/same.npz"
ln "$base" "$work/hard-link.json" 2>/dev/null || cp "$base" "$work/hard-link.json"
check_plain hard-link 2 hard-link.json 'writing it would destroy it' -- "$base" --profile "$work/hard-link.json"
ln -s "$(cd "$(dirname "$base")" && pwd)/base.json" "$work/sym-link.json"
check_plain symbolic-link 2 sym-link.json 'is also the config file' -- "$base" --save-init "$work/sym-link.json"
check_plain csv-is-load 2 params.npz 'is also --load' -- eval "$base" --load "$work/params.npz" --csv "$work/params.npz"
[ "$(cksum <"$base")" = "$before" ] || { echo "FAIL: the config file was changed"; failed=$((failed + 1)); }

# Inputs are regular files: a FIFO would block for ever.
check_plain config-fifo 2 fifo 'is a FIFO, not a file' -- "$work/fifo"
check_plain load-fifo 2 fifo 'is a FIFO, not a file' -- "$base" --load "$work/fifo"
check_plain resume-fifo 2 fifo 'is a FIFO, not a file' -- --resume "$work/fifo"
check_plain data-fifo 2 fifo 'is a FIFO, not a file' -- "$base" --set "data.train.images=$work/fifo"
check_plain config-folder 2 "$bad" 'is a folder, not a file' -- "$bad"
check_plain predict-fifo 2 fifo 'is a FIFO, not a file' -- predict --load "$work/params.npz" "$work/fifo"

# Command lines: one line, 'trainer: ' first, long options by name.
check_plain option-no-value 2 --save 'this option needs a value: --save' -- "$base" --save
check_plain option-unknown 2 --savee 'unknown option --savee' -- "$base" --savee x
check_plain eval-no-load 2 eval '--load FILE.npz is required' -- eval "$base"
check_plain eval-option 2 --csv 'this option needs a value: --csv' -- eval --load "$work/params.npz" --csv
check_plain predict-unknown 2 --bogus 'unknown option --bogus' -- predict --bogus
check_plain predict-no-input 2 predict 'no input images' -- predict --load "$work/params.npz"
check_plain max-memory-bad 2 --max-memory 'expected a size like 8G' -- "$base" --max-memory 12X
check_plain max-memory-small 1 --max-memory 'needs about' -- "$base" --max-memory 64k
check_plain empty-zip-load 2 empty.zip 'has no array' -- "$base" --load "$work/empty.zip"

# PGM images are read token by token: whole numbers, nothing after the last sample.
printf 'P2\n2 2\n255\n1 2\n3 1.9\n' >"$work/fraction.pgm"
printf 'P2\n2 2\n255\n1 2\n3 4 5\n' >"$work/extra.pgm"
printf 'P5\n2 2\n255\n\001\002\003\004\005' >"$work/long.pgm"
printf 'P2\n2 2\n255\n1 2 3\n' >"$work/short.pgm"
check_plain pgm-fraction 2 fraction.pgm 'sample 3 is not a whole number' -- predict --load "$work/params.npz" "$work/fraction.pgm"
check_plain pgm-extra 2 extra.pgm 'text after the last' -- predict --load "$work/params.npz" "$work/extra.pgm"
check_plain pgm-long 2 long.pgm 'trailing data in the PGM' -- predict --load "$work/params.npz" "$work/long.pgm"
check_plain pgm-short 2 short.pgm 'fewer than 4 samples' -- predict --load "$work/params.npz" "$work/short.pgm"

# Checkpoints whose state does not fit the run (edited by hand): refused, with the reason.
if command -v python3 >/dev/null; then
    edit_state() { # OUT FIELDS: a copy of the good checkpoint with state.json's FIELDS (JSON) set
        python3 - "$ck" "$1" "$2" <<'PY'
import json, sys, zipfile
src, out, fields = sys.argv[1:]
with zipfile.ZipFile(src) as z:
    members = [(i.filename, z.read(i.filename)) for i in z.infolist()]
with zipfile.ZipFile(out, "w") as z:
    for name, data in members:
        if name == "state.json":
            state = json.loads(data)
            if fields == "duplicate":
                data = data.decode().replace("{", '{"epoch": 0, ', 1).encode()
            else:
                state.update(json.loads(fields))
                data = json.dumps(state).encode()
        z.writestr(name, data)
PY
    }
    edit_state "$work/half-epoch.npz" '{"epoch": 0.5}'
    check_plain checkpoint-half-epoch 2 half-epoch.npz 'epoch is missing or out of range' -- --resume "$work/half-epoch.npz"
    edit_state "$work/off-batch.npz" '{"epoch": 0, "position": 3, "step": 1}'
    check_plain checkpoint-off-batch 2 off-batch.npz 'is not one a run of batches of 2' -- --resume "$work/off-batch.npz"
    edit_state "$work/wrong-step.npz" '{"epoch": 0, "position": 2, "step": 7}'
    check_plain checkpoint-wrong-step 2 wrong-step.npz 'step 7' -- --resume "$work/wrong-step.npz"
    edit_state "$work/too-many-correct.npz" '{"correct": 1000}'
    check_plain checkpoint-correct 2 too-many-correct.npz 'correct is missing or out of range' -- --resume "$work/too-many-correct.npz"
    edit_state "$work/negative-loss.npz" '{"loss_sum": -1}'
    check_plain checkpoint-loss 2 negative-loss.npz 'loss_sum is missing or out of range' -- --resume "$work/negative-loss.npz"
    edit_state "$work/dup-state.npz" duplicate
    check_plain checkpoint-duplicate 2 dup-state.npz 'epoch: the key is given twice' -- --resume "$work/dup-state.npz"
fi

# predict on PNG files: a damaged one, one of other channels or size than the network's input.
folders="$bad/folders"
"$trainer" "$bad/images.json" --save "$work/images.npz" >/dev/null ||
    { echo "FAIL: could not train on the good folder"; failed=$((failed + 1)); }
check_plain predict-corrupt-png 2 corrupt-png/b/1.png 'a damaged PNG file: IDAT: ' -- predict --load "$work/images.npz" "$folders/corrupt-png/b/1.png"
check_plain predict-truncated-png 2 truncated-png/b/1.png 'the file ends early (truncated)' -- predict --load "$work/images.npz" "$folders/truncated-png/b/1.png"
check_plain predict-png-channels 2 other-channels/b/1.png 'a 5x6 image with 3 channels, the network takes 5x6 with 1' -- predict --load "$work/images.npz" "$folders/other-channels/b/1.png"
check_plain predict-png-size 2 other-size/b/1.png 'a 5x7 image with 1 channel, the network takes 5x6 with 1' -- predict --load "$work/images.npz" "$folders/other-size/b/1.png"
check_plain predict-png-loop 2 file-loop/b/1.png 'Too many levels of symbolic links' -- predict --load "$work/images.npz" "$folders/file-loop/b/1.png"
# export: a file that is not ours, one without a config, outputs that clash or cannot be written.
echo "not a zip file at all, just some words to be long enough" >"$work/text.npz"
check_plain export-not-npz 2 text.npz 'not an .npz file' -- export --load "$work/text.npz" --onnx "$work/m.onnx"
if /usr/bin/python3 -c "import numpy" 2>/dev/null; then
    /usr/bin/python3 -c "import sys, numpy as np; np.savez(sys.argv[1], x=np.zeros(3, dtype=np.float32))" "$work/bare.npz"
    check_plain export-bare 2 bare.npz 'carries no config' -- export --load "$work/bare.npz" --c "$work/m.c"
fi
check_plain export-nothing 2 export 'nothing to write: give --onnx FILE, --c FILE or both' -- export --load "$work/images.npz"
check_plain export-name 2 --name '1bad: expected a C identifier' -- export --load "$work/images.npz" --c "$work/m.c" --name 1bad
check_plain export-same-file 2 images.npz 'is also --load' -- export --load "$work/images.npz" --onnx "$work/images.npz"
check_plain export-two-outputs 2 same.out 'are the same file' -- export --load "$work/images.npz" --onnx "$work/same.out" --c "$work/same.out"
check_plain export-no-folder 2 /no/such/folder 'does not exist' -- export --load "$work/images.npz" --c /no/such/folder/m.c
check_plain export-unwritable 1 /proc/m.onnx 'cannot create' -- export --load "$work/images.npz" --onnx /proc/m.onnx
check_plain export-option 2 --csv 'unknown option --csv' -- export --load "$work/images.npz" --csv x.csv
[ ! -e "$work/m.onnx" ] && [ ! -e "$work/m.c" ] || { echo "FAIL: a failed export left a file"; failed=$((failed + 1)); }
ls "$work"/*.tmp* >/dev/null 2>&1 && { echo "FAIL: a failed export left a temporary file"; failed=$((failed + 1)); }

# data.normalize that does not fit the data's channels, in training and in predict.
check normalize-channels data.normalize 'has 2 values per list, but' -- "$bad/images.json" --set 'data.normalize={"mean":[0.5,0.5],"std":[0.2,0.2]}'
check normalize-zero-std 'data.normalize.std[0]' 'expected a number from 1e-6 to 1e6 (a standard deviation)' -- "$bad/images.json" --set 'data.normalize={"mean":[0.5],"std":[0]}'
check normalize-lengths data.normalize '1 means but 3 standard deviations' -- "$bad/images.json" --set 'data.normalize={"mean":[0.5],"std":[0.2,0.2,0.2]}'
check normalize-missing data.normalize.std 'missing, expected a list of numbers' -- "$bad/images.json" --set 'data.normalize={"mean":[0.5]}'

echo "bad inputs: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
