#!/usr/bin/python3
"""Writes the corpus of malformed inputs under tests/bad/ that tests/check_bad_inputs.sh feeds to
the trainer: configs (tests/bad/config/*.json) and damaged data files (tests/bad/data/*), with
tests/bad/expect.tsv saying, for each, how it is used and a piece of the one-line message it must
give. Run it from the repository root after changing the corpus; the files are committed.
"""
import gzip
import os
import struct
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
BAD = os.path.join(ROOT, "tests", "bad")
DATA = "../../../data/mnist/"

def good(**over):
    cfg = {
        "data": {"train": {"images": DATA + "train-images-idx3-ubyte.gz",
                           "labels": DATA + "train-labels-idx1-ubyte.gz", "limit": 20},
                 "test": {"images": DATA + "t10k-images-idx3-ubyte.gz",
                          "labels": DATA + "t10k-labels-idx1-ubyte.gz", "limit": 10}},
        "network": [{"type": "conv2d", "filters": 4, "kernel": 3}, {"type": "relu"},
                    {"type": "maxpool", "size": 2}, {"type": "dense", "units": 10},
                    {"type": "softmax"}],
        "training": {"epochs": 1, "batch_size": 4, "learning_rate": 0.05},
    }
    return cfg

def dump(cfg):
    import json
    return json.dumps(cfg, indent=2) + "\n"

def with_training(key, value):
    cfg = good()
    cfg["training"][key] = value
    return dump(cfg)

def with_layer(i, layer):
    cfg = good()
    cfg["network"][i] = layer
    return dump(cfg)

def with_network(net):
    cfg = good()
    cfg["network"] = net
    return dump(cfg)

SOFT = {"type": "softmax"}
configs = [
    # (name, text, expected message piece)
    ("syntax-trailing-comma", '{\n  "data": {},\n}\n', ":3:1: invalid JSON: trailing comma"),
    ("syntax-unclosed", '{\n  "data": {\n', "invalid JSON: the text ends early"),
    ("syntax-unquoted-key", '{data: 1}\n', ":1:2: invalid JSON: expected a key in double quotes"),
    ("syntax-single-quotes", "{'data': 1}\n", ":1:2: invalid JSON: expected a key in double quotes"),
    ("syntax-comment", '// a comment\n{}\n', ":1:1: invalid JSON: expected a value"),
    ("syntax-leading-zero", '{"training": {"epochs": 01}}\n', ":1:26: invalid JSON: expected ',' or '}'"),
    ("syntax-nan", '{"training": {"learning_rate": NaN}}\n', ":1:32: invalid JSON: expected a value"),
    ("syntax-empty", "", ":1:1: invalid JSON: the text ends early"),
    ("syntax-bad-escape", '{"description": "a\\q"}\n', ":1:20: invalid JSON: bad escape"),
    ("syntax-control-char", '{"description": "a\tb"}\n', ":1:19: invalid JSON: control character"),
    ("syntax-two-values", '{} {}\n', ":1:4: invalid JSON: unexpected text after the end"),
    ("top-level-list", '[1, 2]\n', "the top level must be a JSON object"),
    ("unknown-top-key", dump(dict(good(), netwrok=[])), 'netwrok: unknown key (did you mean "network"?)'),
    ("unknown-training-key", with_training("learning_rat", 0.1), 'training.learning_rat: unknown key (did you mean "learning_rate"?)'),
    ("unknown-layer-type", with_layer(3, {"type": "dens", "units": 10}), 'network[3].type: unknown layer type "dens" (did you mean "dense"?)'),
    ("unknown-layer-type-far", with_layer(1, {"type": "swish"}), 'network[1].type: unknown layer type "swish" (expected one of'),
    ("unknown-layer-key", with_layer(0, {"type": "conv2d", "filter": 4, "kernel": 3}), 'network[0].filter: unknown key (did you mean "filters"?)'),
    ("unknown-data-key", dump(dict(good(), data=dict(good()["data"], tran={}))), 'data.tran: unknown key (did you mean "train"?)'),
    ("type-epochs-string", with_training("epochs", "10"), 'training.epochs: expected a positive integer, got "10"'),
    ("type-shuffle-string", with_training("shuffle", "yes"), 'training.shuffle: expected true or false, got "yes"'),
    ("type-network-object", with_network({"type": "dense"}), "network: expected a non-empty list of layers"),
    ("type-layer-number", with_network([3, SOFT]), "network[0]: expected an object, got 3"),
    ("type-lr-string", with_training("learning_rate", "fast"), 'training.learning_rate: expected a positive number, got "fast"'),
    ("type-units-float", with_layer(3, {"type": "dense", "units": 10.5}), "network[3].units: expected a positive integer, got 10.5"),
    ("zero-units", with_layer(3, {"type": "dense", "units": 0}), "network[3].units: expected a positive integer, got 0"),
    ("negative-filters", with_layer(0, {"type": "conv2d", "filters": -8, "kernel": 3}), "network[0].filters: expected a positive integer, got -8"),
    ("absurd-kernel", with_layer(0, {"type": "conv2d", "filters": 4, "kernel": 100000}), "network[0].kernel: expected an integer no larger than 1024, got 100000"),
    ("absurd-units", with_layer(3, {"type": "dense", "units": 1e9}), "network[3].units: expected an integer no larger than 1048576"),
    ("negative-padding", with_layer(0, {"type": "conv2d", "filters": 4, "kernel": 3, "padding": -1}), "network[0].padding: expected a non-negative integer, got -1"),
    ("zero-stride", with_layer(2, {"type": "maxpool", "size": 2, "stride": 0}), "network[2].stride: expected a positive integer, got 0"),
    ("zero-batch", with_training("batch_size", 0), "training.batch_size: expected a positive integer, got 0"),
    ("absurd-epochs", with_training("epochs", 1e12), "training.epochs: expected an integer no larger than 1000000"),
    ("negative-lr", with_training("learning_rate", -0.1), "training.learning_rate: expected a positive number, got -0.1"),
    ("negative-seed", with_training("seed", -3), "training.seed: expected an integer from 0 to 4294967295, got -3"),
    ("absurd-threads", with_training("threads", 99999), "training.threads: expected an integer no larger than 1024"),
    ("bad-init", with_training("init", "glorot"), 'training.init: expected one of "report", "he", "xavier", got "glorot"'),
    ("bad-ties", with_layer(2, {"type": "maxpool", "ties": "random"}), 'network[2].ties: expected one of "all", "first", got "random"'),
    ("kernel-too-large", with_layer(0, {"type": "conv2d", "filters": 4, "kernel": 30}), "network[0].kernel: 30 is larger than the 28x28 input"),
    ("pool-too-large", with_layer(2, {"type": "maxpool", "size": 27}), "network[2].size: 27 is larger than the 26x26 input"),
    ("channels-mismatch", with_layer(0, {"type": "conv2d", "filters": 4, "kernel": 3, "in_channels": 3}), "network[0].in_channels: the input has 1 channels, not 3"),
    ("padding-too-large", with_layer(0, {"type": "conv2d", "filters": 4, "kernel": 3, "padding": 3}), "network[0].padding: 3 must be smaller than the kernel (3)"),
    ("weights-overflow", with_network([{"type": "conv2d", "filters": 65536, "kernel": 1}, {"type": "dense", "units": 1048576}, SOFT]), "network[1].units: 1048576 units on 51380224 inputs is too many weights"),
    ("no-softmax", with_network([{"type": "dense", "units": 10}]), "network[0]: the network must end with a softmax layer"),
    ("softmax-in-middle", with_network([SOFT, {"type": "dense", "units": 10}, SOFT]), "network[0]: softmax must be the last layer"),
    ("one-class", with_network([{"type": "dense", "units": 1}, SOFT]), "network[1]: softmax over 1 value needs at least 2 classes"),
    # Config mistakes that show as data problems: the message names the data file.
    ("too-few-classes", with_network([{"type": "dense", "units": 5}, SOFT]), "train-labels-idx1-ubyte.gz: label 5 of sample 0 is out of range for 5 classes"),
    ("limit-too-large", dump(dict(good(), data=dict(good()["data"], test=dict(good()["data"]["test"], limit=20000)))), "t10k-images-idx3-ubyte.gz: limit 20000 is larger than the 10000 samples in the file"),
    ("zero-limit", dump(dict(good(), data=dict(good()["data"], test=dict(good()["data"]["test"], limit=0)))), "data.test.limit: expected a positive integer, got 0"),
    ("missing-labels", dump(dict(good(), data={"train": {"images": DATA + "train-images-idx3-ubyte.gz"}})), "data.train.labels: missing, expected a file path"),
    ("missing-data-file", dump(dict(good(), data={"train": {"images": "nowhere/images.gz", "labels": "nowhere/labels.gz"}})), "config/nowhere/images.gz: cannot open: No such file or directory"),
    ("checkpoint-no-path", with_training("checkpoint", {"every_steps": 10}), "training.checkpoint.path: missing, expected a file path"),
    ("missing-network", dump({"data": good()["data"]}), "network: missing, expected a list of layers"),
    # Read exactly as written: a key given twice, a NUL inside a string.
    ("duplicate-key", dump(good()).replace('"epochs": 1,', '"epochs": 1,\n    "epochs": 2,', 1), "training.epochs: the key is given twice"),
    ("duplicate-layer-key", dump(good()).replace('"filters": 4,', '"filters": 4,\n      "filters": 8,', 1), "network[0].filters: the key is given twice"),
    ("duplicate-top-key", dump(good())[:-2] + ',\n  "network": []\n}\n', "network: the key is given twice"),
    ("nul-escape", '{"description": "he\\u0000xx"}\n', ":1:20: invalid JSON: \\u0000 (a NUL character) inside a string"),
    ("nul-escape-key", '{"train\\u0000ing": {}}\n', ":1:8: invalid JSON: \\u0000 (a NUL character) inside a string"),
    ("checkpoint-path-empty", with_training("checkpoint", {"path": ""}), "training.checkpoint.path: expected a file path string"),
]

def idx(type_code, dims, body):
    head = bytes([0, 0, type_code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)
    return head + body

images_ok = idx(8, [6, 28, 28], bytes((i * 7919 + 13) % 251 for i in range(6 * 784)))
labels_ok = idx(8, [6], bytes([1, 2, 3, 4, 5, 6]))
data_files = [
    # (name, bytes, used as "images" or "labels", expected message piece)
    ("wrong-magic", b"\x12\x34" + images_ok[2:], "images", "not an IDX file: magic bytes 12 34, expected 00 00"),
    ("wrong-type", idx(0x0D, [6, 28, 28], bytes(6 * 784 * 4)), "images", "IDX element type 0x0d is not supported"),
    ("truncated-header", images_ok[:9], "images", "truncated header: 9 bytes, the 3 dimensions need 16"),
    ("truncated-body", images_ok[:-100], "images", "truncated: the header's dimensions need 4704 data bytes, the file has 4604"),
    ("trailing-data", images_ok + b"extra", "images", "trailing data: the header's dimensions need 4704 data bytes, the file has 4709"),
    ("empty", b"", "images", "not an IDX file: only 0 bytes"),
    ("seven-dimensions", idx(8, [1] * 7, b"\0"), "images", "IDX file with 7 dimensions (expected 1 to 4)"),
    ("zero-images", idx(8, [0, 28, 28], b""), "images", "holds no images"),
    ("zero-size-images", idx(8, [6, 0, 28], b""), "images", "images of size zero"),
    ("labels-as-images", labels_ok, "images", "images need 3 dimensions (count, rows, columns) or 4 (with channels), got 1"),
    ("images-as-labels", images_ok, "labels", "labels need 1 dimension, got 3"),
    ("count-mismatch", idx(8, [5], bytes([1, 2, 3, 4, 5])), "labels", "5 labels for the 6 images"),
    ("label-out-of-range", idx(8, [6], bytes([1, 2, 3, 12, 5, 6])), "labels", "label 12 of sample 3 is out of range for 10 classes"),
    ("text-file", b"hello, this is not an IDX file\n", "images", "not an IDX file: magic bytes 68 65"),
    ("corrupt-gzip-cut.gz", gzip.compress(images_ok, mtime=0)[:60], "images", "corrupt compressed data"),
    ("corrupt-gzip-crc.gz", (lambda z: z[:-8] + bytes([z[-8] ^ 0xFF]) + z[-7:])(gzip.compress(images_ok, mtime=0)), "images", "corrupt compressed data"),
    ("small-images", idx(8, [6, 20, 20], bytes(6 * 400)), "test-images", "the test images are 20x20x1, the training images 28x28x1"),
    # gzip read strictly: nothing after the stream, never more than the header declares.
    ("gzip-trailing.gz", gzip.compress(images_ok, mtime=0) + b"junk", "images", "4 bytes follow the end of its gzip stream"),
    ("gzip-two-streams.gz", gzip.compress(images_ok[:100], mtime=0) + gzip.compress(images_ok[100:], mtime=0), "images", "bytes follow the end of its gzip stream"),
    ("gzip-more-than-declared.gz", gzip.compress(images_ok + bytes(100000), mtime=0), "images", "decompresses to more than the 4720 bytes its header declares"),
    ("gzip-one-byte-more.gz", gzip.compress(images_ok + b"x", mtime=0), "images", "decompresses to more than the 4720 bytes its header declares"),
    ("gzip-forged-size.gz", (lambda z: z[:-4] + struct.pack("<I", 0xFFFFFFF0))(gzip.compress(images_ok, mtime=0)), "images", "corrupt compressed data"),
    ("gzip-bomb-labels.gz", gzip.compress(idx(8, [6], bytes(6)) + bytes(50 << 20), mtime=0), "labels", "decompresses to more than the 14 bytes its header declares"),
    ("gzip-empty.gz", gzip.compress(b"", mtime=0), "images", "not an IDX file: only 0 bytes"),
]

# ---- PNG folders, CSV and CIFAR-format files (tests/bad/images.json: 6x5 grey, 2 classes) ----

sys.path.insert(0, os.path.join(ROOT, "tools"))
import pngio  # noqa: E402

def png(h=6, w=5, colour=pngio.GREY, seed=1):
    chans = {pngio.GREY: 1, pngio.RGB: 3}[colour]
    rows = [[tuple((seed * 31 + y * 7 + x * 3 + c) % 256 for c in range(chans)) for x in range(w)]
            for y in range(h)]
    return pngio.encode(rows, colour)

good_png = png()
idat = good_png.index(b"IDAT")
folders = [
    # (name, {relative path: bytes, or ("link", target), or None for a folder}, expected piece)
    ("corrupt-png", {"b/1.png": good_png[:idat + 6] + bytes([good_png[idat + 6] ^ 0x55]) + good_png[idat + 7:]},
     "b/1.png: a damaged PNG file: IDAT: "),
    ("truncated-png", {"b/1.png": good_png[:len(good_png) - 30]}, "b/1.png: a damaged PNG file: the file ends early (truncated)"),
    ("not-png", {"b/1.png": b"this is text, not an image\n"}, "b/1.png: not a PNG file (no PNG signature)"),
    ("empty-png", {"b/1.png": b""}, "b/1.png: not a PNG file (no PNG signature)"),
    ("other-size", {"b/1.png": png(h=7)}, "b/1.png: a 5x7 image with 1 channel; the first image,"),
    ("other-channels", {"b/1.png": png(colour=pngio.RGB)}, "b/1.png: a 5x6 image with 3 channels; the first image,"),
    ("huge-header", {"b/1.png": good_png[:16] + struct.pack(">I", 100000) + good_png[20:29] + struct.pack(">I", __import__("zlib").crc32(good_png[12:16] + struct.pack(">I", 100000) + good_png[20:29]) & 0xFFFFFFFF) + good_png[33:]},
     "b/1.png: a 100000x6 image, beyond the 4096 pixels a side the trainer reads"),
    ("empty-class", {"b/0.png": "delete", "b/notes.txt": b"no images here\n"}, "/b: a class folder with no .png files"),
    ("file-loop", {"b/1.png": ("link", "1.png")}, "b/1.png: cannot open: Too many levels of symbolic links"),
    ("class-loop", {"c": ("link", "c")}, "/c: cannot read (Too many levels of symbolic links)"),
    ("dangling-link", {"b/1.png": ("link", "nowhere.png")}, "b/1.png: cannot open: No such file or directory"),
    ("folder-as-png", {"b/1.png": None}, "b/1.png: is a folder, not a file"),
    ("three-classes", {"c/1.png": good_png}, "has 3 class folders, but the network ends in 2 classes"),
]

csv_ok = "label," + ",".join("p%d" % k for k in range(30)) + "\n" + "".join(
    "%d,%s\n" % (i % 2, ",".join(str((i * 30 + k) % 256) for k in range(30))) for i in range(4))
csv_files = [
    ("csv-short-row", csv_ok + "1,2,3\n", "line 6: fewer fields, expected 31 (a label and 6x5x1 pixels)"),
    ("csv-long-row", csv_ok + "1," + ",".join(["7"] * 31) + "\n", "line 6: more fields, expected 31"),
    ("csv-pixel-300", csv_ok + "1," + ",".join(["300"] + ["7"] * 29) + "\n", "line 6, field 2: expected an integer from 0 to 255"),
    ("csv-text", csv_ok + "1," + ",".join(["7"] * 10 + ["dog"] + ["7"] * 19) + "\n", "line 6, field 12: expected an integer from 0 to 255"),
    ("csv-empty-line", csv_ok.replace("\n", "\n\n", 2), "line 2 is empty"),
    ("csv-label-out-of-range", csv_ok + "5," + ",".join(["7"] * 30) + "\n", "label 5 of sample 4 is out of range for 2 classes"),
    ("csv-header-only", csv_ok.split("\n")[0] + "\n", "holds no rows"),
]
cifar_record = lambda label: bytes([label]) + bytes(range(30))
cifar_files = [
    ("cifar-partial-record", cifar_record(0) * 3 + cifar_record(1)[:20], "113 bytes are not a whole number of 31-byte CIFAR-10 records (1 label byte and 6x5x1 pixels)"),
    ("cifar-empty", b"", "0 bytes are not a whole number of 31-byte CIFAR-10 records"),
    ("cifar-label-out-of-range", cifar_record(0) + cifar_record(9), "label 9 of sample 1 is out of range for 2 classes"),
]

def write_image_cases(lines):
    import json
    import shutil
    images = {"description": "A good config for the damaged image folders and CSV and CIFAR-format "
                             "files: each replaces data.train.",
              "data": {"train": {"format": "folder", "images": "folders/good"}},
              "network": [{"type": "conv2d", "filters": 2, "kernel": 3}, {"type": "relu"},
                          {"type": "dense", "units": 2}, {"type": "softmax"}],
              "training": {"epochs": 1, "batch_size": 2}}
    with open(os.path.join(BAD, "images.json"), "w") as f:
        f.write(json.dumps(images, indent=2) + "\n")
    top = os.path.join(BAD, "folders")
    shutil.rmtree(top, ignore_errors=True)
    def make(name, extra):
        root = os.path.join(top, name)
        for cls in ("a", "b"):
            os.makedirs(os.path.join(root, cls), exist_ok=True)
        for rel, data in [("a/0.png", png(seed=2)), ("b/0.png", png(seed=3)), ("a/1.png", png(seed=4))] + list(extra.items()):
            path = os.path.join(root, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if data == "delete":
                os.remove(path)
            elif isinstance(data, tuple):
                os.symlink(data[1], path)
            elif data is None:
                os.makedirs(path, exist_ok=True)
                with open(os.path.join(path, "keep"), "w") as f:
                    f.write("a folder named like an image\n")
            else:
                with open(path, "wb") as f:
                    f.write(data)
    make("good", {})
    for name, extra, want in folders:
        make(name, extra)
        lines.append("folder\tfolders/%s\t%s" % (name, want))
    os.makedirs(os.path.join(top, "no-classes"), exist_ok=True)
    with open(os.path.join(top, "no-classes", "readme.png"), "wb") as f:
        f.write(good_png)
    lines.append("folder\tfolders/no-classes\tno class folders (the folder format reads ROOT/CLASS/*.png)")
    lines.append("folder\tdata/images.idx\tnot a folder (the folder format reads ROOT/CLASS/*.png)")
    make("other-class-names", {"c/0.png": png(seed=5)})
    shutil.rmtree(os.path.join(top, "other-class-names", "b"))
    lines.append("folder-test\tfolders/other-class-names\tdiffer from those of")
    for name, text, want in csv_files:
        with open(os.path.join(BAD, "data", name + ".csv"), "w") as f:
            f.write(text)
        lines.append("csv\tdata/%s.csv\t%s" % (name, want))
    for name, data, want in cifar_files:
        with open(os.path.join(BAD, "data", name + ".bin"), "wb") as f:
            f.write(data)
        lines.append("cifar\tdata/%s.bin\t%s" % (name, want))

def main():
    os.makedirs(os.path.join(BAD, "config"), exist_ok=True)
    os.makedirs(os.path.join(BAD, "data"), exist_ok=True)
    lines = ["# kind\tfile\texpected piece of the one-line message (made by tools/make_bad_corpus.py)"]
    for name, text, want in configs:
        path = os.path.join("config", name + ".json")
        with open(os.path.join(BAD, path), "w") as f:
            f.write(text)
        # Where the message names a data file instead, the runner looks for that name.
        kind = "config-data" if ".gz: " in want else "config"
        lines.append("%s\t%s\t%s" % (kind, path, want))
    with open(os.path.join(BAD, "config", "nul-byte.json"), "wb") as f:
        f.write(b'{"description": "a\x00b"}\n')
    lines.append("config\tconfig/nul-byte.json\tcontains a NUL byte (not a JSON text file)")
    import json
    base = {"description": "A good config for the damaged data files: each replaces one file.",
            "data": {"train": {"images": "data/images.idx", "labels": "data/labels.idx"},
                     "test": {"images": "data/images.idx", "labels": "data/labels.idx"}},
            "network": good()["network"], "training": {"epochs": 1, "batch_size": 2}}
    with open(os.path.join(BAD, "base.json"), "w") as f:
        f.write(json.dumps(base, indent=2) + "\n")
    with open(os.path.join(BAD, "data", "images.idx"), "wb") as f:
        f.write(images_ok)
    with open(os.path.join(BAD, "data", "labels.idx"), "wb") as f:
        f.write(labels_ok)
    for name, data, role, want in data_files:
        path = os.path.join("data", name)
        with open(os.path.join(BAD, path), "wb") as f:
            f.write(data)
        lines.append("%s\t%s\t%s" % (role, path, want))
    write_image_cases(lines)
    with open(os.path.join(BAD, "expect.tsv"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("%d configs, %d data files" % (len(configs) + 1, len(data_files)))

if __name__ == "__main__":
    main()
