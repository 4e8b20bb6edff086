#!/usr/bin/python3
"""Independent numpy reference of the report's printed CNN (conv 8x3x3 -> sigmoid -> maxpool 2 ->
dense 20 sigmoid -> dense 10 softmax, per-sample SGD), used to make the test fixtures that the C
trainer must match and to compare whole runs.

It follows the report's classes line by line, in float64; the per-region Python loops are written
as array operations with the same arithmetic. Switches:
  --correct-sigmoid   use the true sigmoid derivative instead of the printed Sigmoid.backprop
                      (which applies the sigmoid a second time to its stored output)
  --pool-index-bug    route the max-pool gradient as the printed loop does, to d_input[i+i2, j+j2]
  --printed-loops     run the report's per-region Python loops literally (conv and max-pool), the
                      same arithmetic, only slow: to time the report's code as printed

Usage:
  tools/report_reference.py run [--seed S] [--epochs E] [--lr LR] [--limit N] [switches]
  tools/report_reference.py fixture OUT_PREFIX [--seed S] [switches]
      writes OUT_PREFIX.losses.txt (loss of each of the first epoch's steps) and
      OUT_PREFIX.weights.txt (all parameters after one epoch, one per line, in the trainer's
      save order: conv filters, dense W, dense b, softmax W, softmax b)
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from idx_numpy import read_idx  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "data", "mnist")


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


class ConvLayer:
    def __init__(self, num_filters):
        self.num_filters = num_filters
        self.filters = np.random.randn(num_filters, 3, 3) / 9

    def regions(self, image):
        # regions[i, j] = image[i:i+3, j:j+3], the report's get_regions as one array
        h, w = image.shape
        return np.lib.stride_tricks.as_strided(
            image, shape=(h - 2, w - 2, 3, 3), strides=image.strides * 2)

    def forward(self, input):
        self.last_input = input
        # output[i, j] = np.sum(im_region * self.filters, axis=(1, 2))
        return np.einsum("ijkl,fkl->ijf", self.regions(input), self.filters)

    def backprop(self, d_out, lr):
        # d_filters[f] += d_out[i, j, f] * im_region, summed over all regions
        d_filters = np.einsum("ijf,ijkl->fkl", d_out, self.regions(self.last_input))
        self.filters -= lr * d_filters


class LoopConvLayer(ConvLayer):
    """The printed ConvLayer with its region loops as printed."""

    def get_regions(self, image):
        h, w = image.shape
        regions_list = []
        for i in range(h - 2):
            for j in range(w - 2):
                im_region = image[i:(i + 3), j:(j + 3)]
                regions_list.append([im_region, i, j])
        return regions_list

    def forward(self, input):
        self.last_input = input
        h, w = input.shape
        output = np.zeros((h - 2, w - 2, self.num_filters))
        for im_region, i, j in self.get_regions(input):
            output[i, j] = np.sum(im_region * self.filters, axis=(1, 2))
        return output

    def backprop(self, d_out, lr):
        d_filters = np.zeros(self.filters.shape)
        for im_region, i, j in self.get_regions(self.last_input):
            for f in range(self.num_filters):
                d_filters[f] += d_out[i, j, f] * im_region
        self.filters -= lr * d_filters


class Sigmoid:
    def __init__(self, printed):
        self.printed = printed

    def forward(self, x):
        self.last = sigmoid(x)
        return self.last

    def backprop(self, x):
        sig = sigmoid(self.last) if self.printed else self.last
        return x * sig * (1 - sig)


class MaxPool:
    def __init__(self, index_bug):
        self.index_bug = index_bug

    def forward(self, input):
        self.last_input = input
        h, w, f = input.shape
        blocks = input[: h // 2 * 2, : w // 2 * 2].reshape(h // 2, 2, w // 2, 2, f)
        self.last_blocks = blocks
        return blocks.max(axis=(1, 3))

    def backprop(self, d_out):
        blocks = self.last_blocks
        nh, _, nw, _, f = blocks.shape
        amax = blocks.max(axis=(1, 3))
        # is_max[i, i2, j, j2, f]: im_region[i2, j2, f] == amax[f] for region (i, j)
        is_max = blocks == amax[:, None, :, None, :]
        d_input = np.zeros(self.last_input.shape)
        if not self.index_bug:
            # d_input[i*2 + i2, j*2 + j2, f] = d_out[i, j, f] where the region's max is
            g = np.where(is_max, d_out[:, None, :, None, :], 0.0)
            d_input[: nh * 2, : nw * 2] = g.reshape(nh * 2, nw * 2, f)
            return d_input
        # The printed loop, as printed: d_input[i + i2, j + j2, f2] = d_out[i, j, f2] wherever
        # im_region[i2, j2, f2] == amax[f2], regions in order (i, j), so a later write wins.
        for i in range(nh):
            for j in range(nw):
                for i2 in range(2):
                    for j2 in range(2):
                        hit = is_max[i, i2, j, j2]
                        d_input[i + i2, j + j2][hit] = d_out[i, j][hit]
        return d_input


class LoopMaxPool(MaxPool):
    """The printed MaxPool with its region loops as printed."""

    def get_regions(self, image):
        h, w, _ = image.shape
        regions_list = []
        for i in range(h // 2):
            for j in range(w // 2):
                im_region = image[(i * 2):(i * 2 + 2), (j * 2):(j * 2 + 2)]
                regions_list.append([im_region, i, j])
        return regions_list

    def forward(self, input):
        self.last_input = input
        h, w, num_filters = input.shape
        output = np.zeros((h // 2, w // 2, num_filters))
        for im_region, i, j in self.get_regions(input):
            output[i, j] = np.amax(im_region, axis=(0, 1))
        return output

    def backprop(self, d_out):
        d_input = np.zeros(self.last_input.shape)
        for im_region, i, j in self.get_regions(self.last_input):
            h, w, f = im_region.shape
            amax = np.amax(im_region, axis=(0, 1))
            for i2 in range(h):
                for j2 in range(w):
                    for f2 in range(f):
                        if im_region[i2, j2, f2] == amax[f2]:
                            if self.index_bug:
                                d_input[i + i2, j + j2, f2] = d_out[i, j, f2]
                            else:
                                d_input[i * 2 + i2, j * 2 + j2, f2] = d_out[i, j, f2]
        return d_input


class Dense:
    def __init__(self, nodes, input_len):
        self.weights = np.random.randn(input_len, nodes) / input_len
        self.biases = np.zeros(nodes)

    def forward(self, input):
        self.lastinputshape = input.shape
        input = input.flatten()
        self.lastinput = input
        z1 = np.dot(self.weights.T, input) + self.biases
        self.total = z1
        return 1 / (1 + np.exp(-z1))

    def backprop(self, d_out, lr):
        x = self.total
        derivative = (np.exp(-x)) / ((np.exp(-x) + 1) ** 2)
        dtd = d_out * derivative
        dldw = np.matmul(self.lastinput[np.newaxis].T, dtd[np.newaxis])
        dldb = dtd
        dldinp = np.matmul(self.weights, dtd)
        self.weights -= lr * dldw
        self.biases -= lr * dldb
        return dldinp.reshape(self.lastinputshape)


class Softmax:
    def __init__(self, input_len, nodes):
        self.weights = np.random.randn(input_len, nodes) / input_len
        self.biases = np.zeros(nodes)

    def forward(self, input):
        self.last_input_shape = input.shape
        self.last_input = input
        z2 = np.dot(input, self.weights) + self.biases
        self.last_totals = z2
        exp = np.exp(z2)
        return exp / np.sum(exp, axis=0)

    def backprop(self, d_out, lr):
        for i, gradient in enumerate(d_out):
            if gradient == 0:
                continue
            t_exp = np.exp(self.last_totals)
            S = np.sum(t_exp)
            d_outdz = -t_exp[i] * t_exp / (S ** 2)
            d_outdz[i] = t_exp[i] * (S - t_exp[i]) / (S ** 2)
            dg = gradient * d_outdz
            d_L_d_w = np.matmul(self.last_input[np.newaxis].T, dg[np.newaxis])
            d_L_d_b = dg
            d_L_d_inputs = np.matmul(self.weights, dg)
            self.weights -= lr * d_L_d_w
            self.biases -= lr * d_L_d_b
            return d_L_d_inputs.reshape(self.last_input_shape)


class ReportCNN:
    def __init__(self, seed, printed_sigmoid, pool_index_bug, printed_loops=False):
        np.random.seed(seed)
        self.conv = (LoopConvLayer if printed_loops else ConvLayer)(8)
        self.act = Sigmoid(printed_sigmoid)
        self.pool = (LoopMaxPool if printed_loops else MaxPool)(pool_index_bug)
        self.dense = Dense(20, 13 * 13 * 8)
        self.softmax = Softmax(20, 10)

    def forward(self, image, label):
        out = self.conv.forward(image / 255)
        out = self.act.forward(out)
        out = self.pool.forward(out)
        out = self.dense.forward(out)
        out = self.softmax.forward(out)
        loss = -np.log(out[label])
        acc = 1 if np.argmax(out) == label else 0
        return out, loss, acc

    def train(self, im, label, lr):
        out, loss, acc = self.forward(im, label)
        gradient = np.zeros(10)
        gradient[label] = -1 / out[label]
        gradient = self.softmax.backprop(gradient, lr)
        gradient = self.dense.backprop(gradient, lr)
        gradient = self.pool.backprop(gradient)
        gradient = self.act.backprop(gradient)
        self.conv.backprop(gradient, lr)
        return loss, acc

    def parameters(self):
        return [self.conv.filters, self.dense.weights, self.dense.biases, self.softmax.weights,
                self.softmax.biases]


def load(limit):
    tr_x = read_idx(os.path.join(DATA, "train-images-idx3-ubyte.gz"))[:limit].astype(np.float64)
    tr_y = read_idx(os.path.join(DATA, "train-labels-idx1-ubyte.gz"))[:limit]
    te_x = read_idx(os.path.join(DATA, "t10k-images-idx3-ubyte.gz"))[:limit].astype(np.float64)
    te_y = read_idx(os.path.join(DATA, "t10k-labels-idx1-ubyte.gz"))[:limit]
    return tr_x, tr_y, te_x, te_y


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=["run", "fixture"])
    ap.add_argument("out", nargs="?")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--correct-sigmoid", action="store_true")
    ap.add_argument("--pool-index-bug", action="store_true")
    ap.add_argument("--printed-loops", action="store_true")
    args = ap.parse_args()
    tr_x, tr_y, te_x, te_y = load(args.limit)
    cnn = ReportCNN(args.seed, not args.correct_sigmoid, args.pool_index_bug, args.printed_loops)
    if args.mode == "fixture":
        if not args.out:
            ap.error("fixture needs OUT_PREFIX")
        losses = [cnn.train(im, label, args.lr)[0] for im, label in zip(tr_x, tr_y)]
        np.savetxt(args.out + ".losses.txt", np.array(losses), fmt="%.9e")
        flat = np.concatenate([p.ravel() for p in cnn.parameters()])
        np.savetxt(args.out + ".weights.txt", flat, fmt="%.9e")
        return
    print("epoch,train_loss,train_acc,test_loss,test_acc,seconds")
    for epoch in range(args.epochs):
        start = time.perf_counter()
        loss = correct = 0
        for im, label in zip(tr_x, tr_y):
            l, acc = cnn.train(im, label, args.lr)
            loss += l
            correct += acc
        tl = tc = 0
        for im, label in zip(te_x, te_y):
            _, l, acc = cnn.forward(im, label)
            tl += l
            tc += acc
        n, m = len(tr_x), len(te_x)
        print("%d,%.6f,%.4f,%.6f,%.4f,%.2f" % (epoch + 1, loss / n, correct / n, tl / m, tc / m,
                                              time.perf_counter() - start))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
