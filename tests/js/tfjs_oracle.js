// TF.js itself as the oracle of leam's TF.js -> torch converter (tests/test_tfjs.py).
// usage: node tfjs_oracle.js MODEL.json INPUT.f32 N H W OUTPUT_NODE OUT.f32
// INPUT.f32: N x H x W x 3 float32 little-endian (NHWC, values as the graph expects);
// OUT.f32: the output node's values for the N images, float32, row after row.
// Pure-JavaScript CPU backend: no native binary, nothing downloaded.
const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs');

async function main() {
  const [modelJson, inputFile, n, h, w, outputNode, outFile] = process.argv.slice(2);
  await tf.setBackend('cpu');
  const spec = JSON.parse(fs.readFileSync(modelJson, 'utf8'));
  const weightSpecs = [];
  const buffers = [];
  for (const group of spec.weightsManifest) {
    weightSpecs.push(...group.weights);
    for (const p of group.paths) buffers.push(fs.readFileSync(path.join(path.dirname(modelJson), p)));
  }
  const all = Buffer.concat(buffers);
  const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
  const model = await tf.loadGraphModel(tf.io.fromMemory({
    modelTopology: spec.modelTopology, weightSpecs, weightData, format: spec.format,
    generatedBy: spec.generatedBy, convertedBy: spec.convertedBy,
  }));
  const raw = fs.readFileSync(inputFile);
  const data = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
  const N = Number(n), H = Number(h), W = Number(w);
  const chunks = [];
  for (let i = 0; i < N; i++) {  // one image at a time: the CPU backend's memory stays small
    const x = tf.tensor4d(data.slice(i * H * W * 3, (i + 1) * H * W * 3), [1, H, W, 3]);
    const y = model.execute(x, outputNode);
    chunks.push(Buffer.from((await y.data()).buffer));
    x.dispose(); y.dispose();
  }
  fs.writeFileSync(outFile, Buffer.concat(chunks));
}
main().catch((e) => { console.error(e); process.exit(1); });
