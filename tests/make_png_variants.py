#!/usr/bin/python3
"""Writes the same random images as PNG files of every kind the folder reader must decode, and
as IDX files of the pixels that decoding must give, computed here independently of libpng:

  OUT/grey/{a,b}/NNN.png   grey 1, 2, 4, 8 and 16-bit, grey with a tRNS key, grey + alpha
                           8 and 16-bit, interlaced, every row filter; one channel
  OUT/colour/{a,b}/NNN.png RGB 8 and 16-bit, RGBA 8 and 16-bit, palette with and without tRNS,
                           interlaced; three channels
  OUT/{grey,colour}-images.idx, OUT/{grey,colour}-labels.idx: the expected pixels and labels,
                           in the order the trainer reads the folder (a, b, a, b, ...)

Training on a folder and on its IDX files must give bit-identical weights.
Usage: make_png_variants.py OUT"""
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import pngio  # noqa: E402

H, W, N = 9, 11, 40  # odd sizes, so that packed rows and Adam7 passes have ragged ends


def grey_variant(k, rng):
    """(rows, colour, options, expected h x w bytes) of the k-th grey kind."""
    kind = k % 9
    if kind <= 2:  # 1, 2 and 4 bits: libpng scales v to v * 255 / (2^b - 1)
        depth = (1, 2, 4)[kind]
        v = rng.integers(0, 1 << depth, (H, W))
        return [[(int(x),) for x in r] for r in v], pngio.GREY, {"depth": depth}, \
            (v * 255 // ((1 << depth) - 1)).astype(np.uint8)
    if kind in (3, 4, 5):  # 16 bits, also with alpha and interlaced: rounded to 8 bits
        v = rng.integers(0, 65536, (H, W))
        want = np.floor(v * 255 / 65535 + 0.5).astype(np.uint8)
        if kind == 4:
            a = rng.integers(0, 65536, (H, W))
            rows = [[(int(x), int(y)) for x, y in zip(r, s)] for r, s in zip(v, a)]
            return rows, pngio.GREY_ALPHA, {"depth": 16}, want
        return [[(int(x),) for x in r] for r in v], pngio.GREY, \
            {"depth": 16, "interlace": kind == 5}, want
    v = rng.integers(0, 256, (H, W))
    if kind == 6:  # grey + alpha, 8 bits: the alpha is dropped
        a = rng.integers(0, 256, (H, W))
        return [[(int(x), int(y)) for x, y in zip(r, s)] for r, s in zip(v, a)], \
            pngio.GREY_ALPHA, {}, v.astype(np.uint8)
    if kind == 7:  # a transparent grey key: ignored
        return [[(int(x),) for x in r] for r in v], pngio.GREY, \
            {"transparency": struct.pack(">H", int(v[0, 0]))}, v.astype(np.uint8)
    return [[(int(x),) for x in r] for r in v], pngio.GREY, {"interlace": True}, \
        v.astype(np.uint8)


def colour_variant(k, rng):
    kind = k % 7
    if kind in (0, 1, 2):  # RGB 8-bit, interlaced, 16-bit
        depth = 16 if kind == 2 else 8
        v = rng.integers(0, 1 << depth, (H, W, 3))
        want = v if depth == 8 else np.floor(v * 255 / 65535 + 0.5)
        return [[tuple(int(x) for x in p) for p in r] for r in v], pngio.RGB, \
            {"depth": depth, "interlace": kind == 1}, want.astype(np.uint8)
    if kind in (3, 4):  # RGBA 8 and 16-bit: the alpha is dropped
        depth = 8 if kind == 3 else 16
        v = rng.integers(0, 1 << depth, (H, W, 4))
        want = v[..., :3] if depth == 8 else np.floor(v[..., :3] * 255 / 65535 + 0.5)
        return [[tuple(int(x) for x in p) for p in r] for r in v], pngio.RGBA, \
            {"depth": depth}, want.astype(np.uint8)
    # a palette of 13 colours, 4-bit indices; with a tRNS chunk the colours stay as they are
    palette = [tuple(int(x) for x in c) for c in rng.integers(0, 256, (13, 3))]
    idx = rng.integers(0, 13, (H, W))
    opts = {"depth": 4, "palette": palette}
    if kind == 6:
        opts["transparency"] = bytes(int(x) for x in rng.integers(0, 256, 13))
    want = np.array([[palette[i] for i in r] for r in idx], dtype=np.uint8)
    return [[int(i) for i in r] for r in idx], pngio.PALETTE, opts, want


def write_set(out, name, variant, rng):
    expected, labels = [], []
    for cls in ("a", "b"):
        os.makedirs(os.path.join(out, name, cls), exist_ok=True)
    for j in range(N // 2):  # file j of class a, then file j of class b: the reading order
        for label, cls in enumerate(("a", "b")):
            k = 2 * j + label
            rows, colour, opts, want = variant(k, rng)
            pngio.write(os.path.join(out, name, cls, f"{j:03d}.png"), rows, colour,
                        first_filter=k % 5, **opts)
            expected.append(want)
            labels.append(label)
    x = np.array(expected, dtype=np.uint8)
    dims = x.shape
    with open(os.path.join(out, f"{name}-images.idx"), "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 8, len(dims)) + struct.pack(">" + "I" * len(dims), *dims))
        f.write(x.tobytes())
    with open(os.path.join(out, f"{name}-labels.idx"), "wb") as f:
        f.write(struct.pack(">BBBBI", 0, 0, 8, 1, len(labels)) + bytes(labels))


def main():
    out = sys.argv[1]
    rng = np.random.default_rng(7)
    write_set(out, "grey", grey_variant, rng)
    write_set(out, "colour", colour_variant, rng)


if __name__ == "__main__":
    main()
