#!/usr/bin/python3
"""An independent reference for minibatch training, in numpy float64, written from
docs/config.md and docs/determinism.md, not from the C code.

It trains a small network (conv2d 4 3x3 stride 2 -> relu -> maxpool 2 -> dense 8 -> tanh ->
dense 10 -> softmax) on the first MNIST training images and writes, for one configuration, the
epoch figures and every parameter after every step; tests/test_minibatch.c holds the trainer to
those fixtures. What it follows from the docs:

  - init "he": np.random.seed(seed), then each layer's weight tensor in layer order drawn as
    randn(shape) * sqrt(2 / fan_in), stored as float32; biases start at zero;
  - the epoch's order: 0..n-1, or with shuffle the documented Fisher-Yates draw keyed by
    (seed, epoch) (docs/config.md, "shuffle");
  - batches of batch_size consecutive samples of the order, the last one partial; each batch cut
    into min(lanes, batch_size, samples in the batch) lanes of consecutive samples, each lane
    summed in order, the lanes added in order, divided by the samples actually in the batch;
  - g = mean gradient + weight_decay * w for every parameter; sgd, momentum, nesterov and adam as
    PyTorch defines them; the rate per step: step or cosine schedule, then linear warm-up;
  - the epoch's loss and accuracy: the mean over the epoch's samples of each sample's loss and
    hit, taken in the forward pass of its step.

Usage:
  tools/minibatch_reference.py fixture NAME [--samples N] [--batch B] [--lanes L] [--epochs E]
      [--optimizer O] [--lr X] [--momentum M] [--weight-decay W] [--schedule S] [--gamma G]
      [--step-epochs K] [--warmup W] [--shuffle] [--seed S]
  writes NAME.txt into the current folder (run it in tests/fixtures; tools/make_minibatch_fixtures
  regenerates them all).
"""
import argparse
import gzip
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pngio  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MASK = (1 << 64) - 1


def read_idx(path, count):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    size = int(np.prod(dims[1:])) if ndim > 1 else 1
    arr = np.frombuffer(data, dtype=np.uint8, count=count * size, offset=offset)
    return arr.reshape([count] + dims[1:])


def read_folder(root, count):
    """The first `count` images of a folder data set in the documented order (docs/config.md,
    "folder"): classes sorted by name, each class's .png files sorted by name, dealt out in turn
    (the first file of every class, then the second, ...)."""
    classes = sorted(d for d in os.listdir(root)
                     if not d.startswith(".") and os.path.isdir(os.path.join(root, d)))
    files = [sorted(f for f in os.listdir(os.path.join(root, c))
                    if not f.startswith(".") and f.lower().endswith(".png")) for c in classes]
    order = []
    for j in range(max(len(f) for f in files)):
        order.extend((k, files[k][j]) for k in range(len(classes)) if j < len(files[k]))
    images, labels = [], []
    for k, name in order[:count]:
        with open(os.path.join(root, classes[k], name), "rb") as f:
            images.append(pngio.decode(f.read()))
        labels.append(k)
    return np.array(images, dtype=np.uint8), np.array(labels), len(classes)


def to_input(images, normalize):
    """pixel / 255 (in float64: the trainer's float32 quotient is within float32 rounding of
    it), or with data.normalize (pixel / 255 - mean[c]) / std[c], each operation in float32 as
    docs/config.md says; then float64 for the arithmetic here."""
    if not normalize:
        return images / 255.0
    x = images.astype(np.float32) / np.float32(255.0)
    mean, std = ([np.float32(v) for v in part.split(",")] for part in normalize.split(";"))
    x = (x - np.array(mean, dtype=np.float32)) / np.array(std, dtype=np.float32)
    return x.astype(np.float64)


# ---- the documented keyed stream (docs/config.md, "shuffle") ----

def mix64(x):
    x = (x + 0x9E3779B97F4A7C15) & MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def keyed_below(key, counter, n):
    limit = MASK - (MASK % n)
    attempt = 0
    while True:
        r = mix64(key ^ mix64((counter + (attempt << 48)) & MASK))
        if r < limit:
            return r % n
        attempt += 1


def epoch_order(n, shuffle, seed, epoch):
    order = list(range(n))
    if not shuffle:
        return order
    key = mix64(((seed << 32) ^ epoch ^ 0x5348554646) & MASK)
    for i in range(n - 1, 0, -1):
        j = keyed_below(key, i, i + 1)
        order[i], order[j] = order[j], order[i]
    return order


# ---- the network, one sample at a time, channels last ----

CONV_F, CONV_K, CONV_S = 4, 3, 2
HIDDEN = 8


def init_params(seed, side, channels, classes):
    rng = np.random.RandomState(seed)
    fan_in = CONV_K * CONV_K * channels
    conv_w = rng.randn(CONV_F, CONV_K, CONV_K, channels) * math.sqrt(2.0 / fan_in)
    oh = (side - CONV_K) // CONV_S + 1  # 13 for MNIST
    ph = oh // 2  # 6
    n_in = ph * ph * CONV_F
    d1_w = rng.randn(n_in, HIDDEN) * math.sqrt(2.0 / n_in)
    d2_w = rng.randn(HIDDEN, classes) * math.sqrt(2.0 / HIDDEN)
    to32 = lambda a: a.astype(np.float32).astype(np.float64)
    return [to32(conv_w), np.zeros(CONV_F), to32(d1_w), np.zeros(HIDDEN), to32(d2_w),
            np.zeros(classes)]


def forward_backward(params, x, label):
    """Loss, hit, and the gradient of the sample's loss for every parameter; x is side x side
    x channels."""
    cw, cb, w1, b1, w2, b2 = params
    oh = (x.shape[0] - CONV_K) // CONV_S + 1
    # conv2d: out[oy, ox, f] = b[f] + sum x[oy*s + ky, ox*s + kx, c] * w[f, ky, kx, c]
    patches = np.empty((oh, oh, CONV_K, CONV_K, x.shape[2]))
    for ky in range(CONV_K):
        for kx in range(CONV_K):
            patches[:, :, ky, kx] = x[ky:ky + CONV_S * oh:CONV_S, kx:kx + CONV_S * oh:CONV_S]
    conv = np.einsum("abyxc,fyxc->abf", patches, cw) + cb
    relu = np.maximum(conv, 0.0)
    ph = oh // 2
    windows = relu[:2 * ph, :2 * ph, :].reshape(ph, 2, ph, 2, CONV_F).transpose(0, 2, 4, 1, 3)
    windows = windows.reshape(ph, ph, CONV_F, 4)  # window positions in row-major order
    first = np.argmax(windows, axis=3)  # ties: the first maximum
    pooled = np.max(windows, axis=3)
    flat = pooled.reshape(-1)  # (row, column, channel) order
    h = np.tanh(flat @ w1 + b1)
    logits = h @ w2 + b2
    shifted = logits - logits.max()
    logp = shifted - math.log(np.exp(shifted).sum())
    loss = -logp[label]
    hit = int(np.argmax(logits) == label)
    # backward
    dlogits = np.exp(logp)
    dlogits[label] -= 1.0
    gw2 = np.outer(h, dlogits)
    gb2 = dlogits
    dh = w2 @ dlogits
    dz1 = dh * (1.0 - h * h)
    gw1 = np.outer(flat, dz1)
    gb1 = dz1
    dflat = w1 @ dz1
    dpooled = dflat.reshape(ph, ph, CONV_F)
    dwin = np.zeros((ph, ph, CONV_F, 4))
    np.put_along_axis(dwin, first[..., None], dpooled[..., None], axis=3)
    drelu = np.zeros_like(relu)
    drelu[:2 * ph, :2 * ph, :] = dwin.reshape(ph, ph, CONV_F, 2, 2).transpose(0, 3, 1, 4, 2).reshape(
        2 * ph, 2 * ph, CONV_F)
    dconv = drelu * (conv > 0.0)
    gcw = np.einsum("abf,abyxc->fyxc", dconv, patches)
    gcb = dconv.sum(axis=(0, 1))
    return loss, hit, [gcw, gcb, gw1, gb1, gw2, gb2]


def learning_rate(args, step, steps_per_epoch):
    lr = args.lr
    if args.schedule == "step":
        lr *= args.gamma ** ((step // steps_per_epoch) // args.step_epochs)
    elif args.schedule == "cosine":
        lr *= 0.5 * (1.0 + math.cos(math.pi * step / (steps_per_epoch * args.epochs)))
    warmup_steps = args.warmup * steps_per_epoch
    if warmup_steps > 0 and step < warmup_steps:
        lr *= (step + 1.0) / warmup_steps
    return lr


def train(args, images, labels, out):
    params = init_params(args.seed, images.shape[1], images.shape[3], args.classes)
    state1 = [np.zeros_like(p) for p in params]
    state2 = [np.zeros_like(p) for p in params]
    n = len(labels)
    steps_per_epoch = (n + args.batch - 1) // args.batch
    step = 0
    for epoch in range(args.epochs):
        order = epoch_order(n, args.shuffle, args.seed, epoch)
        loss_sum, hits = 0.0, 0
        for b in range(0, n, args.batch):
            batch = order[b:b + args.batch]
            count = len(batch)
            n_lanes = min(args.lanes, args.batch, count)
            total = [np.zeros_like(p) for p in params]
            for lane in range(n_lanes):
                lane_sum = [np.zeros_like(p) for p in params]
                for k in range(lane * count // n_lanes, (lane + 1) * count // n_lanes):
                    loss, hit, grads = forward_backward(params, images[batch[k]], labels[batch[k]])
                    loss_sum += loss
                    hits += hit
                    lane_sum = [s + g for s, g in zip(lane_sum, grads)]
                total = [t + s for t, s in zip(total, lane_sum)]
            lr = learning_rate(args, step, steps_per_epoch)
            t = step + 1
            for i, p in enumerate(params):
                g = total[i] / count + args.weight_decay * p
                if args.optimizer == "sgd":
                    p -= lr * g
                elif args.optimizer == "momentum":
                    state1[i] = args.momentum * state1[i] + g
                    p -= lr * state1[i]
                elif args.optimizer == "nesterov":
                    state1[i] = args.momentum * state1[i] + g
                    p -= lr * (g + args.momentum * state1[i])
                else:  # adam
                    state1[i] = 0.9 * state1[i] + 0.1 * g
                    state2[i] = 0.999 * state2[i] + 0.001 * g * g
                    bc1, bc2 = 1.0 - 0.9 ** t, 1.0 - 0.999 ** t
                    p -= (lr / bc1) * state1[i] / (np.sqrt(state2[i]) / math.sqrt(bc2) + 1e-8)
            step += 1
            out.write("step %d %s\n" % (step, " ".join("%.10g" % v for p in params
                                                        for v in p.reshape(-1))))
        out.write("epoch %d %.10g %.10g\n" % (epoch + 1, loss_sum / n, hits / n))


def main():
    ap = argparse.ArgumentParser(description="independent minibatch reference (float64)")
    ap.add_argument("command", choices=["fixture"])
    ap.add_argument("name")
    ap.add_argument("--samples", type=int, default=12)
    ap.add_argument("--batch", type=int, default=7)
    ap.add_argument("--lanes", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--optimizer", default="sgd", choices=["sgd", "momentum", "nesterov", "adam"])
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--schedule", default="constant", choices=["constant", "step", "cosine"])
    ap.add_argument("--gamma", type=float, default=0.1)
    ap.add_argument("--step-epochs", type=int, default=1)
    ap.add_argument("--warmup", type=float, default=0.0)
    ap.add_argument("--shuffle", action="store_true")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--folder", help="a folder of class folders of PNG files (relative to the "
                    "project) instead of MNIST")
    ap.add_argument("--normalize", help="MEAN,...;STD,... (data.normalize)")
    args = ap.parse_args()
    if args.folder:
        images, labels, args.classes = read_folder(os.path.join(ROOT, args.folder), args.samples)
    else:
        data = os.path.join(ROOT, "data", "mnist")
        images = read_idx(os.path.join(data, "train-images-idx3-ubyte.gz"), args.samples)[..., None]
        labels = read_idx(os.path.join(data, "train-labels-idx1-ubyte.gz"), args.samples)
        args.classes = 10
    images = to_input(images, args.normalize)
    with open(args.name + ".txt", "w") as out:
        out.write("# tools/minibatch_reference.py %s\n" % " ".join(sys.argv[1:]))
        train(args, images, labels.astype(int), out)


if __name__ == "__main__":
    main()
