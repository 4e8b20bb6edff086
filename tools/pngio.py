"""A small PNG writer (Python's zlib only), for tools/idx-to-folder and the tests: every colour
type (grey, grey + alpha, RGB, RGBA, palette), bit depths 1 to 16, all five row filters and
Adam7 interlacing, so that the trainer's reader (libpng) meets every kind of file.

An image is a list of rows; a row is a list of pixels; a pixel is a tuple of samples (one per
channel: 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA) or, for a palette image, an index."""
import struct
import zlib

GREY, RGB, PALETTE, GREY_ALPHA, RGBA = 0, 2, 3, 4, 6
CHANNELS = {GREY: 1, RGB: 3, PALETTE: 1, GREY_ALPHA: 2, RGBA: 4}


def _chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def _pack_row(row, colour, depth):
    """The bytes of one row of samples, packed at `depth` bits per sample."""
    samples = []
    for px in row:
        samples.extend(px if isinstance(px, (tuple, list)) else (px,))
    if depth == 8:
        return bytes(samples)
    if depth == 16:
        return b"".join(struct.pack(">H", s) for s in samples)
    out, acc, bits = bytearray(), 0, 0
    for s in samples:
        acc = (acc << depth) | s
        bits += depth
        if bits == 8:
            out.append(acc)
            acc, bits = 0, 0
    if bits:
        out.append(acc << (8 - bits))
    return bytes(out)


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _filter(raw, prev, kind, bpp):
    """Row `raw` filtered with filter `kind` (0 none, 1 sub, 2 up, 3 average, 4 Paeth)."""
    out = bytearray([kind])
    for i, x in enumerate(raw):
        a = raw[i - bpp] if i >= bpp else 0
        b = prev[i] if prev else 0
        c = prev[i - bpp] if prev and i >= bpp else 0
        pred = (0, a, b, (a + b) // 2, _paeth(a, b, c))[kind]
        out.append((x - pred) & 0xFF)
    return bytes(out)


def _scanlines(rows, colour, depth, first_filter):
    bpp = max(1, CHANNELS[colour] * depth // 8)
    data, prev = bytearray(), None
    for y, row in enumerate(rows):
        raw = _pack_row(row, colour, depth)
        data += _filter(raw, prev, (first_filter + y) % 5, bpp)
        prev = raw
    return bytes(data)


# Adam7: (first row, first column, row step, column step) of each of the seven passes.
ADAM7 = ((0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2),
         (1, 0, 2, 1))


def encode(rows, colour, depth=8, palette=None, transparency=None, interlace=False,
           first_filter=0):
    """The bytes of a PNG file. palette: a list of (r, g, b); transparency: the tRNS chunk's
    bytes (palette alphas, or a grey/RGB key)."""
    h, w = len(rows), len(rows[0])
    out = [b"\x89PNG\r\n\x1a\n",
           _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 1 if interlace else 0))]
    if palette is not None:
        out.append(_chunk(b"PLTE", b"".join(bytes(c) for c in palette)))
    if transparency is not None:
        out.append(_chunk(b"tRNS", transparency))
    if interlace:
        data = b""
        for y0, x0, dy, dx in ADAM7:
            sub = [row[x0::dx] for row in rows[y0::dy]]
            if sub and sub[0]:
                data += _scanlines(sub, colour, depth, first_filter)
    else:
        data = _scanlines(rows, colour, depth, first_filter)
    out.append(_chunk(b"IDAT", zlib.compress(data, 6)))
    out.append(_chunk(b"IEND", b""))
    return b"".join(out)


def write(path, rows, colour, **kwargs):
    with open(path, "wb") as f:
        f.write(encode(rows, colour, **kwargs))


def from_array(image):
    """Rows of pixels from an h x w (grey) or h x w x c array of bytes (numpy or nested lists),
    with the colour type that fits: grey for one channel, RGB for three."""
    rows = [[tuple(int(v) for v in px) if hasattr(px, "__len__") else (int(px),) for px in row]
            for row in image]
    return rows, GREY if len(rows[0][0]) == 1 else RGB


def encode_array(image):
    """The bytes of an 8-bit grey (h x w or h x w x 1) or RGB (h x w x 3) PNG of a numpy array
    of bytes, unfiltered: the fast path for converting whole data sets."""
    h, w = image.shape[:2]
    c = image.shape[2] if image.ndim == 3 else 1
    colour = {1: GREY, 3: RGB}[c]
    rows = image.reshape(h, w * c)
    data = b"".join(b"\0" + rows[y].tobytes() for y in range(h))
    return b"".join([b"\x89PNG\r\n\x1a\n",
                     _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)),
                     _chunk(b"IDAT", zlib.compress(data, 6)), _chunk(b"IEND", b"")])


def decode(data):
    """The pixels of an 8-bit, non-interlaced grey, grey + alpha, RGB or RGBA PNG (what
    encode_array and most tools write) as an h x w x c list of rows, alpha dropped: a reader
    independent of libpng, for the tools' references."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    w, h, depth, colour, _, _, interlace = header
    if depth != 8 or interlace or colour not in (GREY, RGB, GREY_ALPHA, RGBA):
        raise ValueError("only 8-bit, non-interlaced grey or RGB(A) files are read here")
    bpp = CHANNELS[colour]
    raw = zlib.decompress(idat)
    stride = w * bpp
    rows, prev = [], bytearray(stride)
    for y in range(h):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride if kind else 0):  # unfiltered rows are as they are
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            pred = (0, a, b, (a + b) // 2, _paeth(a, b, c))[kind]
            line[i] = (line[i] + pred) & 0xFF
        rows.append(line)
        prev = line
    keep = 1 if colour in (GREY, GREY_ALPHA) else 3
    return [[tuple(r[x * bpp:x * bpp + keep]) for x in range(w)] for r in rows]
