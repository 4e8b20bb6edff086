#!/usr/bin/env node
// Runs a model exported by `trainer export --onnx` in ONNX Runtime (CPU) on the images of an
// IDX file (raw or gzipped) and prints, per image, "INDEX CLASS P0 P1 ...", the probabilities
// with 9 significant digits. Installed by tools/setup.sh (npm install --ignore-scripts here).
//
// Usage: node tools/onnx/run.js MODEL.onnx IMAGES.idx[.gz] [COUNT]
'use strict';
const fs = require('fs');
const zlib = require('zlib');
const ort = require('onnxruntime-node');

async function main() {
  const [model, images, countArg] = process.argv.slice(2);
  if (!model || !images) {
    console.error('usage: node tools/onnx/run.js MODEL.onnx IMAGES.idx[.gz] [COUNT]');
    process.exit(2);
  }
  let raw = fs.readFileSync(images);
  if (raw[0] === 0x1f && raw[1] === 0x8b) raw = zlib.gunzipSync(raw);
  const ndim = raw[3];
  const dims = [];
  for (let i = 0; i < ndim; i++) dims.push(raw.readUInt32BE(4 + 4 * i));
  const [n, h, w] = dims;
  const c = ndim === 4 ? dims[3] : 1;
  const count = Math.min(n, countArg ? Number(countArg) : n);
  const size = h * w * c;
  const pixels = new Float32Array(count * size);
  const offset = 4 + 4 * ndim;
  for (let i = 0; i < count * size; i++) pixels[i] = raw[offset + i];
  const session = await ort.InferenceSession.create(model);
  const out = await session.run({ pixels: new ort.Tensor('float32', pixels, [count, h, w, c]) });
  const probs = out.probabilities.data;
  const k = out.probabilities.dims[1];
  const lines = [];
  for (let i = 0; i < count; i++) {
    const row = Array.from(probs.slice(i * k, (i + 1) * k));
    let best = 0;
    for (let j = 1; j < k; j++) if (row[j] > row[best]) best = j;
    lines.push(`${i} ${best} ${row.map((p) => p.toPrecision(9)).join(' ')}`);
  }
  process.stdout.write(lines.join('\n') + '\n');
}

main().catch((e) => {
  console.error(`run.js: ${e.message}`);
  process.exit(1);
});
