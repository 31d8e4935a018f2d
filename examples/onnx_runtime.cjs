#!/usr/bin/env node
// examples/onnx_runtime.cjs -- train in neurond, run anywhere: a 4-8-3 network (tanh hidden
// layer, softmax output) learns Fisher's Iris data, is exported as ONNX
// (GET /v1/models/{id}/export?format=onnx) and runs in ONNX Runtime for Node.js, with no neurond
// involved; its answers are compared with POST /predict's.
//
//     npm install --ignore-scripts onnxruntime-node     # once, in this folder or above it
//     scripts/serve &                                   # or any running neurond
//     node examples/onnx_runtime.cjs
//
// Environment: NEUROND_URL (default http://127.0.0.1:8080), NEUROND_TOKEN (bearer token, when
// neurond runs with --token-file). Needs Node.js 18 or later (fetch). Writes iris.onnx to the
// current directory (ONNX_FILE overrides the path). Exits non-zero on any HTTP error, or when
// ONNX Runtime and /predict disagree (probabilities beyond 1e-12 relative, or any class).
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const ort = require('onnxruntime-node');

const URL_BASE = (process.env.NEUROND_URL || 'http://127.0.0.1:8080').replace(/\/$/, '');
const TOKEN = process.env.NEUROND_TOKEN || '';
const ONNX_FILE = process.env.ONNX_FILE || 'iris.onnx';

async function call(method, p, body, contentType = 'application/json') {
  const headers = {};
  if (TOKEN) headers.Authorization = `Bearer ${TOKEN}`;
  if (body !== undefined) headers['Content-Type'] = contentType;
  console.log(`> ${method} ${p}${TOKEN ? '   (Authorization: Bearer $NEUROND_TOKEN)' : ''}`);
  const res = await fetch(URL_BASE + p, {
    method, headers,
    body: body === undefined || typeof body === 'string' ? body : JSON.stringify(body),
  });
  const buf = Buffer.from(await res.arrayBuffer());
  if (!res.ok) throw new Error(`HTTP ${res.status}: ${buf.toString()}`);
  return { res, buf };
}

async function json(method, p, body, contentType) {
  const { buf } = await call(method, p, body, contentType);
  const text = buf.toString();
  console.log(text.length > 300 ? `${text.slice(0, 300)}…` : text);
  return JSON.parse(text);
}

async function main() {
  console.log('# 1. A 4-8-3 network: tanh hidden units, softmax over the three species.');
  const model = await json('POST', '/v1/models', {
    kind: 'mlp', inputs: 4, outputs: 3, hidden: [{ units: 8, activation: 'tanh' }],
    output_activation: 'softmax', init: { method: 'xavier', seed: 7 },
    optimizer: { method: 'adam', learning_rate: 0.05 },
  });
  const M = `/v1/models/${model.id}`;

  console.log('\n# 2. The flowers as CSV, then 300 full-batch Adam steps.');
  const csv = fs.readFileSync(path.join(__dirname, 'data', 'iris.csv'), 'utf8');
  await json('POST', `${M}/batches`, csv, 'text/csv');
  await json('POST', `${M}/train`, { steps: 300, history_every: 100 });
  const loss = await json('POST', `${M}/loss`, {});

  console.log(`\n# 3. The trained model as ONNX, saved to ${ONNX_FILE}.`);
  const { res, buf } = await call('GET', `${M}/export?format=onnx`);
  console.log(`${res.headers.get('content-type')}, ${res.headers.get('content-disposition')}, ${buf.length} bytes`);
  fs.writeFileSync(ONNX_FILE, buf);

  console.log('\n# 4. ONNX Runtime runs the file on every flower: input x [150, 4] float64.');
  const rows = csv.trim().split('\n').slice(1).map((l) => l.split(',').map(Number));
  const x = rows.map((r) => r.slice(0, 4));
  const session = await ort.InferenceSession.create(ONNX_FILE);
  console.log(`inputs ${JSON.stringify(session.inputNames)}, outputs ${JSON.stringify(session.outputNames)}`);
  const out = await session.run({ x: new ort.Tensor('float64', Float64Array.from(x.flat()), [x.length, 4]) });
  const classes = Array.from(out.classes.data, Number);
  const accuracy = classes.filter((c, i) => c === rows[i][4]).length / rows.length;
  console.log(`outputs ${JSON.stringify(out.outputs.dims)}, classes ${JSON.stringify(out.classes.dims)}; accuracy ${accuracy}`);

  console.log('\n# 5. The same rows through POST /predict: the answers must agree.');
  const pred = await json('POST', `${M}/predict`, { x });
  let worst = 0;
  pred.outputs.flat().forEach((want, i) => {
    const got = out.outputs.data[i];
    worst = Math.max(worst, want === got ? 0 : Math.abs(got - want) / Math.max(Math.abs(got), Math.abs(want)));
  });
  const sameClasses = pred.classes.every((c, i) => c === classes[i]);
  console.log(`largest relative difference ${worst}, classes ${sameClasses ? 'identical' : 'DIFFERENT'}`);
  if (worst > 1e-12 || !sameClasses) throw new Error('ONNX Runtime and /predict disagree');
  console.log(`\n# Done: model ${model.id}, ONNX accuracy ${accuracy} (the API's: ${loss.accuracy}), max relative difference ${worst}.`);
}

main().catch((e) => {
  console.error(`onnx_runtime: ${e.message}`);
  process.exit(1);
});
