#!/usr/bin/python3
"""Turns a trained ompcnn network (a parameter file or checkpoint .npz) into a TorchScript model:
the PyTorch twin of tools/bench_torch.py (the same layers, built from the config the file
carries), its weights loaded from the file and reordered to PyTorch's layouts, wrapped so that
it takes what `trainer export` models take, pixel values 0..255 as floats [N, H, W, C] (channels
last), scales them as training did (/ 255, then data.normalize) and returns the probabilities
[N, classes]. Dropout is the identity and batch normalisation uses its running statistics (the
model is saved in eval mode).

  tools/to_torch.py w.npz -o model.pt          # then torch.jit.load("model.pt")(pixels)
  tools/to_torch.py w.npz --predict IMAGES.idx [--count N]
      runs the TorchScript model (-o, or a fresh one) on an IDX file's first N images and prints
      "INDEX CLASS P0 P1 ..." per image, as tools/onnx/run.js does

Usage: tools/to_torch.py FILE.npz [-o MODEL.pt] [--config CONFIG.json] [--predict IDX [--count N]]
"""
import argparse
import json
import os
import sys
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_torch import build, read_idx  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402


class Deployed(nn.Module):
    """pixels [N, H, W, C] 0..255 -> probabilities [N, classes]."""

    def __init__(self, body, mean, std):
        super().__init__()
        self.body = body
        self.normalize = mean is not None
        self.register_buffer("mean", torch.tensor(mean if mean else [0.0], dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std if std else [1.0], dtype=torch.float32))

    def forward(self, pixels):
        x = pixels / 255.0
        if self.normalize:
            x = (x - self.mean) / self.std
        y = self.body(x.permute(0, 3, 1, 2))
        if y.dim() == 4:  # a spatial output: the trainer's classes are in (h, w, c) order
            y = y.permute(0, 2, 3, 1).flatten(1)
        return torch.softmax(y, dim=1)


def load_npz(path, config_path):
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        cfg = json.loads(z.read("config.json")) if "config.json" in names else None
        model = json.loads(z.read("model.json")) if "model.json" in names else None
    if config_path:
        with open(config_path) as f:
            cfg = json.load(f)
    if cfg is None or model is None:
        sys.exit("to_torch: %s carries no config.json and model.json (a file written by "
                 "--save or a checkpoint is needed; or give --config)" % path)
    return cfg, model, np.load(path)


def twin(cfg, model, arrays):
    h, w, c = model["input"]
    body = build(cfg["network"], (c, h, w))
    body.eval()
    # The shape each Flatten sees: a dense layer's weight rows are in ompcnn's (h, w, c) order.
    flat_inputs = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: flat_inputs.append(inp[0].shape))
             for m in body if isinstance(m, nn.Flatten)]
    with torch.no_grad():
        body(torch.zeros(1, c, h, w))
    for hk in hooks:
        hk.remove()
    modules = [m for m in body if isinstance(m, (nn.Conv2d, nn.Linear))]
    layers = [(i, spec["type"]) for i, spec in enumerate(cfg["network"])
              if spec["type"] in ("conv2d", "dense")]
    flats = iter(flat_inputs)
    with torch.no_grad():
        for module, (i, kind) in zip(modules, layers):
            weight = arrays["%d_%s_weight" % (i, kind)]
            if kind == "conv2d":  # (F, K, K, C) -> (F, C, K, K)
                module.weight.copy_(torch.from_numpy(weight.transpose(0, 3, 1, 2).copy()))
            else:  # (in, out), in in (h, w, c) order -> (out, in) in (c, h, w) order
                after_flatten = isinstance(body[list(body).index(module) - 1], nn.Flatten)
                shape = next(flats) if after_flatten else None
                if shape is not None and len(shape) == 4:
                    _, cc, hh, ww = shape
                    weight = weight.reshape(hh, ww, cc, -1).transpose(2, 0, 1, 3).reshape(
                        cc * hh * ww, -1)
                module.weight.copy_(torch.from_numpy(weight.T.copy()))
            if module.bias is not None:
                module.bias.copy_(torch.from_numpy(arrays["%d_%s_bias" % (i, kind)]))
        norms = [m for m in body if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
        specs = [i for i, spec in enumerate(cfg["network"]) if spec["type"] == "batchnorm"]
        for module, i in zip(norms, specs):
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(module, name).copy_(torch.from_numpy(arrays["%d_batchnorm_%s" % (i, name)]))
    norm = cfg.get("data", {}).get("normalize")
    channels = c
    mean = std = None
    if norm:
        mean = [float(v) for v in norm["mean"]] * (channels if len(norm["mean"]) == 1 else 1)
        std = [float(v) for v in norm["std"]] * (channels if len(norm["std"]) == 1 else 1)
    return Deployed(body, mean, std).eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("npz")
    ap.add_argument("-o", "--output")
    ap.add_argument("--config")
    ap.add_argument("--predict")
    ap.add_argument("--count", type=int)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg, model, arrays = load_npz(args.npz, args.config)
    scripted = torch.jit.script(twin(cfg, model, arrays))
    if args.output:
        tmp = args.output + ".tmp"
        scripted.save(tmp)
        os.replace(tmp, args.output)  # atomic, as the trainer's writes
        scripted = torch.jit.load(args.output)
    if args.predict:
        images = read_idx(args.predict)[:args.count]
        if images.ndim == 3:
            images = images[..., None]
        with torch.no_grad():
            probs = scripted(torch.from_numpy(images.astype(np.float32))).numpy()
        for i, p in enumerate(probs):
            print("%d %d %s" % (i, int(np.argmax(p)), " ".join("%.9g" % v for v in p)))


if __name__ == "__main__":
    main()
