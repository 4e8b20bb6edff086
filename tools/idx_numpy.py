"""The MNIST IDX reader the Python tools share (numpy only): reads an IDX file, gzipped or not,
into a uint8 array of its dimensions."""
import gzip
import struct

import numpy as np


def read_idx(path):
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":  # gzipped, as MNIST is shipped
        raw = gzip.decompress(raw)
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)
