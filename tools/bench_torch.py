#!/usr/bin/python3
"""PyTorch twin of an ompcnn config, for the benchmark: builds the same network from the config's
"network" list (NCHW, float32), trains it with the same SGD settings on the same MNIST images
(pixel / 255, cross-entropy on the logits) and prints the training speed as one line:

    images_per_s=<float> seconds=<float> images=<int> threads=<int> final_loss=<float>

Only the training loop is timed; the data is loaded and converted before the clock starts.

Usage: tools/bench_torch.py CONFIG --threads N [--images N] [--epochs E]
"""
import argparse
import json
import os
import sys
import time

try:
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from idx_numpy import read_idx
except ImportError as e:  # the caller prints a clear message
    print("missing: %s (install python3-torch and python3-numpy)" % e, file=sys.stderr)
    sys.exit(3)


def build(network, shape):
    c, h, w = shape
    layers = []
    flat = False
    for spec in network:
        kind = spec["type"]
        if kind in ("conv2d", "maxpool", "avgpool", "globalavgpool") and flat:
            # after a dense layer: its (1, 1, units) output as units channels of 1x1
            layers.append(nn.Unflatten(1, (c, h, w)))
            flat = False
        if kind == "conv2d":
            k, s, p = spec["kernel"], spec.get("stride", 1), spec.get("padding", 0)
            if p == "same":
                p = (k - 1) // 2
            layers.append(nn.Conv2d(c, spec["filters"], k, s, p, bias=spec.get("bias", True)))
            c, h, w = spec["filters"], (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        elif kind == "maxpool":
            size = spec.get("size", 2)
            stride = spec.get("stride", size)
            layers.append(nn.MaxPool2d(size, stride))
            h, w = (h - size) // stride + 1, (w - size) // stride + 1
        elif kind == "avgpool":
            size = spec.get("size", 2)
            stride = spec.get("stride", size)
            layers.append(nn.AvgPool2d(size, stride))
            h, w = (h - size) // stride + 1, (w - size) // stride + 1
        elif kind == "globalavgpool":
            layers.append(nn.AdaptiveAvgPool2d(1))
            h, w = 1, 1
        elif kind == "dropout":
            layers.append(nn.Dropout(spec["rate"]))
        elif kind == "dense":
            if not flat:
                layers.append(nn.Flatten())
                flat = True
            layers.append(nn.Linear(c * h * w, spec["units"], bias=spec.get("bias", True)))
            c, h, w = spec["units"], 1, 1
        elif kind == "batchnorm":
            bn = nn.BatchNorm1d if flat else nn.BatchNorm2d
            layers.append(bn(c, eps=spec.get("eps", 1e-5), momentum=spec.get("momentum", 0.1)))
        elif kind == "relu":
            layers.append(nn.ReLU())
        elif kind == "sigmoid":
            layers.append(nn.Sigmoid())
        elif kind == "tanh":
            layers.append(nn.Tanh())
        elif kind == "softmax":
            pass  # cross_entropy takes the logits
        else:
            sys.exit("bench_torch: no twin for layer type %s" % kind)
    return nn.Sequential(*layers)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--images", type=int)
    ap.add_argument("--epochs", type=int)
    args = ap.parse_args()
    with open(args.config) as f:
        cfg = json.load(f)
    base = os.path.dirname(os.path.abspath(args.config))
    train = cfg["data"]["train"]
    limit = args.images or train.get("limit")
    images = read_idx(os.path.join(base, train["images"]))[:limit]
    labels = read_idx(os.path.join(base, train["labels"]))[:limit]
    tr = cfg.get("training", {})
    batch = tr.get("batch_size", 1)
    epochs = args.epochs or tr.get("epochs", 1)
    lr = tr.get("learning_rate", 0.01)

    torch.set_num_threads(args.threads)
    torch.manual_seed(tr.get("seed", 0))
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1).contiguous()
    y = torch.from_numpy(labels.astype(np.int64))
    model = build(cfg["network"], tuple(x.shape[1:]))
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    n = x.shape[0]
    batches = [(x[i:i + batch], y[i:i + batch]) for i in range(0, n, batch)]

    start = time.perf_counter()
    for _ in range(epochs):
        for xb, yb in batches:
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
    seconds = time.perf_counter() - start
    print("images_per_s=%.2f seconds=%.4f images=%d threads=%d final_loss=%.6f" %
          (n * epochs / seconds, seconds, n * epochs, args.threads, loss.item()))


if __name__ == "__main__":
    main()
