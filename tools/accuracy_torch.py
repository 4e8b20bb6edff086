#!/usr/bin/python3
"""PyTorch twin of an ompcnn training recipe, as a check that our training is right and not just
fast: the same network (built from the config, He-normal weights, zero biases), the same
optimizer (SGD with momentum / Nesterov, or Adam, PyTorch's definitions, which ompcnn follows),
weight decay, learning-rate schedule evaluated every step with its linear warm-up, random shifts
of up to `augment_shift` pixels with zero fill, rotations and zoom (`augment_rotate`,
`augment_scale`), left-right flips, dropout, batch normalisation (BatchNorm2d / BatchNorm1d with
the config's momentum and eps), label smoothing, a shuffle every epoch, on the same images (any
data format the trainer reads, grey or colour) scaled the same way (pixel / 255, or
data.normalize). Prints the test accuracy after every epoch.

Usage: tools/accuracy_torch.py CONFIG [--seed S] [--threads N] [--epochs E]
"""
import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_torch import build, read_idx  # noqa: E402
import pngio  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def read_split(part, base):
    """Images (n, h, w, c) and labels of one data split in any of the trainer's formats
    (docs/config.md), read here without the trainer's code."""
    path = os.path.join(base, part["images"])
    fmt, limit = part.get("format", "idx"), part.get("limit")
    if fmt == "idx":
        x = read_idx(path)
        y = read_idx(os.path.join(base, part["labels"]))
        x = x[..., None] if x.ndim == 3 else x
    elif fmt == "csv":
        h, w, c = part["shape"]
        rows = [line for line in open(path).read().splitlines() if line.strip()]
        if rows and not rows[0].lstrip()[:1].isdigit():
            rows = rows[1:]  # a header
        table = np.array([[int(v) for v in r.split(",")] for r in rows[:limit]], dtype=np.uint8)
        x, y = table[:, 1:].reshape(-1, h, w, c), table[:, 0]
    elif fmt == "cifar":
        h, w, c = part.get("shape", [32, 32, 3])
        label_bytes = 2 if part.get("variant") == "cifar100" else 1
        raw = np.fromfile(path, dtype=np.uint8).reshape(-1, label_bytes + h * w * c)
        x = raw[:, label_bytes:].reshape(-1, c, h, w).transpose(0, 2, 3, 1)
        y = raw[:, label_bytes - 1]
    else:  # folder: classes by name, each class's files by name, dealt out in turn
        classes = sorted(d for d in os.listdir(path)
                         if not d.startswith(".") and os.path.isdir(os.path.join(path, d)))
        files = [sorted(f for f in os.listdir(os.path.join(path, d))
                        if not f.startswith(".") and f.lower().endswith(".png")) for d in classes]
        order = [(k, files[k][j]) for j in range(max(map(len, files)))
                 for k in range(len(classes)) if j < len(files[k])][:limit]
        x = np.array([pngio.decode(open(os.path.join(path, classes[k], f), "rb").read())
                      for k, f in order], dtype=np.uint8)
        y = np.array([k for k, _ in order], dtype=np.uint8)
    return x[:limit], y[:limit]


def load(cfg, base, split):
    """The split as float tensors (n, c, h, w): pixel / 255, or with data.normalize
    (pixel / 255 - mean[c]) / std[c] in float32, as the trainer computes it."""
    x, y = read_split(cfg["data"][split], base)
    x = x.astype(np.float32) / np.float32(255.0)
    norm = cfg["data"].get("normalize")
    if norm:
        x = (x - np.array(norm["mean"], dtype=np.float32)) / np.array(norm["std"], dtype=np.float32)
    return (torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))),
            torch.from_numpy(y.astype(np.int64)))


def shift_batch(x, k, gen):
    """Moves each image by a random (dy, dx) in [-k, k]^2, filling with zeros."""
    n, _, h, w = x.shape
    padded = F.pad(x, (k, k, k, k))
    d = torch.randint(-k, k + 1, (n, 2), generator=gen)
    out = torch.empty_like(x)
    for i in range(n):
        dy, dx = int(d[i, 0]), int(d[i, 1])
        out[i] = padded[i, :, k - dy:k - dy + h, k - dx:k - dx + w]
    return out


def rotate_batch(xb, degrees, scale, gen):
    """Each image [C, H, W] rotated about its centre by a uniform angle in [-degrees, degrees)
    and scaled by a uniform factor in [1 - scale, 1 + scale), bilinear, zero outside: the
    trainer's augment_rotate (counterclockwise as displayed) and augment_scale."""
    n, _, h, w = xb.shape
    angle = (torch.rand(n, generator=gen) * 2 - 1) * (degrees * math.pi / 180)
    zoom = 1 + (torch.rand(n, generator=gen) * 2 - 1) * scale if scale else torch.ones(n)
    cs, sn = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    ax, ay = max(w - 1, 1) / 2, max(h - 1, 1) / 2
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cs, -sn * ay / ax
    theta[:, 1, 0], theta[:, 1, 1] = sn * ax / ay, cs
    grid = F.affine_grid(theta, list(xb.shape), align_corners=True)
    return F.grid_sample(xb, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int)
    args = ap.parse_args()
    with open(args.config) as f:
        cfg = json.load(f)
    base = os.path.dirname(os.path.abspath(args.config))
    tr = cfg.get("training", {})
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    x, y = load(cfg, base, "train")
    tx, ty = load(cfg, base, "test")
    model = build(cfg["network"], tuple(x.shape[1:]))
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    kind = tr.get("optimizer", "sgd")
    lr, wd = tr.get("learning_rate", 0.01), tr.get("weight_decay", 0.0)
    if kind == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=wd,
                               betas=(tr.get("adam_beta1", 0.9), tr.get("adam_beta2", 0.999)),
                               eps=tr.get("adam_eps", 1e-8))
    else:
        opt = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=wd,
                              momentum=0.0 if kind == "sgd" else tr.get("momentum", 0.9),
                              nesterov=kind == "nesterov")
    batch, epochs = tr.get("batch_size", 1), args.epochs or tr.get("epochs", 1)
    steps_per_epoch = math.ceil(x.shape[0] / batch)
    total, warm = steps_per_epoch * epochs, tr.get("warmup_epochs", 0) * steps_per_epoch

    def factor(step):
        f = 1.0
        if tr.get("lr_schedule", "constant") == "cosine":
            f = 0.5 * (1 + math.cos(math.pi * step / total))
        elif tr.get("lr_schedule") == "step":
            f = tr.get("lr_gamma", 0.1) ** ((step // steps_per_epoch) // tr.get("lr_step_epochs", 1))
        if warm > 0 and step < warm:
            f *= (step + 1) / warm
        return f

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    shift = tr.get("augment_shift", 0)
    rotate = tr.get("augment_rotate", 0)
    scale = tr.get("augment_scale", 0)
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(x.shape[0], generator=gen) if tr.get("shuffle") else torch.arange(x.shape[0])
        for b in range(0, x.shape[0], batch):
            idx = order[b:b + batch]
            xb = x[idx]
            if rotate or scale:
                xb = rotate_batch(xb, rotate, scale, gen)
            if shift:
                xb = shift_batch(xb, shift, gen)
            if tr.get("augment_flip"):
                flip = torch.rand(xb.shape[0], generator=gen) < 0.5
                xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), y[idx],
                            label_smoothing=tr.get("label_smoothing", 0.0)).backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            correct = sum(int((model(tx[i:i + 1000]).argmax(1) == ty[i:i + 1000]).sum())
                          for i in range(0, tx.shape[0], 1000))
        print("epoch %d test_acc %.4f  %.0f s" % (epoch + 1, correct / tx.shape[0],
                                                  time.perf_counter() - start), flush=True)


if __name__ == "__main__":
    main()
