// ONNX exports in ONNX Runtime against POST /predict (run by tests/onnx/run.sh, node's test
// runner). For every kind and output kind: train a model on seeded random rows, export it in
// float64 and float32, run both in onnxruntime-node on 40 random rows and compare with what
// /predict answers for the same rows: outputs to 1e-12 relative in float64 and 1e-5 in float32,
// classes exactly, and the shapes of both. Each export is also saved to ONNX_OUT_DIR, where
// run.sh has Debian's python3-onnx check it (onnx.checker.check_model, full_check).
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const ort = require('onnxruntime-node');

const URL_BASE = process.env.NEUROND_URL;
const OUT_DIR = process.env.ONNX_OUT_DIR;
const ROWS = 40;

// mulberry32: the same rows on every run.
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function rows(r, n, inputs, scale = 2) {
  return Array.from({ length: n }, () => Array.from({ length: inputs }, () => (r() * 2 - 1) * scale));
}

async function call(method, p, body) {
  const res = await fetch(URL_BASE + p, {
    method,
    headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const buf = Buffer.from(await res.arrayBuffer());
  return { status: res.status, headers: res.headers, buf, json: () => JSON.parse(buf.toString()) };
}

async function ok(method, p, body, status = 200) {
  const r = await call(method, p, body);
  assert.equal(r.status, status, `${method} ${p}: ${r.buf.toString().slice(0, 300)}`);
  return r.json();
}

// Labels for a batch of x from a fixed teacher, in the form each kind expects.
function labels(kind, x, specIn) {
  const spec = { outputs: 1, ...specIn };
  const s = (row, j) => row.reduce((acc, v, i) => acc + v * Math.sin(1 + i + 3 * j), 0.3 * j - 0.1);
  const argmax = (row, k) => {
    let best = 0;
    for (let j = 1; j < k; j++) if (s(row, j) > s(row, best)) best = j;
    return best;
  };
  switch (kind) {
    case 'linear':
      return x.map((row) => (spec.outputs > 1 ? Array.from({ length: spec.outputs }, (_, j) => s(row, j)) : s(row, 0)));
    case 'mlp':
      if (spec.output_activation === 'softmax') return x.map((row) => argmax(row, spec.outputs));
      if (spec.output_activation === 'sigmoid' && spec.outputs === 1) return x.map((row) => (s(row, 0) > 0 ? 1 : 0));
      if (spec.output_activation === 'sigmoid')
        return x.map((row) => Array.from({ length: spec.outputs }, (_, j) => (s(row, j) > 0 ? 1 : 0)));
      return x.map((row) => (spec.outputs > 1 ? Array.from({ length: spec.outputs }, (_, j) => s(row, j)) : s(row, 0)));
    case 'logistic':
    case 'perceptron':
      return x.map((row) => (s(row, 0) > 0 ? 1 : 0));
    case 'graph':
      return x.map((row) => [s(row, 0)]);
    default:
      return x.map((row) => argmax(row, spec.classes));
  }
}

let seq = 0;
// Create, feed and train a model; returns its id.
async function trained(spec, seed, steps = 25, learningRate = 0.1) {
  const r = rng(seed);
  const full = { name: `onnx-${spec.kind}-${++seq}`, init: { method: 'uniform', scale: 0.5, seed }, ...spec };
  const model = await ok('POST', '/v1/models', full, 201);
  const x = rows(r, 64, spec.inputs);
  await ok('POST', `/v1/models/${model.id}/batches`, { x, y: labels(spec.kind, x, spec) }, 201);
  if (steps > 0) await ok('POST', `/v1/models/${model.id}/train`, { steps, learning_rate: learningRate });
  return model.id;
}

// Relative closeness of finite numbers (Infinity would pass the formula).
const close = (a, b, rel) => Number.isFinite(a) && Number.isFinite(b) && Math.abs(a - b) <= rel * Math.max(Math.abs(a), Math.abs(b));

// Export model `id` in `dtype`, run it on x, compare with /predict. Returns ORT's answer.
async function compare(id, name, x, dtype) {
  const pred = await ok('POST', `/v1/models/${id}/predict`, { x });
  const r = await call('GET', `/v1/models/${id}/export?format=onnx&dtype=${dtype}`);
  assert.equal(r.status, 200, r.buf.toString());
  assert.equal(r.headers.get('content-type'), 'application/octet-stream');
  assert.match(r.headers.get('content-disposition'), /^attachment; filename="onnx-[a-z0-9-]+\.onnx"$/);
  if (OUT_DIR) fs.writeFileSync(path.join(OUT_DIR, `${name}-${dtype}.onnx`), r.buf);

  const session = await ort.InferenceSession.create(r.buf);
  assert.deepEqual(session.inputNames, ['x']);
  assert.deepEqual(session.outputNames, pred.classes ? ['outputs', 'classes'] : ['outputs']);
  const flat = x.flat();
  const xt = dtype === 'float64'
    ? new ort.Tensor('float64', Float64Array.from(flat), [x.length, x[0].length])
    : new ort.Tensor('float32', Float32Array.from(flat), [x.length, x[0].length]);
  const out = await session.run({ x: xt });

  const shape = Array.isArray(pred.outputs[0]) ? [x.length, pred.outputs[0].length] : [x.length];
  assert.deepEqual(out.outputs.dims, shape, `${name} ${dtype}: outputs shape`);
  assert.equal(out.outputs.type, dtype);
  const want = pred.outputs.flat();
  const rel = dtype === 'float64' ? 1e-12 : 1e-5;
  let worst = 0;
  want.forEach((w, i) => {
    const got = out.outputs.data[i];
    assert.ok(close(got, w, rel), `${name} ${dtype}: outputs[${i}] = ${got}, /predict ${w}`);
    if (w !== got) worst = Math.max(worst, Math.abs(got - w) / Math.max(Math.abs(got), Math.abs(w)));
  });
  if (pred.classes) {
    assert.equal(out.classes.type, 'int64');
    assert.deepEqual(out.classes.dims, [x.length]);
    assert.deepEqual(Array.from(out.classes.data, Number), pred.classes, `${name} ${dtype}: classes`);
  } else {
    assert.equal(out.classes, undefined);
  }
  console.log(`# ${name} ${dtype}: ${want.length} outputs, worst relative difference ${worst.toExponential(2)}`);
  return { pred, out };
}

async function bothDtypes(spec, seed, name, steps, learningRate) {
  const id = await trained(spec, seed, steps, learningRate);
  const x = rows(rng(seed + 1000), ROWS, spec.inputs);
  for (const dtype of ['float64', 'float32']) await compare(id, name, x, dtype);
  return id;
}

const cases = [
  ['linear', { kind: 'linear', inputs: 3 }],
  ['linear_3_outputs', { kind: 'linear', inputs: 4, outputs: 3 }],
  ['logistic', { kind: 'logistic', inputs: 3 }],
  ['perceptron', { kind: 'perceptron', inputs: 3 }],
  ['softmax', { kind: 'softmax', inputs: 3, classes: 4 }],
  ['ova', { kind: 'ova', inputs: 3, classes: 3 }],
  ['ovo', { kind: 'ovo', inputs: 3, classes: 4 }],
  ['mlp_sigmoid_tanh_linear', { kind: 'mlp', inputs: 3, hidden: [{ units: 4, activation: 'sigmoid' }, { units: 3, activation: 'tanh' }], output_activation: 'linear' }],
  ['mlp_relu_linear_2_outputs', { kind: 'mlp', inputs: 3, outputs: 2, hidden: [{ units: 5, activation: 'relu' }, { units: 3, activation: 'linear' }], output_activation: 'linear' }],
  ['mlp_tanh_sigmoid', { kind: 'mlp', inputs: 2, hidden: [{ units: 4, activation: 'tanh' }], output_activation: 'sigmoid' }],
  ['mlp_sigmoid_2_outputs', { kind: 'mlp', inputs: 2, outputs: 2, hidden: [{ units: 3, activation: 'relu' }], output_activation: 'sigmoid', loss: 'l2' }],
  ['mlp_relu_sigmoid_softmax', { kind: 'mlp', inputs: 3, outputs: 3, hidden: [{ units: 4, activation: 'relu' }, { units: 3, activation: 'sigmoid' }], output_activation: 'softmax' }],
];

cases.forEach(([name, spec], i) => {
  test(name, async () => {
    await bothDtypes(spec, 11 + i, name);
  });
});

// ovo with pair rows that read one input each: z01 = x1, z02 = x2, z12 = x3. Rows with
// x1 > 0, x2 <= 0, x3 > 0 (or the reverse) give every class one vote: class 0 must win.
test('ovo_ties_go_to_the_lower_class', async () => {
  const model = await ok('POST', '/v1/models', {
    name: 'onnx-ovo-ties', kind: 'ovo', inputs: 3, classes: 3,
    parameters: { W1: [[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]] },
  }, 201);
  const x = rows(rng(5), ROWS, 3);
  let ties = 0;
  for (const dtype of ['float64', 'float32']) {
    const { pred } = await compare(model.id, 'ovo_ties', x, dtype);
    ties = x.filter((r) => (r[0] > 0) === (r[2] > 0) && (r[1] > 0) !== (r[0] > 0)).length;
    x.forEach((r, i) => {
      if ((r[0] > 0) === (r[2] > 0) && (r[1] > 0) !== (r[0] > 0)) assert.equal(pred.classes[i], 0);
    });
  }
  assert.ok(ties >= 3, `only ${ties} tied rows in the sample`);
});

// A graph model with every public op but the losses between x and the prediction.
const graphSpec = (w, v) => ({
  kind: 'graph', inputs: 2, outputs: 1,
  graph: {
    nodes: [
      { id: 'x', op: 'input', shape: [null, 2] },
      { id: 'y', op: 'input', shape: [null, 1] },
      { id: 'xb', op: 'bias', inputs: ['x'] },
      { id: 'W', op: 'param', shape: [3, 3], value: w },
      { id: 'a', op: 'matmul', inputs: ['xb', 'W'], transpose_b: true },
      { id: 'h', op: 'sigmoid', inputs: ['a'] },
      { id: 't', op: 'tanh', inputs: ['a'] },
      { id: 'r', op: 'relu', inputs: ['a'] },
      { id: 'two', op: 'const', shape: [], value: 2 },
      { id: 'm1', op: 'mul', inputs: ['h', 'two'] },
      { id: 's1', op: 'sub', inputs: ['m1', 't'] },
      { id: 'sq', op: 'square', inputs: ['r'] },
      { id: 'e', op: 'exp', inputs: ['t'] },
      { id: 'l', op: 'log', inputs: ['e'] },
      { id: 'd', op: 'div', inputs: ['s1', 'e'] },
      { id: 'mx', op: 'max', inputs: ['d', 'l'] },
      { id: 'mn', op: 'min', inputs: ['mx', 'sq'] },
      { id: 'n', op: 'neg', inputs: ['mn'] },
      { id: 'st', op: 'step', inputs: ['a'] },
      { id: 'sm', op: 'softmax', inputs: ['n'] },
      { id: 'sum1', op: 'add', inputs: ['sm', 'st'] },
      { id: 'mW', op: 'mean', inputs: ['W'] },
      { id: 'sV', op: 'sum', inputs: ['V'] },
      { id: 'k', op: 'mul', inputs: ['mW', 'sV'] },
      { id: 'sum2', op: 'add', inputs: ['sum1', 'k'] },
      { id: 'ls', op: 'log_softmax', inputs: ['t'] },
      { id: 'sum3', op: 'sub', inputs: ['sum2', 'ls'] },
      { id: 'half', op: 'const', shape: [1, 1], value: [[0.5]] },
      { id: 'sum4', op: 'mul', inputs: ['half', 'sum3'] },
      { id: 'hb', op: 'bias', inputs: ['sum4'] },
      { id: 'V', op: 'param', shape: [1, 4], value: v },
      { id: 'VT', op: 'transpose', inputs: ['V'] },
      { id: 'out', op: 'matmul', inputs: ['hb', 'VT'] },
      { id: 'L', op: 'l2_loss', inputs: ['out', 'y'], reduction: 'mean' },
    ],
    output: 'L',
  },
});

test('graph', async () => {
  // V's bias keeps every prediction away from 0, where the rounding of any two summation orders
  // differs by more than 1e-12 of the (tiny) result.
  const spec = graphSpec([[0.1, 0.5, -0.3], [-0.2, 0.4, 0.7], [0.3, -0.6, 0.2]], [[3.5, 0.3, -0.2, 0.4]]);
  await bothDtypes(spec, 77, 'graph', 10, 0.005);
});

// log_softmax where one logit leads by far: the dominant class's log-probability is about
// -exp(-gap), which log(sum exp) rounds away; the export computes log1p as neurond does.
test('graph_log_softmax_dominant', async () => {
  const model = await ok('POST', '/v1/models', {
    name: `onnx-graph-lsm-${++seq}`, kind: 'graph', inputs: 2, outputs: 3,
    graph: {
      nodes: [
        { id: 'x', op: 'input', shape: [null, 2] },
        { id: 'y', op: 'input', shape: [null, 3] },
        { id: 'xb', op: 'bias', inputs: ['x'] },
        { id: 'W', op: 'param', shape: [3, 3], value: [[30, 2, -1], [0, -3, 4], [-12, 1, 1]] },
        { id: 'a', op: 'matmul', inputs: ['xb', 'W'], transpose_b: true },
        { id: 'ls', op: 'log_softmax', inputs: ['a'] },
        { id: 'L', op: 'l2_loss', inputs: ['ls', 'y'] },
      ],
      output: 'L',
    },
  }, 201);
  const x = rows(rng(5), ROWS, 2, 3);
  for (const dtype of ['float64', 'float32']) {
    const { pred } = await compare(model.id, 'graph_log_softmax', x, dtype);
    // The rows really are dominated: some log-probability is a tiny negative number.
    assert.ok(pred.outputs.flat().some((v) => v < 0 && v > -1e-6));
  }
});

test('graph_not_exportable', async () => {
  // The prediction adds a loss of the labels: a loss has no ONNX counterpart.
  const spec = graphSpec([[0.1, 0.5, -0.3], [-0.2, 0.4, 0.7], [0.3, -0.6, 0.2]], [[0.05, 0.3, -0.2, 0.4]]);
  spec.graph.nodes = spec.graph.nodes.filter((nd) => nd.id !== 'L');
  spec.graph.nodes.push(
    { id: 'inner', op: 'l2_loss', inputs: ['out', 'y'], reduction: 'mean' },
    { id: 'pred', op: 'add', inputs: ['out', 'inner'] },
    { id: 'L', op: 'l2_loss', inputs: ['pred', 'y'], reduction: 'mean' });
  const model = await ok('POST', '/v1/models', { name: 'onnx-graph-y', ...spec }, 201);
  const r = await call('GET', `/v1/models/${model.id}/export?format=onnx`);
  assert.equal(r.status, 400);
  const e = r.json().error;
  assert.equal(e.code, 'invalid_argument');
  assert.equal(e.field, 'format');
  assert.match(e.message, /node 'inner' \(op l2_loss\)/);

  // Adding the labels themselves: the input y is at fault.
  const direct = graphSpec([[0.1, 0.5, -0.3], [-0.2, 0.4, 0.7], [0.3, -0.6, 0.2]], [[0.05, 0.3, -0.2, 0.4]]);
  direct.graph.nodes = direct.graph.nodes.filter((nd) => nd.id !== 'L');
  direct.graph.nodes.push(
    { id: 'pred', op: 'add', inputs: ['out', 'y'] },
    { id: 'L', op: 'l2_loss', inputs: ['pred', 'y'], reduction: 'mean' });
  const model2 = await ok('POST', '/v1/models', { name: 'onnx-graph-y2', ...direct }, 201);
  const r2 = await call('GET', `/v1/models/${model2.id}/export?format=onnx`);
  assert.equal(r2.status, 400);
  assert.equal(r2.json().error.field, 'format');
  assert.match(r2.json().error.message, /node 'y' \(op input\)/);
});

test('bad format and dtype', async () => {
  const model = await ok('POST', '/v1/models', { name: 'onnx-bad-query', kind: 'linear', inputs: 2 }, 201);
  for (const [q, field] of [['format=onnnx', 'format'], ['format=', 'format'], ['format=onnx&dtype=float16', 'dtype'],
    ['format=onnx&dtype=', 'dtype'], ['format=json&dtype=float32', 'dtype'], ['dtype=float64', 'dtype']]) {
    const r = await call('GET', `/v1/models/${model.id}/export?${q}`);
    assert.equal(r.status, 400, q);
    assert.equal(r.json().error.code, 'invalid_argument', q);
    assert.equal(r.json().error.field, field, q);
  }
  const missing = await call('GET', '/v1/models/999999/export?format=onnx');
  assert.equal(missing.status, 404);
});
