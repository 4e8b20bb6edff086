#!/usr/bin/env python3
"""batchnorm against PyTorch's BatchNorm2d (after a convolution: h x w x c) and BatchNorm1d
(after a dense layer: 1 x 1 x units) on the same inputs: training forward, backward (dx,
dweight, dbias) and the running statistics it leaves, and evaluation forward with given running
statistics, within float tolerance, for several shapes, batch sizes, lane cuts, momentums and
eps. And a network's initial batchnorm arrays, as `trainer --save-init` writes them, are a fresh
BatchNorm's (weight 1, bias 0, running mean 0, running variance 1).
Usage: check_batchnorm_torch.py BATCHNORM_DRIVER TRAINER SOURCE_DIR"""
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch

driver, trainer, source = sys.argv[1], sys.argv[2], sys.argv[3]
rng = np.random.default_rng(7)
work = tempfile.mkdtemp()
failures = 0


def run_driver(h, w, c, n, lanes, training, momentum, eps, x, dy, weight, bias, rmean, rvar):
    src, dst = os.path.join(work, "in"), os.path.join(work, "out")
    with open(src, "wb") as f:
        f.write(struct.pack("<6i2d", h, w, c, n, lanes, training, momentum, eps))
        for a in (x, dy, weight, bias, rmean, rvar):
            f.write(np.ascontiguousarray(a, dtype="<f4").tobytes())
    subprocess.run([driver, src, dst], check=True)
    out = np.fromfile(dst, dtype="<f4")
    size = n * h * w * c
    parts = {"y": out[:size].reshape(n, h, w, c)}
    if training:
        parts["dx"] = out[size:2 * size].reshape(n, h, w, c)
        rest = out[2 * size:]
        parts["dweight"], parts["dbias"] = rest[:c], rest[c:2 * c]
        parts["running_mean"], parts["running_var"] = rest[2 * c:3 * c], rest[3 * c:4 * c]
    return parts


def check(what, got, want, tol):
    global failures
    err = np.max(np.abs(got - want) / (tol * (1.0 + np.abs(want))))
    if not err <= 1.0:
        print(f"FAIL {what}: worst error {err * tol:.3g} relative (tolerance {tol:g})")
        failures += 1


def case(h, w, c, n, lanes, momentum, eps):
    one_d = h == 1 and w == 1
    x = (rng.standard_normal((n, h, w, c)) * 3.0 + rng.standard_normal(c) * 2.0).astype(np.float32)
    dy = rng.standard_normal((n, h, w, c)).astype(np.float32)
    weight = rng.uniform(0.5, 1.5, c).astype(np.float32)
    bias = rng.standard_normal(c).astype(np.float32)
    rmean = rng.standard_normal(c).astype(np.float32)
    rvar = rng.uniform(0.5, 2.0, c).astype(np.float32)
    name = f"{'BatchNorm1d' if one_d else 'BatchNorm2d'} {n}x{h}x{w}x{c} lanes {lanes} " \
           f"momentum {momentum} eps {eps}"
    bn = (torch.nn.BatchNorm1d if one_d else torch.nn.BatchNorm2d)(c, eps=eps, momentum=momentum)
    with torch.no_grad():
        bn.weight.copy_(torch.from_numpy(weight))
        bn.bias.copy_(torch.from_numpy(bias))
        bn.running_mean.copy_(torch.from_numpy(rmean))
        bn.running_var.copy_(torch.from_numpy(rvar))
    # torch's layout: (n, c) or (n, c, h, w); ours is channels-last.
    tx = torch.from_numpy(x.reshape(n, c) if one_d else x.transpose(0, 3, 1, 2).copy())
    tx.requires_grad_(True)
    tdy = torch.from_numpy(dy.reshape(n, c) if one_d else dy.transpose(0, 3, 1, 2).copy())

    def ours_layout(t):
        a = t.detach().numpy()
        return a.reshape(n, h, w, c) if one_d else a.transpose(0, 2, 3, 1)

    bn.train()
    ty = bn(tx)
    ty.backward(tdy)
    got = run_driver(h, w, c, n, lanes, 1, momentum, eps, x, dy, weight, bias, rmean, rvar)
    check(name + ": training y", got["y"], ours_layout(ty), 1e-5)
    check(name + ": dx", got["dx"], ours_layout(tx.grad), 1e-4)
    check(name + ": dweight", got["dweight"], bn.weight.grad.numpy(), 1e-4)
    check(name + ": dbias", got["dbias"], bn.bias.grad.numpy(), 1e-4)
    check(name + ": running_mean", got["running_mean"], bn.running_mean.numpy(), 1e-5)
    check(name + ": running_var", got["running_var"], bn.running_var.numpy(), 1e-5)
    # Evaluation: the running statistics given.
    bn.eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.from_numpy(rmean))
        bn.running_var.copy_(torch.from_numpy(rvar))
        ey = bn(tx)
    got = run_driver(h, w, c, n, lanes, 0, momentum, eps, x, dy, weight, bias, rmean, rvar)
    check(name + ": evaluation y", got["y"], ours_layout(ey), 1e-5)


case(6, 5, 4, 8, 4, 0.1, 1e-5)     # after a convolution, lanes of two
case(3, 7, 16, 5, 2, 0.3, 1e-3)    # uneven lanes
case(12, 12, 3, 2, 0, 0.1, 1e-5)   # one lane
case(1, 1, 20, 16, 4, 0.1, 1e-5)   # after a dense layer
case(1, 1, 7, 3, 3, 0.01, 0.1)     # one sample a lane
case(1, 1, 33, 64, 2, 1.0, 1e-5)   # momentum 1: the running statistics are the batch's
# The initial arrays of a network with a batchnorm after a convolution and one after a dense layer.
init = os.path.join(work, "init.npz")
net = ('network=[{"type":"conv2d","filters":6,"kernel":3},{"type":"batchnorm"},{"type":"relu"},'
       '{"type":"dense","units":12},{"type":"batchnorm"},{"type":"relu"},{"type":"dense","units":10},'
       '{"type":"softmax"}]')
subprocess.run([trainer, os.path.join(source, "config", "mnist-small.json"), "--set", net,
                "--set", "training.epochs=1", "--set", "data.train.limit=64",
                "--set", "data.test.limit=64", "--save-init", init],
               check=True, stdout=subprocess.DEVNULL)
arrays = np.load(init)
for index, fresh in ((1, torch.nn.BatchNorm2d(6)), (4, torch.nn.BatchNorm1d(12))):
    for name in ("weight", "bias", "running_mean", "running_var"):
        key = "%d_batchnorm_%s" % (index, name)
        if key not in arrays or not np.array_equal(arrays[key],
                                                   getattr(fresh, name).detach().numpy()):
            print("FAIL initial %s: %s, a fresh PyTorch BatchNorm has %s"
                  % (key, arrays[key] if key in arrays else "missing",
                     getattr(fresh, name).detach().numpy()))
            failures += 1
print("batchnorm vs PyTorch:", "FAILED" if failures else "all equal within tolerance")
sys.exit(1 if failures else 0)
