// The dashboard at GET /, driven in headless Chromium through playwright-core.
// Run by tests/browser/run.sh, which starts the daemons and sets:
//   NEUROND_URL       an open neurond            NEUROND_AUTH_URL  one with --token-file
//   NEUROND_TOKEN     the token it accepts       CHROMIUM          the browser binary
//   BROWSER_TMP       a scratch directory        SCREENSHOT        optional PNG path
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { chromium } from 'playwright-core';

const OPEN = process.env.NEUROND_URL;
const AUTH = process.env.NEUROND_AUTH_URL;
const TOKEN = process.env.NEUROND_TOKEN;
assert.ok(OPEN && AUTH && TOKEN, 'run through tests/browser/run.sh');

/* ---- the API, straight (to set up models and check what the page did) ---- */

async function call(base, method, path, body, token) {
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/* Points in [-1,1]² labelled 1 inside a circle: a small problem an mlp visibly learns. */
function circleBatch(n, seed) {
  let s = seed >>> 0;
  const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32) * 2 - 1;
  const x = [], y = [];
  for (let i = 0; i < n; i++) {
    const a = rnd(), b = rnd();
    x.push([a, b]);
    y.push(a * a + b * b < 0.5 ? 1 : 0);
  }
  return { x, y };
}

/* ---- browser ---- */

let context;
const pageErrors = [];

before(async () => {
  const profile = await mkdtemp(join(process.env.BROWSER_TMP || tmpdir(), 'chromium-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1280, height: 800 },
    locale: 'en-US',
    timezoneId: 'UTC',
  });
  context.setDefaultTimeout(15000);
});

after(async () => {
  if (context) await context.close();
});

async function newPage() {
  const page = await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(m.text()); });
  return page;
}

/* Poll fn() until it returns a truthy value (Playwright's own waits cover DOM conditions). */
async function eventually(fn, what, ms = 15000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const attr = (loc, name) => loc.getAttribute(name).then((v) => Number(v));

/* ---- set-up shared by the tests on the open daemon ---- */

let circle, plain, page;

test('the page and its files are served with types and validators', async () => {
  for (const [path, type] of [['/', 'text/html'], ['/app.js', 'text/javascript'], ['/style.css', 'text/css']]) {
    const res = await fetch(OPEN + path);
    assert.equal(res.status, 200, path);
    assert.ok(res.headers.get('content-type').startsWith(`${type}; charset=utf-8`), path);
    assert.equal(res.headers.get('cache-control'), 'no-cache', path);
    const etag = res.headers.get('etag');
    assert.match(etag, /^"[0-9a-f]{16}"$/, path);
    const again = await fetch(OPEN + path, { headers: { 'If-None-Match': `"x", W/${etag}` } });
    assert.equal(again.status, 304, `${path} revalidated`);
    assert.equal(again.headers.get('etag'), etag);
    const other = await fetch(OPEN + path, { headers: { 'If-None-Match': '"0000000000000000"' } });
    assert.equal(other.status, 200, `${path} with a stale ETag`);
  }
  const page = await (await fetch(`${OPEN}/`)).text();
  assert.ok(!/(src|href)="(https?:)?\/\//.test(page), 'nothing is loaded from elsewhere');
});

test('the model list shows models created over the API', async () => {
  circle = await call(OPEN, 'POST', '/v1/models', {
    name: 'circle-mlp', kind: 'mlp', inputs: 2,
    hidden: [{ units: 6, activation: 'tanh' }], output_activation: 'sigmoid',
    init: { method: 'xavier', seed: 7 }, optimizer: { method: 'adam', learning_rate: 0.05 },
  });
  await call(OPEN, 'POST', `/v1/models/${circle.id}/batches`, circleBatch(60, 1));
  await call(OPEN, 'POST', `/v1/models/${circle.id}/batches`, circleBatch(60, 2));
  plain = await call(OPEN, 'POST', '/v1/models', { kind: 'linear', inputs: 3 });
  await call(OPEN, 'POST', `/v1/models/${plain.id}/batches`,
    { x: [[1, 2, 3], [2, 1, 0], [0, 1, 1], [3, 3, 1]], y: [6, 3, 2, 7] });

  page = await newPage();
  const res = await page.goto(`${OPEN}/`);
  assert.equal(res.status(), 200);
  assert.match(res.headers()['content-type'], /^text\/html/);
  assert.ok(res.headers()['content-security-policy'], 'the page has a CSP');

  const row = page.locator(`tr[data-model-id="${circle.id}"]`);
  await row.getByRole('link', { name: 'circle-mlp' }).waitFor();
  const cells = await row.locator('td').allTextContents();
  assert.equal(cells[2], 'mlp');
  assert.equal(cells[3], '0');
  assert.equal(cells[4], '120');
  assert.equal(cells[5], '–');
  await page.getByRole('link', { name: `Model ${plain.id} (unnamed)` }).waitFor();
  await page.locator('#health[data-state="ok"]').waitFor();
});

test('a model page draws the loss curve of an async run as it trains', async () => {
  await page.getByRole('link', { name: 'circle-mlp' }).click();
  await page.waitForURL(`**/#/models/${circle.id}`);
  await page.getByRole('heading', { level: 1, name: 'circle-mlp' }).waitFor();
  await page.locator('.stream-state[data-state="live"]').waitFor();
  assert.equal(await page.locator('[data-fact="kind"]').textContent(), 'mlp');
  assert.equal(await attr(page.locator('[data-fact="step"]'), 'data-step'), 0);

  await page.getByLabel('Steps').fill('300');
  await page.getByLabel('History every').fill('1');
  await page.getByLabel('Learning rate').fill('0.05');
  await page.getByLabel('Run as a background job').check();
  await page.getByRole('button', { name: 'Start training' }).click();

  const job = page.locator('.job');
  await job.locator('.job-id', { hasText: /^Job #\d+$/ }).waitFor();
  await page.locator('.job[data-status="succeeded"]').waitFor();
  const jobId = Number(await job.getAttribute('data-job-id'));
  const apiJob = await call(OPEN, 'GET', `/v1/jobs/${jobId}`);
  assert.equal(apiJob.status, 'succeeded');
  assert.equal(apiJob.result.steps_run, 300);
  assert.match(await job.locator('.job-detail').textContent(), /stopped: max_steps · 300 steps/);

  // Every recorded step came over the event stream, and the curve holds them all.
  const chart = page.locator('.chart');
  await eventually(async () => (await attr(chart, 'data-live-events')) === 300, '300 progress events');
  await eventually(async () => (await attr(chart, 'data-points')) >= 300, '300 curve points');
  const d = await chart.locator('path.line').getAttribute('d');
  assert.ok(d.split('L').length >= 300, `the curve path has ${d.split('L').length} vertices`);
  await eventually(async () => (await attr(page.locator('[data-fact="step"]'), 'data-step')) === 300, 'step 300');
  assert.match(await page.locator('.chart-note').textContent(), /300 points, steps 0–299/);
  assert.ok(apiJob.result.loss_after < apiJob.result.loss_before, 'the run lowered the loss');

  // Two losses are on the page, each naming its step, each equal to its source in the API: the
  // model's loss now (the parameters at step 300: the run's loss_after) and the loss the last
  // history row recorded (the parameters at step 299, before its update).
  const model = await call(OPEN, 'GET', `/v1/models/${circle.id}`);
  assert.equal(model.step, 300);
  assert.equal(model.loss, apiJob.result.loss_after);
  const lossFact = page.locator('[data-fact="loss"]');
  await eventually(async () => / at step 300$/.test(await lossFact.textContent()), 'loss now at step 300');
  const nowShown = Number((await lossFact.textContent()).split(' ')[0]);
  assert.ok(Math.abs(nowShown - model.loss) <= 1e-5 * Math.abs(model.loss), `loss now ${nowShown} vs ${model.loss}`);
  const lastRow = (await call(OPEN, 'GET', `/v1/models/${circle.id}/history?after_step=298`)).history[0];
  assert.equal(lastRow.step, 299);
  const recorded = (await page.locator('.chart-note').textContent()).match(/loss recorded at step 299: (\S+) ·/);
  assert.ok(recorded, await page.locator('.chart-note').textContent());
  const recShown = Number(recorded[1]);
  assert.ok(Math.abs(recShown - lastRow.loss) <= 1e-5 * Math.abs(lastRow.loss), `recorded ${recShown} vs ${lastRow.loss}`);
  assert.ok(recShown > nowShown, 'the last update lowered the loss: the two values differ');

  // Hovering the curve reads a point.
  const box = await chart.locator('svg').boundingBox();
  await page.mouse.move(box.x + box.width * 0.5, box.y + box.height * 0.5);
  assert.match(await page.locator('#tooltip').textContent(), /^step \d+ {2}loss \d/);
});

test('history is paged and parameters are drawn as heat maps', async () => {
  const rows = page.locator('.history tbody tr');
  await eventually(async () => (await rows.count()) === 25, 'a full history page');
  assert.equal(await rows.first().locator('td').first().textContent(), '0');
  await page.locator('.history-card').getByRole('button', { name: 'Next' }).click();
  await page.locator('.history tbody tr:first-child td:first-child', { hasText: /^25$/ }).waitFor();
  await page.getByLabel('From step', { exact: true }).fill('290');
  await page.locator('.goto-form').getByRole('button', { name: 'Go' }).click();
  await page.locator('.history tbody tr:first-child td:first-child', { hasText: /^290$/ }).waitFor();
  assert.equal(await rows.count(), 10);
  assert.ok(await page.locator('.history-card').getByRole('button', { name: 'Next' }).isDisabled());

  const w1 = page.locator('canvas[data-param="W1"]');
  await w1.waitFor();
  assert.equal(await attr(w1, 'data-rows'), 6);
  assert.equal(await attr(w1, 'data-cols'), 3);
  assert.equal(await attr(page.locator('canvas[data-param="W2"]'), 'data-cols'), 7);
  await page.locator('.params-step', { hasText: 'at step 300' }).waitFor();

  // Hover shows the exact value the API has; the bias column says so.
  const params = await call(OPEN, 'GET', `/v1/models/${circle.id}/parameters`);
  await w1.scrollIntoViewIfNeeded();
  const b = await w1.boundingBox();
  await page.mouse.move(b.x + (b.width / 3) * 2.5, b.y + (b.height / 6) * 1.5);
  const tip = await page.locator('#tooltip').textContent();
  const m = /^W1\[1\]\[2\] = (\S+)$/.exec(tip);
  assert.ok(m, `tooltip: ${tip}`);
  assert.ok(Math.abs(Number(m[1]) - params.parameters.W1[1][2]) <= 1e-7 * Math.abs(params.parameters.W1[1][2]) + 1e-12);
  await page.mouse.move(b.x + 2, b.y + 2);
  assert.match(await page.locator('#tooltip').textContent(), /^W1\[0\]\[0\] = .*\(bias\)$/);
  // The keyboard reads cells too.
  await w1.focus();
  await page.keyboard.press('ArrowDown');
  await page.keyboard.press('ArrowRight');
  assert.match(await page.locator('figure:has(canvas[data-param="W1"]) output').textContent(), /^W1\[1\]\[1\] = /);

  await page.mouse.move(b.x + b.width + 400, b.y);   // no tooltip in the picture
  await w1.blur();
  if (process.env.SCREENSHOT) {
    await page.evaluate(() => window.scrollTo(0, 0));
    const cb = await page.locator('.chart svg').boundingBox();
    await page.mouse.move(cb.x + cb.width * 0.3, cb.y + cb.height * 0.6);
    await page.screenshot({ path: process.env.SCREENSHOT });
    await page.mouse.move(0, 0);
  }
});

test('a synchronous run from the form', async () => {
  await page.getByLabel('Run as a background job').uncheck();
  await page.getByLabel('Steps').fill('20');
  await page.getByRole('button', { name: 'Start training' }).click();
  await page.locator('.job[data-status="succeeded"] .job-id', { hasText: 'Synchronous run' }).waitFor();
  await eventually(async () => (await attr(page.locator('[data-fact="step"]'), 'data-step')) === 320, 'step 320');
  await eventually(async () => (await attr(page.locator('.chart'), 'data-live-events')) === 320, '320 progress events');
  assert.ok(await page.getByRole('button', { name: 'Cancel job' }).isDisabled());
});

test('an async run can be cancelled from the page', async () => {
  await page.goto(`${OPEN}/#/models/${plain.id}`);
  await page.getByRole('heading', { level: 1, name: `Model ${plain.id}` }).waitFor();
  await page.locator('.stream-state[data-state="live"]').waitFor();
  await page.getByLabel('Steps').fill('1000000000');
  await page.getByLabel('History every').fill('1000');
  await page.getByLabel('Learning rate').fill('0.001');
  await page.getByRole('button', { name: 'Start training' }).click();
  await page.locator('.job[data-status="running"]').waitFor();
  await eventually(async () => (await attr(page.locator('.chart'), 'data-live-events')) > 2, 'progress on the curve');
  assert.ok(await page.getByRole('button', { name: 'Start training' }).isDisabled(), 'one run at a time');
  await page.getByRole('button', { name: 'Cancel job' }).click();
  await page.locator('.job[data-status="cancelled"]').waitFor();
  const jobId = Number(await page.locator('.job').getAttribute('data-job-id'));
  const apiJob = await call(OPEN, 'GET', `/v1/jobs/${jobId}`);
  assert.equal(apiJob.status, 'cancelled');
  await page.locator('.job-detail', { hasText: 'stopped: cancelled' }).waitFor();
  await page.locator('.model-status[data-status="idle"]').waitFor();
  assert.equal(await attr(page.locator('[data-fact="step"]'), 'data-step'), apiJob.result.step);
  assert.ok(apiJob.result.step > 0 && apiJob.result.step < 1e9);
});

test('API errors are shown with their code and message', async () => {
  await page.goto(`${OPEN}/#/models/${circle.id}`);
  await page.locator('.stream-state[data-state="live"]').waitFor();
  await page.getByLabel('Steps').fill('-5');
  await page.getByRole('button', { name: 'Start training' }).click();
  const err = page.locator('.train-error');
  await err.waitFor();
  assert.equal(await err.getAttribute('role'), 'alert');
  assert.match(await err.textContent(), /^invalid_argument \(400\).*steps/);

  await page.goto(`${OPEN}/#/models/9999`);
  const nf = page.locator('.page-error');
  await nf.waitFor();
  assert.match(await nf.textContent(), /^not_found \(404\)/);
  assert.ok(!(await page.getByRole('button', { name: 'Start training' }).isVisible()), 'no form for a missing model');
  await page.goto(`${OPEN}/#/nowhere`);
  await page.getByRole('heading', { name: 'Not found' }).waitFor();
});

/* Two clouds in the plane, labelled by which side of x1 + x2 = 0.3 they fall on; the validation
 * rows get a few labels the line cannot fit, so the two curves part. */
function lineBatch(n, seed, flip) {
  let s = seed >>> 0;
  const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32) * 2 - 1;
  const x = [], y = [];
  for (let i = 0; i < n; i++) {
    const a = rnd() * 2, b = rnd() * 2;
    x.push([a, b]);
    const side = a + b > 0.3 ? 1 : 0;
    y.push(i < flip ? 1 - side : side);
  }
  return { x, y };
}

const sumOf = (rows) => rows.flat().reduce((a, b) => a + b, 0);

test('validation: both curves, the evaluation of each split, the rows over the decision regions', async () => {
  const m = await call(OPEN, 'POST', '/v1/models', {
    name: 'two-inputs', kind: 'logistic', inputs: 2, init: { method: 'zeros' },
    optimizer: { method: 'sgd', learning_rate: 0.5 },
  });
  await call(OPEN, 'POST', `/v1/models/${m.id}/batches`, lineBatch(50, 11, 0));
  await call(OPEN, 'POST', `/v1/models/${m.id}/batches?split=validation`, lineBatch(20, 12, 3));
  const run = await call(OPEN, 'POST', `/v1/models/${m.id}/train`, { steps: 40, history_every: 2 });
  assert.ok(Number.isFinite(run.val_loss_after));

  await page.goto(`${OPEN}/#/models/${m.id}`);
  await page.getByRole('heading', { level: 1, name: 'two-inputs' }).waitFor();
  assert.equal(await page.locator('[data-fact="validation_rows"]').textContent(), '20');

  // The validation curve beside the training curve: one vertex per recorded row.
  const chart = page.locator('.chart');
  await chart.locator('path.val-line').waitFor();
  assert.equal(await attr(chart.locator('path.val-line'), 'data-vertices'), 21);
  assert.ok(await page.locator('.chart-legend').isVisible());
  assert.match(await page.locator('.chart-note').textContent(), /validation loss lowest/);

  // /evaluate on each split, the confusion matrix as a table equal to the API's.
  for (const split of ['train', 'validation']) {
    const ev = await call(OPEN, 'POST', `/v1/models/${m.id}/evaluate`, { split });
    const table = page.locator(`.evals table.confusion[data-split="${split}"]`);
    await table.waitFor();
    const cells = await table.locator('tbody tr').evaluateAll((trs) =>
      trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => Number(td.textContent))));
    assert.deepEqual(cells, ev.metrics.confusion_matrix, split);
    assert.equal(sumOf(cells), split === 'train' ? 50 : 20);
    const line = await page.locator(`.eval[data-split="${split}"] .metrics-line`).textContent();
    assert.match(line, /accuracy .* roc_auc .* log_loss/, split);
  }

  // The stored rows (circles for training, squares for validation) over the regions, with the
  // boundary and its unit normal, equal to GET /boundary.
  const plot = page.locator('.plot svg');
  await plot.waitFor();
  assert.equal(await attr(plot, 'data-points'), 70);
  assert.equal(await page.locator('.plot circle.pt.train').count(), 50);
  assert.equal(await page.locator('.plot rect.pt.validation').count(), 20);
  assert.equal(await attr(plot, 'data-regions'), 1600);
  const classes = new Set(await page.locator('.plot .regions rect').evaluateAll((rs) => rs.map((r) => r.dataset.class)));
  assert.deepEqual([...classes].sort(), ['0', '1'], 'both classes have a region');
  await page.locator('.plot line.boundary').waitFor();
  const shownNormal = async () => (await page.locator('.plot .normal').getAttribute('data-unit-normal')).split(',').map(Number);
  const b = await call(OPEN, 'GET', `/v1/models/${m.id}/boundary`);
  assert.deepEqual(await shownNormal(), b.unit_normal);

  // Live: an async run from the page moves the boundary; the plot follows it.
  await page.getByLabel('Steps').fill('200');
  await page.getByLabel('History every').fill('5');
  await page.getByLabel('Learning rate').fill('2');
  await page.getByLabel('Run as a background job').check();
  await page.getByRole('button', { name: 'Start training' }).click();
  await page.locator('.job[data-status="succeeded"]').waitFor();
  const after = await call(OPEN, 'GET', `/v1/models/${m.id}/boundary`);
  assert.notDeepEqual(after.unit_normal, b.unit_normal, 'the run moved the boundary');
  await eventually(async () => JSON.stringify(await shownNormal()) === JSON.stringify(after.unit_normal),
    'the plot shows the boundary after the run');
  // The validation curve followed the run: one vertex per recorded row, as history has them.
  const recorded = (await call(OPEN, 'GET', `/v1/models/${m.id}/history?max_points=100000`)).history
    .filter((h) => typeof h.val_loss === 'number').length;
  assert.equal(recorded, 21 + 41);   // steps 40, 45, …, 235 and the last, 239
  await eventually(async () => (await attr(chart.locator('path.val-line'), 'data-vertices')) === recorded,
    `${recorded} validation points`);
});

test('a three-class model gets its regions and a 3×3 confusion matrix, and no boundary line', async () => {
  const m = await call(OPEN, 'POST', '/v1/models', {
    name: 'three-classes', kind: 'softmax', inputs: 2, classes: 3,
    optimizer: { method: 'adam', learning_rate: 0.1 },
  });
  const x = [], y = [];
  for (let i = 0; i < 30; i++) {
    const c = i % 3, a = (i * 0.37) % 1;
    x.push([c === 1 ? 2 + a : -a, c === 2 ? 2 + a : a]);
    y.push(c);
  }
  await call(OPEN, 'POST', `/v1/models/${m.id}/batches`, { x, y });
  await call(OPEN, 'POST', `/v1/models/${m.id}/train`, { steps: 100 });
  await page.goto(`${OPEN}/#/models/${m.id}`);
  await page.getByRole('heading', { level: 1, name: 'three-classes' }).waitFor();
  const table = page.locator('.evals table.confusion[data-split="train"]');
  await table.waitFor();
  assert.equal(await attr(table, 'data-classes'), 3);
  assert.equal(await table.locator('tbody td').count(), 9);
  assert.equal(await page.locator('.evals table.confusion[data-split="validation"]').count(), 0);
  const plot = page.locator('.plot svg');
  await plot.waitFor();
  assert.equal(await attr(plot, 'data-points'), 30);
  const classes = new Set(await page.locator('.plot .regions rect').evaluateAll((rs) => rs.map((r) => r.dataset.class)));
  assert.equal(classes.size, 3, 'every class has a region');
  assert.equal(await page.locator('.plot line.boundary').count(), 0);
  // No validation rows: no validation curve.
  assert.equal(await page.locator('.chart path.val-line').count(), 0);
});

test('with tokens the page asks once for a token, then every /v1 call carries it', async () => {
  const m = await call(AUTH, 'POST', '/v1/models', { name: 'guarded', kind: 'logistic', inputs: 2 }, TOKEN);
  await call(AUTH, 'POST', `/v1/models/${m.id}/batches`, { x: [[0, 0], [0, 1], [1, 0], [1, 1]], y: [0, 0, 0, 1] }, TOKEN);

  const p = await newPage();
  const v1 = [];
  p.on('request', (r) => { if (new URL(r.url()).pathname.startsWith('/v1/')) v1.push(r); });
  await p.goto(`${AUTH}/`);
  const dialog = p.getByRole('dialog', { name: 'Token required' });
  await dialog.waitFor();
  assert.equal(await p.locator('tr[data-model-id]').count(), 0);

  await dialog.getByLabel('API token').fill('not-the-token');
  await dialog.getByRole('button', { name: 'Use token' }).click();
  await dialog.locator('#auth-why', { hasText: 'invalid token' }).waitFor();
  await dialog.getByLabel('API token').fill(TOKEN);
  const asked = v1.length;
  await dialog.getByRole('button', { name: 'Use token' }).click();
  await p.getByRole('link', { name: 'guarded' }).waitFor();
  assert.ok(!(await dialog.isVisible()));
  assert.equal(await p.evaluate(() => sessionStorage.getItem('neurond.token')), TOKEN);

  // A run with live events: the stream is read with fetch() and the Authorization header.
  await p.getByRole('link', { name: 'guarded' }).click();
  await p.locator('.stream-state[data-state="live"]').waitFor();
  await p.getByLabel('Steps').fill('100');
  await p.getByRole('button', { name: 'Start training' }).click();
  await p.locator('.job[data-status="succeeded"]').waitFor();
  await eventually(async () => (await attr(p.locator('.chart'), 'data-live-events')) === 100, '100 progress events');
  await eventually(async () => (await attr(p.locator('.chart'), 'data-points')) === 100, '100 curve points');

  // Reloading keeps the token for this tab: no second question.
  await p.reload();
  await p.getByRole('heading', { level: 1, name: 'guarded' }).waitFor();
  await p.locator('[data-fact="step"][data-step="100"]').waitFor();
  assert.ok(!(await dialog.isVisible()));

  // The ONNX download carries the token too, and saves the bytes the API exports.
  const [download] = await Promise.all([
    p.waitForEvent('download'),
    p.getByRole('button', { name: 'Download ONNX' }).click(),
  ]);
  assert.equal(download.suggestedFilename(), 'guarded.onnx');
  const saved = await readFile(await download.path());
  const res = await fetch(`${AUTH}/v1/models/${m.id}/export?format=onnx`, { headers: { Authorization: `Bearer ${TOKEN}` } });
  assert.equal(res.status, 200);
  assert.ok(saved.length > 100, `${saved.length} bytes`);
  assert.ok(saved.equals(Buffer.from(await res.arrayBuffer())), 'the download is the export');

  // A fresh tab straight on a model page: five requests meet a 401 at once, one question.
  const p2 = await newPage();
  await p2.addInitScript(() => {
    window.tokenQuestions = 0;
    const show = HTMLDialogElement.prototype.showModal;
    HTMLDialogElement.prototype.showModal = function () { window.tokenQuestions++; return show.call(this); };
  });
  await p2.goto(`${AUTH}/#/models/${m.id}`);
  const dialog2 = p2.getByRole('dialog', { name: 'Token required' });
  await dialog2.getByLabel('API token').fill(TOKEN);
  await dialog2.getByRole('button', { name: 'Use token' }).click();
  await p2.locator('.stream-state[data-state="live"]').waitFor();
  await eventually(async () => (await attr(p2.locator('.chart'), 'data-points')) === 100, 'the curve from history');
  await p2.locator('canvas[data-param="W1"]').waitFor();
  await p2.locator('.history tbody tr').first().waitFor();
  assert.equal(await p2.evaluate(() => window.tokenQuestions), 1);
  await p2.close();

  const after = v1.slice(asked);
  assert.ok(after.length >= 8, `${after.length} /v1 requests after the token`);
  for (const r of after) {
    assert.equal(r.headers().authorization, `Bearer ${TOKEN}`, `${r.method()} ${r.url()}`);
  }
  assert.ok(after.some((r) => r.url().endsWith(`/v1/models/${m.id}/events`)), 'the event stream was authorized');
  await p.close();
});

test('the page logged no script errors', () => {
  // 401s and the deliberate 4xx answers are logged by Chromium as failed loads; scripts must not throw.
  const real = pageErrors.filter((e) => !/Failed to load resource/.test(e));
  assert.deepEqual(real, []);
});
