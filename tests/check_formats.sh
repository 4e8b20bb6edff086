#!/bin/sh
# The data formats hold the same images: the same network trained on the same images from IDX
# files, a PNG folder, a CSV file and CIFAR-format records ends with bit-identical weights, for
# MNIST digits (grey) and the coloured shapes (RGB, with data.normalize). PNG files of every
# colour type, bit depth, filter and interlacing decode to the pixels an independent writer put
# in them. Decoding in parallel gives the same data for any thread count; the files are read once;
# eval and predict print the folder's class names.
# Usage: check_formats.sh TRAINER SOURCE_DIR PYTHON
set -u
trainer=$1
src=$2
python=$3
# shellcheck source=tests/testlib.sh
. "$(dirname "$0")/testlib.sh"
convert="$python $src/tools/idx-to-folder"

# same_weights A.npz B.npz WHAT: every parameter array of the two files is bit-identical.
same_weights() {
    checks=$((checks + 1))
    "$python" - "$1" "$2" <<'PY' || fail "$3"
import sys, numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
arrays = [k for k in a.files if not k.endswith(".json") and not k.endswith(".csv")]
bad = [k for k in arrays if k not in b.files or a[k].tobytes() != b[k].tobytes()]
if not arrays or bad:
    print("arrays differ: %s" % bad)
    sys.exit(1)
PY
}

# train NAME CONFIG ARGS...: trains into $work/NAME.npz; a failed run is a failure.
train() {
    name=$1 config=$2
    shift 2
    "$trainer" "$config" "$@" --save "$work/$name.npz" >"$work/$name.out" 2>"$work/$name.err" ||
        fail "$name: the run failed: $(cat "$work/$name.err")"
}

cd "$work" || exit 1
net='[{"type":"conv2d","filters":4,"kernel":3},{"type":"relu"},{"type":"maxpool","size":2},{"type":"dense","units":CLASSES},{"type":"softmax"}]'
training='{"epochs":2,"batch_size":8,"learning_rate":0.05,"seed":3,"shuffle":true}'

# ---- 1. PNG files of every kind against the pixels they hold ----
"$python" "$src/tests/make_png_variants.py" variants || fail "make_png_variants.py failed"
for set in grey colour; do
    cat >"variants/$set.json" <<JSON
{"data": {"train": {"format": "folder", "images": "$set"}},
 "network": $(echo "$net" | sed 's/CLASSES/2/'), "training": $training}
JSON
    train "png-$set" "variants/$set.json"
    train "idx-$set" "variants/$set.json" --set "data.train={\"images\":\"$set-images.idx\",\"labels\":\"$set-labels.idx\"}"
    same_weights "png-$set.npz" "idx-$set.npz" "$set PNG variants decode to other pixels than written"
done

# ---- 2. MNIST digits in four formats, and 1 and 2 decoding threads ----
mnist="$src/data/mnist"
for fmt in folder csv cifar idx; do
    $convert "$mnist/train-images-idx3-ubyte.gz" "$mnist/train-labels-idx1-ubyte.gz" "digits-$fmt" \
        --format "$fmt" --limit 400 --order folder --names fashion >/dev/null || fail "idx-to-folder --format $fmt"
done
$convert "$mnist/t10k-images-idx3-ubyte.gz" "$mnist/t10k-labels-idx1-ubyte.gz" digits-test \
    --format folder --limit 100 --names fashion >/dev/null || fail "idx-to-folder (test)"
cat >digits.json <<JSON
{"data": {"train": {"format": "folder", "images": "digits-folder"},
          "test": {"format": "folder", "images": "digits-test"}},
 "network": $(echo "$net" | sed 's/CLASSES/10/'), "training": $training}
JSON
train digits-folder digits.json --threads 2
train digits-folder-1 digits.json --threads 1
train digits-csv digits.json --threads 2 --set 'data.train={"format":"csv","images":"digits-csv","shape":[28,28,1]}'
train digits-cifar digits.json --threads 2 --set 'data.train={"format":"cifar","images":"digits-cifar","shape":[28,28,1]}'
train digits-idx digits.json --threads 2 --set 'data.train={"images":"digits-idx/images-idx3-ubyte","labels":"digits-idx/labels-idx1-ubyte"}'
for other in folder-1 csv cifar idx; do
    same_weights digits-folder.npz "digits-$other.npz" "digits: folder and $other give other weights"
done

# The class names: in the saved model, in eval's table, in predict's lines.
checks=$((checks + 1))
"$trainer" eval --load digits-folder.npz >eval.out 2>&1 || fail "eval failed: $(cat eval.out)"
grep -q '^    9  .*  9-Ankle-boot$' eval.out || fail "eval does not name class 9: $(sed -n 4,6p eval.out)"
"$trainer" eval --load digits-folder.npz --csv confusion.csv >/dev/null 2>&1
head -1 confusion.csv | grep -q '^true\\predicted,0-T-shirt,1-Trouser,' ||
    fail "the confusion CSV does not name the classes: $(head -1 confusion.csv)"
"$trainer" predict --load digits-folder.npz digits-test/*/*.png >predict.out 2>&1 ||
    fail "predict failed: $(cat predict.out)"
# Each line names the class it predicts (class k is the folder "k-..."), and the answers vary.
[ "$(grep -c ': class \([0-9]\) (\1-[A-Za-z-]*)  p ' predict.out)" -eq 100 ] ||
    fail "predict does not name each predicted class: $(grep -v ': class \([0-9]\) (\1-' predict.out | head -2)"
[ "$(sed 's/.*: class \([0-9]\).*/\1/' predict.out | sort -u | wc -l)" -ge 5 ] ||
    fail "predict gives fewer than 5 different classes for 100 test images"
# A checkpoint carries the names too, and eval on an IDX test set takes them from the file.
"$trainer" digits.json --checkpoint ck.npz >/dev/null 2>&1
"$trainer" eval --load ck.npz --set "data.test={\"images\":\"$mnist/t10k-images-idx3-ubyte.gz\",\"labels\":\"$mnist/t10k-labels-idx1-ubyte.gz\",\"limit\":50}" >eval-ck.out 2>&1
grep -q '  3-Dress$' eval-ck.out || fail "eval of a checkpoint on IDX data does not name the classes"

# ---- 3. The coloured shapes in four formats, normalised ----
"$python" "$src/tools/make-colour-shapes" shapes --count 300 --seed 4 >/dev/null || fail "make-colour-shapes failed"
for fmt in folder csv cifar idx; do
    $convert shapes/images-idx3-ubyte shapes/labels-idx1-ubyte "shapes-$fmt" --format "$fmt" \
        --order folder >/dev/null || fail "idx-to-folder --format $fmt (colour)"
done
cat >shapes.json <<JSON
{"data": {"train": {"format": "folder", "images": "shapes-folder"},
          "normalize": {"mean": [0.2, 0.25, 0.3], "std": [0.3, 0.25, 0.2]}},
 "network": $(echo "$net" | sed 's/CLASSES/9/'), "training": $training}
JSON
train shapes-folder shapes.json
train shapes-csv shapes.json --set 'data.train={"format":"csv","images":"shapes-csv","shape":[20,20,3]}'
train shapes-cifar shapes.json --set 'data.train={"format":"cifar","images":"shapes-cifar","shape":[20,20,3]}'
train shapes-idx shapes.json --set 'data.train={"images":"shapes-idx/images-idx3-ubyte","labels":"shapes-idx/labels-idx1-ubyte"}'
for other in csv cifar idx; do
    same_weights shapes-folder.npz "shapes-$other.npz" "colour: folder and $other give other weights"
done
# data.normalize is used: other values give other weights.
train shapes-other shapes.json --set 'data.normalize={"mean":[0.2,0.25,0.3],"std":[0.3,0.25,0.21]}'
checks=$((checks + 1))
"$python" - shapes-folder.npz shapes-other.npz <<'PY' || fail "data.normalize's std changes nothing"
import sys, numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
sys.exit(0 if any(a[k].tobytes() != b[k].tobytes() for k in a.files if not k.endswith(".json")) else 1)
PY

# ---- 4. The files are read once: moving the folder away after the first epoch is harmless ----
cp -r digits-folder moving
cat >moving.json <<JSON
{"data": {"train": {"format": "folder", "images": "moving"}},
 "network": $(echo "$net" | sed 's/CLASSES/10/'),
 "training": {"epochs": 12, "batch_size": 1, "learning_rate": 0.01}}
JSON
"$trainer" moving.json --threads 1 >moving.out 2>&1 &
pid=$!
i=0
while ! grep -q '^epoch  1/' moving.out 2>/dev/null && [ $i -lt 600 ]; do
    sleep 0.05
    i=$((i + 1))
done
mv moving moved
lines_when_moved=$(grep -c '^epoch' moving.out)
wait $pid || fail "a run whose folder moved away after its first epoch failed: $(tail -1 moving.out)"
checks=$((checks + 1))
[ "$lines_when_moved" -lt 12 ] || fail "the run ended before its folder was moved (no check made)"
grep -q '^epoch 12/12' moving.out || fail "the run did not finish its epochs"

echo "formats: $checks checks, $failures failed"
[ "$failures" -eq 0 ]
