#!/usr/bin/python3
"""Compares the predictions of an exported model (lines "INDEX CLASS P0 P1 ...", from
tools/onnx/run.js, tests/export_driver.c or tools/to_torch.py --predict) with `trainer predict
--digits 9` (lines "FILE[INDEX]: class CLASS  p P0 P1 ..."): every image must get the same class
and every probability must agree within TOL (absolute). Prints the largest difference.

Usage: compare_predictions.py PREDICT.txt OTHER.txt WHAT [--tol 1e-5] [--count N]"""
import argparse
import re
import sys


def read(path):
    rows = []
    with open(path) as f:
        for line in f:
            m = re.match(r".*\[(\d+)\]: class (\d+)(?: \([^)]*\))?  p (.*)$", line)
            if m:
                rows.append((int(m.group(1)), int(m.group(2)), [float(v) for v in m.group(3).split()]))
            elif line.strip():
                parts = line.split()
                rows.append((int(parts[0]), int(parts[1]), [float(v) for v in parts[2:]]))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("predict")
    ap.add_argument("other")
    ap.add_argument("what")
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--count", type=int, default=1000)
    args = ap.parse_args()
    ref, other = read(args.predict)[:args.count], read(args.other)[:args.count]
    if len(ref) != args.count or len(other) != args.count:
        sys.exit("%s: %d and %d images, expected %d" % (args.what, len(ref), len(other), args.count))
    worst, classes = 0.0, 0
    for (i, c, p), (j, d, q) in zip(ref, other):
        if i != j or len(p) != len(q):
            sys.exit("%s: image %d: the lines do not match" % (args.what, i))
        if c != d:
            sys.exit("%s: image %d: class %d, trainer predict says %d" % (args.what, i, d, c))
        worst = max(worst, max(abs(a - b) for a, b in zip(p, q)))
        classes += 1
    print("%s: %d images, same classes, largest probability difference %.2g" % (args.what, classes, worst))
    if worst > args.tol:
        sys.exit("%s: a probability differs by %.3g, more than %g" % (args.what, worst, args.tol))


if __name__ == "__main__":
    main()
