#!/bin/sh
# Exported models give what `trainer predict` gives: for config/report.json, config/mnist.json
# (both trained briefly), a network with every layer type and a global-average-pool head on
# colour images with data.normalize, the ONNX model in ONNX Runtime (node, tools/onnx/run.js),
# the C file compiled with a small driver (cc -std=c99 -Wall -Wextra -pedantic -Werror) and the
# TorchScript model of tools/to_torch.py each classify 1000 test images (the colour set: its
# 1000) as `trainer predict --digits 9` does, with every probability within 1e-5. The ONNX model
# passes python3-onnx's checker. A runtime that is not installed is reported as skipped.
# Usage: check_export.sh TRAINER SOURCE_DIR PYTHON
set -u
trainer=$1
src=$2
python=$3
# shellcheck source=tests/testlib.sh
. "$(dirname "$0")/testlib.sh"
cd "$work" || exit 1

has_node=0
if command -v node >/dev/null && [ -d "$src/tools/onnx/node_modules/onnxruntime-node" ]; then
    has_node=1
else
    echo "skipped: ONNX Runtime (needs node and tools/setup.sh's npm install in tools/onnx)"
fi
has_onnx=0
if "$python" -c "import onnx" 2>/dev/null; then has_onnx=1; else echo "skipped: the ONNX checker (python3-onnx)"; fi
has_torch=0
if "$python" -c "import torch" 2>/dev/null; then has_torch=1; else echo "skipped: TorchScript (python3-torch)"; fi

# The first 1000 MNIST test images, uncompressed, for the C driver.
"$python" - "$src/data/mnist/t10k-images-idx3-ubyte.gz" mnist-1000.idx <<'PY'
import gzip, struct, sys
raw = gzip.open(sys.argv[1]).read()
open(sys.argv[2], "wb").write(raw[:4] + struct.pack(">I", 1000) + raw[8:16 + 1000 * 784])
PY
# The colour test set as IDX (the folder's reading order), from the same PNG files.
"$python" - "$src/data/colour-shapes/test" colour-1000.idx <<'PY'
import os, struct, sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(sys.argv[1])), "..", "..", "tools"))
import numpy as np, pngio
root = sys.argv[1]
classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
files = [sorted(f for f in os.listdir(os.path.join(root, c)) if f.endswith(".png")) for c in classes]
order = [(k, files[k][j]) for j in range(max(map(len, files))) for k in range(len(classes)) if j < len(files[k])]
x = np.array([pngio.decode(open(os.path.join(root, classes[k], f), "rb").read()) for k, f in order], dtype=np.uint8)
open(sys.argv[2], "wb").write(struct.pack(">BBBBIIII", 0, 0, 8, 4, *x.shape) + x.tobytes())
PY

# check NAME CONFIG IMAGES PIXELS CLASSES SETTINGS...: train, export, run, compare.
check() {
    name=$1 config=$2 images=$3 pixels=$4 classes=$5
    shift 5
    "$trainer" "$config" "$@" --save "$name.npz" >"$name.train" 2>&1 || {
        fail "$name: training failed: $(tail -1 "$name.train")"
        return
    }
    "$trainer" export --load "$name.npz" --onnx "$name.onnx" --c "$name.c" --name test_model \
        >"$name.export" 2>&1 || {
        fail "$name: export failed: $(cat "$name.export")"
        return
    }
    "$trainer" predict --load "$name.npz" --digits 9 "$images" >"$name.predict" 2>&1 ||
        fail "$name: predict failed: $(tail -1 "$name.predict")"
    if cc -std=c99 -Wall -Wextra -pedantic -Werror -O2 "$name.c" "$src/tests/export_driver.c" \
        -o "$name-driver" -lm 2>"$name.cc"; then
        "./$name-driver" "$images" 1000 "$pixels" "$classes" >"$name.c.out" ||
            fail "$name: the C driver failed"
        "$python" "$src/tests/compare_predictions.py" "$name.predict" "$name.c.out" "$name C" ||
            fail "$name: the C model differs"
    else
        fail "$name: the C file does not build cleanly: $(head -5 "$name.cc")"
    fi
    if [ $has_onnx -eq 1 ]; then
        "$python" -c "import onnx, sys; onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True)" \
            "$name.onnx" || fail "$name: the ONNX checker refuses the model"
    fi
    if [ $has_node -eq 1 ]; then
        node "$src/tools/onnx/run.js" "$name.onnx" "$images" 1000 >"$name.ort" 2>&1 ||
            fail "$name: ONNX Runtime failed: $(tail -2 "$name.ort")"
        "$python" "$src/tests/compare_predictions.py" "$name.predict" "$name.ort" "$name ONNX Runtime" ||
            fail "$name: the ONNX model differs"
    fi
    if [ $has_torch -eq 1 ]; then
        "$python" "$src/tools/to_torch.py" "$name.npz" -o "$name.pt" --predict "$images" \
            --count 1000 >"$name.torch" 2>&1 || fail "$name: to_torch.py failed: $(tail -2 "$name.torch")"
        "$python" "$src/tests/compare_predictions.py" "$name.predict" "$name.torch" "$name TorchScript" ||
            fail "$name: the TorchScript model differs"
    fi
    checks=$((checks + 1))
}

check report "$src/config/report.json" mnist-1000.idx 784 10 --set training.epochs=2
# A checkpoint exports as the parameter file of the same run does.
checks=$((checks + 1))
"$trainer" "$src/config/report.json" --set training.epochs=2 --checkpoint ck.npz --save ck-save.npz \
    >/dev/null 2>&1 || fail "the checkpointed run failed"
"$trainer" export --load ck.npz --onnx ck.onnx --c ck.c >/dev/null 2>&1 || fail "export of a checkpoint failed"
"$trainer" export --load ck-save.npz --onnx ck-save.onnx --c ck-save.c >/dev/null 2>&1
cmp -s ck.onnx ck-save.onnx && cmp -s ck.c ck-save.c ||
    fail "a checkpoint and the parameter file of the same run export differently"
check mnist "$src/config/mnist.json" mnist-1000.idx 784 10 --set training.epochs=1 \
    --set data.train.limit=3000 --set data.test.limit=100 --set training.warmup_epochs=0
check all-layers "$src/tests/export-all-layers.json" mnist-1000.idx 784 10
check colour-gap "$src/tests/export-gap.json" colour-1000.idx 1200 9
# One data.normalize value for all three channels.
check colour-one-value "$src/tests/export-gap.json" colour-1000.idx 1200 9 \
    --set 'data.normalize={"mean":[0.25],"std":[0.3]}'

echo "export: $checks models checked, $failures failed"
[ "$failures" -eq 0 ]
