/* neurond dashboard: models, live loss curves, history, parameter heat maps, training runs.
 *
 * Plain browser JavaScript, no dependencies; served from the binary at /app.js. Views are hash
 * routes: #/ lists the models, #/models/{id} shows one. Every /v1 call goes through api(), which
 * adds the bearer token (when one was given) and, on a 401, asks for one with the form in
 * index.html. The event stream is read with fetch() and a stream reader rather than EventSource,
 * because EventSource cannot send an Authorization header.
 */
'use strict';

(() => {
  const TOKEN_KEY = 'neurond.token';
  const MODELS_PAGE = 25;
  const HISTORY_PAGE = 25;
  const CURVE_FETCH_POINTS = 2000;   // ?max_points= for the curve's history
  const CURVE_MAX_POINTS = 4000;     // thin the live curve beyond this
  const JOB_POLL_MS = 500;
  const LIST_POLL_MS = 5000;
  const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);

  /* ---- formatting ------------------------------------------------------------------------ */

  const intFormat = new Intl.NumberFormat();
  const dateFormat = new Intl.DateTimeFormat(undefined, {
    year: 'numeric', month: 'short', day: 'numeric',
    hour: '2-digit', minute: '2-digit', second: '2-digit',
  });

  function fmtInt(n) {
    return n === null || n === undefined ? '–' : intFormat.format(n);
  }

  /* A float with `digits` significant digits: 0.0123457, 1.2346e-7, 12345.7. */
  function fmtNum(x, digits = 6) {
    if (x === null || x === undefined) return '–';
    if (!Number.isFinite(x)) return String(x);
    if (x === 0) return '0';
    const a = Math.abs(x);
    if (a >= 1e7 || a < 1e-4) return x.toExponential(digits - 1).replace(/\.?0+e/, 'e');
    return String(Number(x.toPrecision(digits)));
  }

  function fmtTime(iso) {
    if (!iso) return '–';
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? iso : dateFormat.format(d);
  }

  function fmtMs(ms) {
    if (ms === null || ms === undefined) return '–';
    if (ms < 1000) return `${fmtNum(ms, 3)} ms`;
    if (ms < 60000) return `${fmtNum(ms / 1000, 3)} s`;
    return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
  }

  /* ---- small DOM helpers ------------------------------------------------------------------ */

  const $ = (sel, root = document) => root.querySelector(sel);

  function el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'text') e.textContent = v;
      else if (k === 'class') e.className = v;
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    e.append(...children);
    return e;
  }

  const SVG_NS = 'http://www.w3.org/2000/svg';
  function svgEl(tag, attrs = {}, text) {
    const e = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function fromTemplate(id) {
    return document.getElementById(id).content.firstElementChild.cloneNode(true);
  }

  function sleep(ms, signal) {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      if (signal) signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
    });
  }

  const tooltip = document.getElementById('tooltip');
  function showTooltip(text, clientX, clientY) {
    tooltip.textContent = text;
    tooltip.hidden = false;
    const pad = 14;
    const w = tooltip.offsetWidth, h = tooltip.offsetHeight;
    let x = clientX + pad, y = clientY + pad;
    if (x + w > window.innerWidth - 4) x = clientX - pad - w;
    if (y + h > window.innerHeight - 4) y = clientY - pad - h;
    tooltip.style.left = `${Math.max(4, x)}px`;
    tooltip.style.top = `${Math.max(4, y)}px`;
  }
  function hideTooltip() { tooltip.hidden = true; }

  /* ---- errors ----------------------------------------------------------------------------- */

  class ApiError extends Error {
    constructor(status, code, message, field) {
      super(message);
      this.status = status;
      this.code = code;
      this.field = field;
    }
  }

  async function errorFrom(res) {
    let code = `http_${res.status}`, message = res.statusText || `HTTP ${res.status}`, field;
    try {
      const body = await res.json();
      if (body && body.error) {
        code = body.error.code || code;
        message = body.error.message || message;
        field = body.error.field;
      }
    } catch (_) { /* not JSON: keep the status line */ }
    return new ApiError(res.status, code, message, field);
  }

  /* Show `err` (an ApiError or any Error) in an error box; null hides the box. */
  function showError(box, err) {
    if (!box) return;
    if (!err) {
      box.hidden = true;
      box.replaceChildren();
      return;
    }
    const label = err instanceof ApiError ? `${err.code}${err.status ? ` (${err.status})` : ''}` : 'error';
    const text = err.message + (err.field ? ` — field: ${err.field}` : '');
    box.replaceChildren(el('strong', { text: label }), document.createTextNode(text));
    box.hidden = false;
  }

  const isAbort = (e) => e && e.name === 'AbortError';

  /* ---- the token ---------------------------------------------------------------------------- */

  let token = sessionStorage.getItem(TOKEN_KEY) || '';
  let tokenPrompt = null;     // the one pending request for a token, shared by every caller
  let tokenDeclined = false;  // the user cancelled: do not ask again until they choose to

  const authDialog = document.getElementById('auth-dialog');
  const authForm = document.getElementById('auth-form');
  const authInput = document.getElementById('auth-token');
  const authWhy = document.getElementById('auth-why');
  const forgetButton = document.getElementById('forget-token');

  function setToken(t) {
    token = t;
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    else sessionStorage.removeItem(TOKEN_KEY);
    updateTokenButton();
  }

  function updateTokenButton() {
    forgetButton.hidden = !token && !tokenDeclined;
    forgetButton.textContent = token ? 'Forget token' : 'Enter token';
  }

  /* Resolves once the user has entered a token; rejects with `err` when they cancel. */
  function askToken(err) {
    if (tokenDeclined) return Promise.reject(err);
    if (tokenPrompt) return tokenPrompt;
    tokenPrompt = new Promise((resolve, reject) => {
      authWhy.textContent = token ? `The server refused the token: ${err.message}.` : '';
      authWhy.hidden = !token;
      authInput.value = '';
      authInput.removeAttribute('aria-invalid');
      const finish = (ok) => {
        authForm.removeEventListener('submit', onSubmit);
        document.getElementById('auth-cancel').removeEventListener('click', onCancel);
        authDialog.removeEventListener('cancel', onCancel);
        if (authDialog.open) authDialog.close();
        tokenPrompt = null;
        if (ok) resolve();
        else {
          tokenDeclined = true;
          updateTokenButton();
          reject(err);
        }
      };
      const onSubmit = (e) => {
        e.preventDefault();
        const t = authInput.value.trim();
        if (!t) {
          authInput.setAttribute('aria-invalid', 'true');
          authInput.focus();
          return;
        }
        setToken(t);
        finish(true);
      };
      const onCancel = (e) => { e.preventDefault(); finish(false); };
      authForm.addEventListener('submit', onSubmit);
      document.getElementById('auth-cancel').addEventListener('click', onCancel);
      authDialog.addEventListener('cancel', onCancel);
      authDialog.showModal();
      authInput.focus();
    });
    return tokenPrompt;
  }

  forgetButton.addEventListener('click', () => {
    tokenDeclined = false;
    setToken('');
    route();   // a fresh view asks for a token again when the server wants one
  });

  /* fetch() for /v1 paths: adds the token, asks for one on a 401 and retries. */
  async function authorizedFetch(path, init = {}) {
    for (;;) {
      const used = token;
      const headers = Object.assign({}, init.headers);
      if (used) headers.Authorization = `Bearer ${used}`;
      let res;
      try {
        res = await fetch(path, Object.assign({}, init, { headers, cache: 'no-store' }));
      } catch (e) {
        if (isAbort(e)) throw e;
        throw new ApiError(0, 'network', `cannot reach the server (${e.message})`);
      }
      if (res.status !== 401) return res;
      const err = await errorFrom(res);
      if (token !== used) continue;          // another request already got a new token
      await askToken(err);
    }
  }

  /* One API call: JSON in, JSON out; throws ApiError with the server's code and message. */
  async function api(path, { method = 'GET', body, signal } = {}) {
    const init = { method, signal, headers: { Accept: 'application/json' } };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers['Content-Type'] = 'application/json';
    }
    const res = await authorizedFetch(path, init);
    if (!res.ok) throw await errorFrom(res);
    const text = await res.text();
    return text ? JSON.parse(text) : null;
  }

  /* ---- Server-Sent Events over fetch() ------------------------------------------------------ */

  /* An incremental parser of the text/event-stream format (WHATWG HTML, "Server-sent events"):
   * push() decoded text as it arrives; `dispatch` gets {type, data, id} per event and
   * {retry: ms} for a retry field. Comment lines (": …") are ignored. */
  function sseParser(dispatch) {
    let buf = '';
    let started = false;
    let type = '';
    let data = [];
    let lastId = '';
    const line = (l) => {
      if (l === '') {
        if (data.length > 0) dispatch({ type: type || 'message', data: data.join('\n'), id: lastId });
        type = '';
        data = [];
        return;
      }
      if (l[0] === ':') return;
      const colon = l.indexOf(':');
      const field = colon < 0 ? l : l.slice(0, colon);
      let value = colon < 0 ? '' : l.slice(colon + 1);
      if (value[0] === ' ') value = value.slice(1);
      if (field === 'event') type = value;
      else if (field === 'data') data.push(value);
      else if (field === 'id') { if (!value.includes('\0')) lastId = value; }
      else if (field === 'retry') { if (/^\d+$/.test(value)) dispatch({ retry: Number(value) }); }
    };
    return {
      push(text) {
        if (!started && text.length > 0) {
          started = true;
          if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
        }
        buf += text;
        let start = 0;
        const eol = /[\r\n]/g;
        for (;;) {
          eol.lastIndex = start;
          const m = eol.exec(buf);
          if (!m) break;
          let next = m.index + 1;
          if (buf[m.index] === '\r') {
            if (next === buf.length) break;  // a CR at the end may be half of a CRLF
            if (buf[next] === '\n') next++;
          }
          line(buf.slice(start, m.index));
          start = next;
        }
        buf = buf.slice(start);
      },
    };
  }

  /*
   * Follow the event stream at `path` until `signal` aborts, reconnecting after the server's
   * retry delay (2 s by default) when it drops. Callbacks: onState('connecting'|'live'|'offline',
   * err?), onOpen() each time the stream is (re)established, onEvent({type, data, id}).
   */
  function followEvents(path, { signal, onState, onOpen, onEvent }) {
    let retry = 2000;
    const readOnce = async () => {
      const res = await authorizedFetch(path, { signal, headers: { Accept: 'text/event-stream' } });
      if (!res.ok) throw await errorFrom(res);
      const type = res.headers.get('Content-Type') || '';
      if (!type.startsWith('text/event-stream'))
        throw new ApiError(res.status, 'bad_stream', `expected text/event-stream, got ${type || 'nothing'}`);
      onState('live');
      onOpen();
      const parser = sseParser((ev) => {
        if (ev.retry !== undefined) retry = ev.retry;
        else onEvent(ev);
      });
      const reader = res.body.getReader();
      const decoder = new TextDecoder('utf-8');
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          parser.push(decoder.decode(value, { stream: true }));
        }
      } finally {
        reader.releaseLock();
      }
    };
    (async () => {
      while (!signal.aborted) {
        onState('connecting');
        let err = null;
        try {
          await readOnce();
        } catch (e) {
          if (isAbort(e) || signal.aborted) return;
          err = e;
        }
        if (signal.aborted) return;
        onState('offline', err);
        // A missing model or a refused token will not get better by retrying.
        if (err instanceof ApiError && (err.status === 401 || err.status === 404)) return;
        await sleep(retry, signal);
      }
    })();
  }

  /* ---- header: server health ------------------------------------------------------------------ */

  const healthEl = document.getElementById('health');
  async function checkHealth() {
    try {
      const res = await fetch('/healthz', { cache: 'no-store' });
      const h = await res.json();
      healthEl.textContent = `${h.status} · v${h.version}`;
      healthEl.dataset.state = h.status === 'ok' ? 'ok' : 'bad';
      healthEl.title = `GET /healthz: status ${h.status}, database ${h.db}`;
    } catch (_) {
      healthEl.textContent = 'unreachable';
      healthEl.dataset.state = 'bad';
    }
  }

  /* ---- routing --------------------------------------------------------------------------------- */

  const view = document.getElementById('view');
  let viewControl = null;
  let firstRoute = true;

  function mount(node) {
    hideTooltip();
    view.replaceChildren(node);
    if (!firstRoute) {
      const h1 = $('h1', node);
      if (h1) {
        h1.tabIndex = -1;
        h1.focus({ preventScroll: true });
      }
      window.scrollTo(0, 0);
    }
    firstRoute = false;
  }

  function route() {
    if (viewControl) viewControl.abort();
    viewControl = new AbortController();
    const signal = viewControl.signal;
    const hash = location.hash || '#/';
    const m = /^#\/models\/(\d+)\/?$/.exec(hash);
    const ctl = viewControl;
    if (m) modelView(Number(m[1]), signal, () => ctl.abort());
    else if (hash === '#/' || hash === '#') listView(signal);
    else {
      const node = el('section', {}, el('h1', { text: 'Not found' }),
        el('p', {}, `Nothing at ${hash}. `, el('a', { href: '#/', text: 'All models' })));
      mount(node);
      document.title = 'Not found · neurond';
    }
  }

  /* ---- the model list ---------------------------------------------------------------------------- */

  function listView(signal) {
    const node = fromTemplate('tpl-list');
    mount(node);
    document.title = 'Models · neurond';
    const tbody = $('tbody', node), errBox = $('.error', node), empty = $('.empty', node);
    const prev = $('.prev', node), next = $('.next', node);
    const page = { after: 0, back: [], next: null };

    const row = (m) => {
      const name = m.name
        ? el('a', { href: `#/models/${m.id}`, text: m.name })
        : el('a', { href: `#/models/${m.id}`, 'aria-label': `Model ${m.id} (unnamed)` }, el('em', { text: 'unnamed' }));
      return el('tr', { 'data-model-id': m.id },
        el('td', { class: 'num', text: m.id }),
        el('td', {}, name),
        el('td', { text: m.kind }),
        el('td', { class: 'num', text: fmtInt(m.step) }),
        el('td', { class: 'num', text: fmtInt(m.rows) }),
        el('td', { class: 'num', text: fmtNum(m.loss), title: m.loss === null ? 'not trained yet' : String(m.loss) }),
        el('td', {}, el('span', { class: 'badge', 'data-status': m.status, text: m.status })),
        el('td', { text: fmtTime(m.updated_at), title: m.updated_at }));
    };

    async function load() {
      try {
        const r = await api(`/v1/models?limit=${MODELS_PAGE}&after=${page.after}`, { signal });
        const focused = document.activeElement && tbody.contains(document.activeElement)
          ? document.activeElement.getAttribute('href') : null;
        tbody.replaceChildren(...r.models.map(row));
        if (focused) {
          const again = tbody.querySelector(`a[href="${focused}"]`);
          if (again) again.focus();
        }
        page.next = r.next;
        empty.hidden = r.models.length > 0 || page.after > 0;
        next.disabled = r.next === null;
        prev.disabled = page.back.length === 0;
        showError(errBox, null);
      } catch (e) {
        if (!isAbort(e)) showError(errBox, e);
      }
    }

    $('.refresh', node).addEventListener('click', load);
    next.addEventListener('click', () => {
      if (page.next === null) return;
      page.back.push(page.after);
      page.after = page.next;
      load();
    });
    prev.addEventListener('click', () => {
      if (page.back.length === 0) return;
      page.after = page.back.pop();
      load();
    });
    load();
    (async () => {
      while (!signal.aborted) {
        await sleep(LIST_POLL_MS, signal);
        if (!signal.aborted && !document.hidden && !tokenPrompt) await load();
      }
    })();
  }

  /* ---- the model page ------------------------------------------------------------------------------ */

  function modelView(id, signal, stop) {
    const node = fromTemplate('tpl-model');
    mount(node);
    document.title = `Model ${id} · neurond`;
    const q = (sel) => $(sel, node);
    const pageError = q('.page-error');
    const streamState = q('.stream-state');

    const st = {
      model: null,
      liveStep: 0,        // the step the event stream has shown the model reach
      points: [],         // [{step, loss}] ascending: the loss curve
      pending: null,      // events buffered while the curve's history loads
      liveEvents: 0,      // progress events received (data-live-events on the chart)
      job: null,
      logScale: false,
      paramsKey: '',      // the parameters last drawn
      cellSel: {},        // keyboard-selected cell per matrix
    };
    let streamOpened = null;
    let streamReady = new Promise((r) => { streamOpened = r; });

    /* -- the model's facts -- */

    function renderModel() {
      const m = st.model;
      const name = m.name || `Model ${m.id}`;
      document.title = `${name} · neurond`;
      q('.model-title').textContent = name;
      q('.crumb-name').textContent = name;
      const badge = q('.model-status');
      badge.textContent = m.status;
      badge.dataset.status = m.status;
      const spec = m.spec || {};
      const opt = spec.optimizer || {};
      const fact = (k, v, title) => {
        const dd = q(`[data-fact="${k}"]`);
        dd.textContent = v;
        if (title) dd.title = title;
      };
      fact('kind', m.kind);
      renderStep();
      // The model's loss is that of its parameters now, at its step N (the last run's
      // loss_after); the curve's last point is a history row, the loss at step N-1 before that
      // update. Both name their step, so they never seem to disagree.
      fact('loss', m.loss === null ? '–' : `${fmtNum(m.loss)} at step ${fmtInt(m.step)}`,
        m.loss === null ? 'no loss yet: not trained since it was created, restored or set'
          : `${m.loss}: the loss of the parameters at step ${m.step}, after the last run`);
      fact('rows', fmtInt(m.rows));
      fact('validation_rows', fmtInt(m.validation_rows ?? 0));
      const hidden = Array.isArray(spec.hidden) && spec.hidden.length
        ? ` → ${spec.hidden.map((h) => `${h.units} ${h.activation || ''}`.trim()).join(' → ')}` : '';
      const out = spec.classes ? `${spec.classes} classes` : `${spec.outputs ?? 1} out`;
      fact('shape', spec.inputs !== undefined ? `${spec.inputs} in${hidden} → ${out}` : '–');
      fact('optimizer', opt.method ? `${opt.method}, η ${fmtNum(opt.learning_rate)}` : '–');
      fact('updated', fmtTime(m.updated_at), m.updated_at);
      const lr = q('input[name="learning_rate"]');
      if (opt.learning_rate !== undefined) lr.placeholder = `optimizer's: ${fmtNum(opt.learning_rate)}`;
    }

    function renderStep() {
      const m = st.model;
      const step = m && m.status === 'idle' ? m.step : Math.max(m ? m.step : 0, st.liveStep);
      const dd = q('[data-fact="step"]');
      dd.textContent = fmtInt(step);
      dd.dataset.step = step;
    }

    /* The ONNX export as a file download. Fetched (not a plain link) so the bearer token goes
     * with it; the file name is the one the server's Content-Disposition gives. */
    const onnxButton = q('.download-onnx');
    onnxButton.addEventListener('click', async () => {
      onnxButton.disabled = true;
      try {
        const res = await authorizedFetch(`/v1/models/${id}/export?format=onnx`, { signal });
        if (!res.ok) throw await errorFrom(res);
        const disposition = res.headers.get('Content-Disposition') || '';
        const match = /filename="([^"]+)"/.exec(disposition);
        const url = URL.createObjectURL(await res.blob());
        const a = document.createElement('a');
        a.href = url;
        a.download = match ? match[1] : `model-${id}.onnx`;
        document.body.appendChild(a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(url), 10000);
        showError(pageError, null);
      } catch (e) {
        if (!isAbort(e)) showError(pageError, e);
      } finally {
        onnxButton.disabled = false;
      }
    });

    async function loadModel() {
      try {
        st.model = await api(`/v1/models/${id}`, { signal });
        if (st.model.status === 'idle') st.liveStep = st.model.step;
        renderModel();
        showError(pageError, null);
        return true;
      } catch (e) {
        if (isAbort(e)) return false;
        showError(pageError, e);
        if (e instanceof ApiError && e.status === 404) {
          q('.model-title').textContent = `Model ${id}`;
          q('.crumb-name').textContent = `Model ${id}`;
          for (const part of node.querySelectorAll('.facts, .grid, .card, .stream-state')) part.hidden = true;
          stop();
        }
        return false;
      }
    }

    /* -- the loss curve -- */

    const chart = q('.chart');
    const note = q('.chart-note');
    const logBox = q('.logscale');
    let drawQueued = false;

    function addPoint(step, loss) {
      const pts = st.points;
      // A step at or before the last one means history was rewound (restore): drop what follows.
      while (pts.length > 0 && pts[pts.length - 1].step >= step) pts.pop();
      pts.push({ step, loss });
      if (pts.length > CURVE_MAX_POINTS) {
        st.points = pts.filter((p, i) => i === 0 || i === pts.length - 1 || i % 2 === 0);
      }
    }

    function queueDraw() {
      if (drawQueued) return;
      drawQueued = true;
      requestAnimationFrame(() => {
        drawQueued = false;
        drawCurve();
      });
    }

    /* The curve from history, then the events that arrived meanwhile. Overlapping loads keep
     * buffering; only the latest applies (events replayed over history it already has are
     * harmless: addPoint() rewinds to the event's step). */
    let curveLoads = 0;
    async function loadCurve() {
      const mine = ++curveLoads;
      if (!st.pending) st.pending = [];
      let rows = null;
      try {
        rows = (await api(`/v1/models/${id}/history?max_points=${CURVE_FETCH_POINTS}`, { signal })).history;
      } catch (e) {
        if (isAbort(e)) return;
        showError(pageError, e);
      }
      if (mine !== curveLoads) return;
      const pending = st.pending;
      st.pending = null;
      if (rows) st.points = rows.map((h) => ({ step: h.step, loss: h.loss, val: h.val_loss }));
      for (const p of pending) addPoint(p.step, p.loss);
      queueDraw();
    }

    function niceStep(span, count) {
      const raw = span / Math.max(1, count);
      const mag = 10 ** Math.floor(Math.log10(raw));
      const f = raw / mag;
      return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
    }
    function linearTicks(lo, hi, count) {
      const s = niceStep(hi - lo, count);
      const out = [];
      for (let v = Math.ceil(lo / s) * s; v <= hi + s * 1e-9; v += s) out.push(Math.abs(v) < s * 1e-9 ? 0 : v);
      return out;
    }
    function logTicks(lo, hi) {
      const a = Math.floor(Math.log10(lo)), b = Math.ceil(Math.log10(hi));
      const mults = b - a <= 2 ? [1, 2, 5] : [1];
      const every = Math.max(1, Math.ceil((b - a) / 6));
      const out = [];
      for (let e = a; e <= b; e += every)
        for (const m of mults) {
          const v = m * 10 ** e;
          if (v >= lo * 0.999 && v <= hi * 1.001) out.push(v);
        }
      return out;
    }

    /* One <svg>, redrawn in place; the hover handlers read the geometry of the last drawing. */
    const svg = svgEl('svg', { role: 'img' });
    chart.replaceChildren(svg);
    let curveGeom = null;   // {pts, px, py, x0, x1, W, m, cross, marker}
    svg.addEventListener('pointermove', (e) => {
      const g = curveGeom;
      if (!g) return;
      const box = svg.getBoundingClientRect();
      const sx = ((e.clientX - box.left) / box.width) * g.W;
      const step = g.x0 + ((sx - g.m.l) / (g.W - g.m.l - g.m.r)) * (g.x1 - g.x0);
      const pts = g.pts;
      let lo = 0, hi = pts.length - 1;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (pts[mid].step < step) lo = mid + 1; else hi = mid;
      }
      if (lo > 0 && Math.abs(pts[lo - 1].step - step) < Math.abs(pts[lo].step - step)) lo--;
      const p = pts[lo];
      const x = g.px(p.step), y = g.py(p.loss);
      g.cross.setAttribute('x1', x); g.cross.setAttribute('x2', x); g.cross.setAttribute('visibility', 'visible');
      g.marker.setAttribute('cx', x); g.marker.setAttribute('cy', y); g.marker.setAttribute('visibility', 'visible');
      showTooltip(`step ${fmtInt(p.step)}  loss ${fmtNum(p.loss, 8)}`, e.clientX, e.clientY);
    });
    svg.addEventListener('pointerleave', () => {
      if (curveGeom) {
        curveGeom.cross.setAttribute('visibility', 'hidden');
        curveGeom.marker.setAttribute('visibility', 'hidden');
      }
      hideTooltip();
    });

    function drawCurve() {
      const pts = st.points.filter((p) => p.loss !== null && Number.isFinite(p.loss));
      // The validation curve: rows recorded while the model had validation rows (from history;
      // progress events carry the training loss only, so it catches up when a run ends).
      const vpts = pts.filter((p) => typeof p.val === 'number' && Number.isFinite(p.val));
      q('.chart-legend').hidden = vpts.length === 0;
      const canLog = pts.length > 0 && pts.every((p) => p.loss > 0) && vpts.every((p) => p.val > 0);
      logBox.disabled = !canLog;
      logBox.title = canLog ? '' : 'A log scale needs every loss above zero';
      const log = st.logScale && canLog;
      const W = Math.max(240, Math.round(chart.clientWidth || 600)), H = 280;
      const m = { l: 66, r: 14, t: 12, b: 36 };
      svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
      svg.setAttribute('aria-label', pts.length
        ? `Loss by step: ${pts.length} points from step ${pts[0].step} to ${pts[pts.length - 1].step}, loss recorded at step ${pts[pts.length - 1].step}: ${fmtNum(pts[pts.length - 1].loss)}`
        : 'Loss by step: no points yet');
      svg.replaceChildren();
      curveGeom = null;
      chart.dataset.points = String(pts.length);
      chart.dataset.liveEvents = String(st.liveEvents);
      if (pts.length === 0) {
        svg.append(svgEl('text', { class: 'placeholder', x: W / 2, y: H / 2, 'text-anchor': 'middle' },
          'No history yet: start a training run.'));
        note.textContent = '';
        return;
      }
      let x0 = pts[0].step, x1 = pts[pts.length - 1].step;
      if (x0 === x1) { x0 -= 1; x1 += 1; }
      let y0 = Infinity, y1 = -Infinity;
      for (const p of pts) { if (p.loss < y0) y0 = p.loss; if (p.loss > y1) y1 = p.loss; }
      for (const p of vpts) { if (p.val < y0) y0 = p.val; if (p.val > y1) y1 = p.val; }
      const ty = log ? Math.log10 : (v) => v;
      let l0 = ty(y0), l1 = ty(y1);
      if (l0 === l1) { const d = Math.abs(l0) * 0.1 || 1; l0 -= d; l1 += d; }
      const pad = (l1 - l0) * 0.05;
      l0 -= pad; l1 += pad;
      if (!log && y0 >= 0 && l0 < 0) l0 = 0;
      const px = (s) => m.l + ((s - x0) / (x1 - x0)) * (W - m.l - m.r);
      const py = (v) => m.t + (1 - (ty(v) - l0) / (l1 - l0)) * (H - m.t - m.b);

      const yt = log ? logTicks(10 ** l0, 10 ** l1) : linearTicks(l0, l1, 5);
      for (const v of yt) {
        const y = py(v).toFixed(1);
        svg.append(svgEl('line', { class: 'gridline', x1: m.l, x2: W - m.r, y1: y, y2: y }));
        svg.append(svgEl('text', { class: 'tick', x: m.l - 6, y, 'text-anchor': 'end', 'dominant-baseline': 'middle' }, fmtNum(v, 3)));
      }
      const xt = linearTicks(x0, x1, Math.max(2, Math.floor((W - m.l - m.r) / 90))).filter((v) => Number.isInteger(v) || x1 - x0 < 10);
      for (const v of xt) {
        const x = px(v).toFixed(1);
        svg.append(svgEl('line', { class: 'gridline', x1: x, x2: x, y1: m.t, y2: H - m.b }));
        svg.append(svgEl('text', { class: 'tick', x, y: H - m.b + 16, 'text-anchor': 'middle' }, fmtInt(v)));
      }
      svg.append(svgEl('line', { class: 'axis', x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b }));
      svg.append(svgEl('line', { class: 'axis', x1: m.l, x2: m.l, y1: m.t, y2: H - m.b }));
      svg.append(svgEl('text', { class: 'axis-label', x: W - m.r, y: H - 4, 'text-anchor': 'end' }, 'step'));
      svg.append(svgEl('text', { class: 'axis-label', x: 4, y: m.t + 4, 'dominant-baseline': 'hanging' }, log ? 'loss (log)' : 'loss'));

      // More points than pixels: keep each pixel column's first, min, max and last point.
      let drawn = pts;
      const columns = W - m.l - m.r;
      if (pts.length > columns * 2) {
        drawn = [];
        let col = -1, bucket = [];
        const flush = () => {
          if (bucket.length === 0) return;
          let lo = bucket[0], hi = bucket[0];
          for (const p of bucket) { if (p.loss < lo.loss) lo = p; if (p.loss > hi.loss) hi = p; }
          const keep = new Set([bucket[0], lo, hi, bucket[bucket.length - 1]]);
          for (const p of bucket) if (keep.has(p)) drawn.push(p);
          bucket = [];
        };
        for (const p of pts) {
          const c = Math.floor(px(p.step));
          if (c !== col) { flush(); col = c; }
          bucket.push(p);
        }
        flush();
      }
      const d = drawn.map((p, i) => `${i ? 'L' : 'M'}${px(p.step).toFixed(1)},${py(p.loss).toFixed(1)}`).join('');
      svg.append(svgEl('path', { class: 'line', d, 'data-vertices': drawn.length }));
      if (vpts.length > 0) {
        const vd = vpts.map((p, i) => `${i ? 'L' : 'M'}${px(p.step).toFixed(1)},${py(p.val).toFixed(1)}`).join('');
        svg.append(svgEl('path', { class: 'val-line', d: vd, 'data-vertices': vpts.length }));
      }

      const cross = svgEl('line', { class: 'cross', y1: m.t, y2: H - m.b, visibility: 'hidden' });
      const marker = svgEl('circle', { class: 'marker', r: 4, visibility: 'hidden' });
      svg.append(cross, marker);
      curveGeom = { pts, px, py, x0, x1, W, m, cross, marker };

      let best = pts[0];
      for (const p of pts) if (p.loss < best.loss) best = p;
      const last = pts[pts.length - 1];
      note.textContent = `${fmtInt(pts.length)} points, steps ${fmtInt(pts[0].step)}–${fmtInt(last.step)} · ` +
        `loss recorded at step ${fmtInt(last.step)}: ${fmtNum(last.loss)} · lowest ${fmtNum(best.loss)} at step ${fmtInt(best.step)}`;
      if (vpts.length > 0) {
        let vbest = vpts[0];
        for (const p of vpts) if (p.val < vbest.val) vbest = p;
        note.textContent += ` · validation loss lowest ${fmtNum(vbest.val)} at step ${fmtInt(vbest.step)}`;
      }
    }

    logBox.addEventListener('change', () => { st.logScale = logBox.checked; queueDraw(); });
    const resize = new ResizeObserver(() => queueDraw());
    resize.observe(chart);
    signal.addEventListener('abort', () => resize.disconnect());

    /* -- live events -- */

    function onEvent(ev) {
      let data;
      try { data = JSON.parse(ev.data); } catch (_) { return; }
      if (ev.type === 'progress') {
        st.liveEvents++;
        st.liveStep = Math.max(st.liveStep, data.step + 1);
        if (st.model && st.model.status === 'idle') st.model.status = 'training';
        if (st.pending) st.pending.push(data);
        else addPoint(data.step, data.loss);
        renderStep();
        queueDraw();
        queuePlot();
        queueValidationCurve();
        const j = st.job;
        if (j && !j.id && j.status === 'running') {   // a synchronous run has no job to poll
          j.progress.step = Math.max(0, st.liveStep - j.startStep);
          renderJob();
        }
      } else if (ev.type === 'done') {
        if (data.error) {
          showError(q('.train-error'), new ApiError(0, data.error.code || 'failed', `the run failed: ${data.error.message}`));
        } else {
          st.liveStep = Math.max(st.liveStep, data.step);
        }
        renderStep();
        afterRun();
      }
    }

    let afterRunTimer = 0;
    function afterRun() {    // a run ended: refresh everything that it changed (once per burst)
      clearTimeout(afterRunTimer);
      afterRunTimer = setTimeout(() => {
        if (signal.aborted) return;
        loadModel().then(() => { loadEval(); loadPlot(); });
        loadCurve();
        loadParams();
        loadHistory();
      }, 150);
    }

    followEvents(`/v1/models/${id}/events`, {
      signal,
      onState: (s, err) => {
        streamState.dataset.state = s;
        streamState.textContent = s === 'live' ? 'live' : s === 'connecting' ? 'connecting' : 'offline';
        streamState.title = err ? `Event stream: ${err.message}` : 'Live event stream (GET /v1/models/{id}/events)';
        if (s !== 'live') streamReady = new Promise((r) => { streamOpened = r; });
      },
      onOpen: () => {
        streamOpened();
        loadCurve();   // catches up with whatever happened while the stream was down
      },
      onEvent,
    });

    /* -- training runs and jobs -- */

    const form = q('.train-form');
    const startButton = q('.start');
    const cancelButton = q('.cancel');
    const trainError = q('.train-error');
    const jobBox = q('.job');

    function renderJob() {
      const j = st.job;
      jobBox.hidden = !j;
      if (!j) return;
      const status = q('.job-status');
      status.textContent = j.status;
      status.dataset.status = j.status;
      q('.job-id').textContent = j.id ? `Job #${j.id}` : 'Synchronous run';
      jobBox.dataset.jobId = j.id || '';
      jobBox.dataset.status = j.status;
      const pr = j.progress || {};
      const bar = q('.job-progress');
      if (pr.steps) {
        bar.max = pr.steps;
        bar.value = Math.min(pr.step || 0, pr.steps);
      } else if (TERMINAL.has(j.status)) {
        bar.max = 1;
        bar.value = 1;
      } else {
        bar.removeAttribute('value');  // indeterminate
      }
      bar.setAttribute('aria-label', 'Training progress');
      let detail;
      const r = j.result;
      if (r) {
        detail = `stopped: ${r.stopped} · ${fmtInt(r.steps_run)} steps in ${fmtMs(r.elapsed_ms)} · ` +
          `loss ${fmtNum(r.loss_before)} → ${fmtNum(r.loss_after)} · model at step ${fmtInt(r.step)}`;
      } else if (j.status === 'failed') {
        detail = `failed: ${typeof j.error === 'string' ? j.error : (j.error && j.error.message) || 'unknown error'}`;
      } else if (pr.steps !== undefined) {
        detail = `${fmtInt(pr.step || 0)} / ${fmtInt(pr.steps)} steps · loss ${fmtNum(pr.loss)}`;
      } else {
        detail = 'running…';
      }
      q('.job-detail').textContent = detail;
      const active = !TERMINAL.has(j.status);
      cancelButton.disabled = !(active && j.id);
      startButton.disabled = active;
    }

    async function trackJob(job) {
      st.job = job;
      renderJob();
      while (!signal.aborted && st.job === job && !TERMINAL.has(job.status)) {
        await sleep(JOB_POLL_MS, signal);
        if (signal.aborted || st.job !== job) return;
        try {
          const fresh = await api(`/v1/jobs/${job.id}`, { signal });
          Object.assign(job, fresh);
          renderJob();
        } catch (e) {
          if (isAbort(e)) return;
          showError(trainError, e);
          if (e instanceof ApiError && e.status === 404) return;
        }
      }
      if (!signal.aborted && st.job === job) afterRun();
    }

    /* A number field's value, undefined when empty. Ranges are the server's to judge: its
     * message names the field. Text that is not a number never leaves the page. */
    function readField(name) {
      const input = form.elements[name];
      input.removeAttribute('aria-invalid');
      const raw = input.value.trim();
      if (input.validity.badInput || (raw !== '' && !Number.isFinite(Number(raw))))
        throw fieldError(input, `${name} is not a number`);
      return raw === '' ? undefined : Number(raw);
    }
    function fieldError(input, message) {
      input.setAttribute('aria-invalid', 'true');
      input.focus();
      return new ApiError(0, 'invalid_input', message, input.name);
    }

    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      showError(trainError, null);
      const body = {};
      try {
        const steps = readField('steps');
        const lr = readField('learning_rate');
        const batch = readField('batch_size');
        const every = readField('history_every');
        if (steps !== undefined) body.steps = steps;
        if (lr !== undefined) body.learning_rate = lr;
        if (batch !== undefined) body.batch_size = batch;
        if (every !== undefined) body.history_every = every;
      } catch (err) {
        showError(trainError, err);
        return;
      }
      const async = form.elements.async.checked;
      if (async) body.async = true;
      // Let the stream connect first, so the curve sees the run from its first step.
      await Promise.race([streamReady, sleep(3000, signal)]);
      if (signal.aborted) return;
      startButton.disabled = true;
      try {
        if (async) {
          const job = await api(`/v1/models/${id}/train`, { method: 'POST', body, signal });
          trackJob(job);
        } else {
          const startStep = Number(q('[data-fact="step"]').dataset.step) || 0;
          st.job = { status: 'running', startStep, progress: { step: 0, steps: body.steps ?? 1 } };
          renderJob();
          const result = await api(`/v1/models/${id}/train`, { method: 'POST', body, signal });
          st.job = { status: 'succeeded', progress: { step: result.steps_run, steps: result.steps_run }, result };
          renderJob();
          afterRun();
        }
      } catch (err) {
        if (isAbort(err)) return;
        showError(trainError, err);
        if (st.job && !st.job.id) st.job = null;
        renderJob();
        startButton.disabled = false;
      }
    });

    cancelButton.addEventListener('click', async () => {
      const job = st.job;
      if (!job || !job.id) return;
      cancelButton.disabled = true;
      showError(trainError, null);
      try {
        Object.assign(job, await api(`/v1/jobs/${job.id}`, { method: 'DELETE', signal }));
        renderJob();
      } catch (e) {
        if (!isAbort(e)) {
          showError(trainError, e);
          cancelButton.disabled = false;
        }
      }
    });

    async function findActiveJob() {
      try {
        for (const status of ['running', 'queued']) {
          const r = await api(`/v1/jobs?model_id=${id}&status=${status}`, { signal });
          if (r.jobs.length > 0) {
            trackJob(r.jobs[r.jobs.length - 1]);
            return;
          }
        }
      } catch (e) {
        if (!isAbort(e)) showError(trainError, e);
      }
    }

    /* -- parameter heat maps -- */

    const matrices = q('.matrices');
    const paramsError = q('.params-error');

    /* Any JSON tensor as rows × cols: a number is 1×1, a vector one row, deeper arrays are
     * flattened to rows of the last dimension. */
    function asMatrix(v) {
      if (typeof v === 'number' || v === null) return [[v]];
      if (!Array.isArray(v) || v.length === 0) return [[]];
      if (!Array.isArray(v[0])) return [v];
      if (!Array.isArray(v[0][0])) return v;
      return v.flatMap((x) => asMatrix(x));
    }

    /* Diverging scale: blue below zero, near white at zero, red above (ColorBrewer RdBu). */
    const STOPS = [[33, 102, 172], [146, 197, 222], [247, 247, 247], [244, 165, 130], [178, 24, 43]];
    function colour(t) {   // t in [-1, 1]
      if (!Number.isFinite(t)) return [128, 128, 128];
      const x = (Math.max(-1, Math.min(1, t)) + 1) * 2;  // 0..4
      const i = Math.min(3, Math.floor(x)), f = x - i;
      const a = STOPS[i], b = STOPS[i + 1];
      return [0, 1, 2].map((k) => Math.round(a[k] + (b[k] - a[k]) * f));
    }

    function heatMap(name, rows, hasBias, width) {
      const n = rows.length, c = n ? rows[0].length : 0;
      let maxAbs = 0, lo = Infinity, hi = -Infinity;
      for (const r of rows) for (const v of r) {
        if (!Number.isFinite(v)) continue;
        maxAbs = Math.max(maxAbs, Math.abs(v));
        lo = Math.min(lo, v);
        hi = Math.max(hi, v);
      }
      const canvas = el('canvas', {
        width: Math.max(1, c), height: Math.max(1, n), tabindex: 0, role: 'img',
        'data-param': name, 'data-rows': n, 'data-cols': c,
        'aria-label': `${name}, ${n} by ${c}${hasBias ? ', column 0 is the bias' : ''}; values from ${fmtNum(lo, 4)} to ${fmtNum(hi, 4)}. Arrow keys read the cells.`,
      });
      const ctx = canvas.getContext('2d');
      const img = ctx.createImageData(Math.max(1, c), Math.max(1, n));
      rows.forEach((r, i) => r.forEach((v, j) => {
        const [R, G, B] = colour(maxAbs > 0 ? v / maxAbs : 0);
        const o = (i * c + j) * 4;
        img.data[o] = R; img.data[o + 1] = G; img.data[o + 2] = B; img.data[o + 3] = 255;
      }));
      ctx.putImageData(img, 0, 0);
      let cell = Math.min(36, Math.floor(width / Math.max(1, c)));
      if (cell < 1) cell = width / c;
      if (n * cell > 420) cell = Math.max(420 / n, Math.min(cell, 420 / n));
      canvas.style.width = `${c * cell}px`;
      canvas.style.height = `${n * cell}px`;

      const readout = el('output', { 'aria-live': 'polite' });
      const focusBox = el('div', { class: 'cell-focus', hidden: true });
      const label = (i, j) => `${name}[${i}][${j}] = ${fmtNum(rows[i][j], 8)}${hasBias && j === 0 ? '  (bias)' : ''}`;
      const cellAt = (e) => {
        const b = canvas.getBoundingClientRect();
        const j = Math.floor(((e.clientX - b.left) / b.width) * c), i = Math.floor(((e.clientY - b.top) / b.height) * n);
        return i >= 0 && i < n && j >= 0 && j < c ? [i, j] : null;
      };
      canvas.addEventListener('pointermove', (e) => {
        const at = cellAt(e);
        if (!at) { hideTooltip(); return; }
        const text = label(at[0], at[1]);
        showTooltip(text, e.clientX, e.clientY);
        readout.textContent = text;
      });
      canvas.addEventListener('pointerleave', hideTooltip);
      const kept = st.cellSel[name];
      let sel = kept && kept[0] < n && kept[1] < c ? kept : [0, 0];
      const showSel = () => {
        const b = canvas.getBoundingClientRect();
        const cw = b.width / c, ch = b.height / n;
        focusBox.style.left = `${sel[1] * cw}px`;
        focusBox.style.top = `${sel[0] * ch}px`;
        focusBox.style.width = `${Math.max(4, cw)}px`;
        focusBox.style.height = `${Math.max(4, ch)}px`;
        focusBox.hidden = false;
        readout.textContent = label(sel[0], sel[1]);
      };
      canvas.addEventListener('focus', showSel);
      canvas.addEventListener('blur', () => { focusBox.hidden = true; });
      canvas.addEventListener('keydown', (e) => {
        const moves = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1], Home: [0, -c], End: [0, c] };
        const d = moves[e.key];
        if (!d) return;
        e.preventDefault();
        sel = [Math.max(0, Math.min(n - 1, sel[0] + d[0])), Math.max(0, Math.min(c - 1, sel[1] + d[1]))];
        st.cellSel[name] = sel;
        showSel();
      });
      return el('figure', { class: 'matrix' },
        el('figcaption', {}, el('strong', { text: name }),
          el('span', { class: 'shape', text: `${n}×${c} · ±${fmtNum(maxAbs, 3)}` })),
        el('div', { class: 'heat-wrap' }, canvas, focusBox),
        readout);
    }

    async function loadParams() {
      try {
        const r = await api(`/v1/models/${id}/parameters`, { signal });
        q('.params-step').textContent = `at step ${fmtInt(r.step)}`;
        const key = JSON.stringify(r.parameters);
        if (key !== st.paramsKey) {   // redraw only what changed: keeps hover and focus
          st.paramsKey = key;
          const hasBias = st.model ? st.model.kind !== 'graph' : true;
          const width = Math.max(200, Math.min(560, matrices.clientWidth || 560));
          const focused = document.activeElement && matrices.contains(document.activeElement)
            ? document.activeElement.dataset.param : null;
          const figs = Object.entries(r.parameters).map(([name, v]) => heatMap(name, asMatrix(v), hasBias, width));
          matrices.replaceChildren(...figs);
          if (focused) {
            const again = matrices.querySelector(`canvas[data-param="${CSS.escape(focused)}"]`);
            if (again) again.focus();
          }
        }
        q('.legend-min').textContent = '−max';
        q('.legend-max').textContent = '+max';
        showError(paramsError, null);
      } catch (e) {
        if (!isAbort(e)) showError(paramsError, e);
      }
    }
    q('.refresh-params').addEventListener('click', loadParams);

    /* -- history table -- */

    const hist = { after: -1, back: [], next: null };
    const histBody = q('.history tbody');
    const histError = q('.history-error');

    async function loadHistory() {
      try {
        const r = await api(`/v1/models/${id}/history?after_step=${hist.after}&limit=${HISTORY_PAGE}`, { signal });
        histBody.replaceChildren(...r.history.map((h) => el('tr', {},
          el('td', { class: 'num', text: fmtInt(h.step) }),
          el('td', { class: 'num', text: fmtNum(h.loss, 8), title: String(h.loss) }),
          el('td', { class: 'num', text: fmtNum(h.grad_norm, 6), title: String(h.grad_norm) }),
          el('td', { class: 'num', text: fmtNum(h.learning_rate) }),
          el('td', { text: fmtTime(h.at), title: h.at }))));
        hist.next = r.next;
        q('.history-card .empty').hidden = r.history.length > 0;
        q('.history-card .next').disabled = r.next === null;
        q('.history-card .prev').disabled = hist.back.length === 0;
        q('.history-card .first').disabled = hist.after < 0;
        showError(histError, null);
      } catch (e) {
        if (!isAbort(e)) showError(histError, e);
      }
    }
    q('.history-card .next').addEventListener('click', () => {
      if (hist.next === null) return;
      hist.back.push(hist.after);
      hist.after = hist.next;
      loadHistory();
    });
    q('.history-card .prev').addEventListener('click', () => {
      if (hist.back.length === 0) return;
      hist.after = hist.back.pop();
      loadHistory();
    });
    q('.history-card .first').addEventListener('click', () => {
      hist.after = -1;
      hist.back = [];
      loadHistory();
    });
    q('.goto-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const v = Number(e.target.elements.from.value);
      if (!Number.isInteger(v) || v < 0) return;
      hist.after = v - 1;
      hist.back = v > 0 ? [-1] : [];
      loadHistory();
    });

    /* -- evaluation on each split -- */

    const evals = q('.evals');
    const evalError = q('.eval-error');
    const METRIC_NAMES = ['accuracy', 'precision', 'recall', 'f1', 'roc_auc', 'log_loss', 'mse', 'rmse', 'mae', 'r2'];

    function confusionTable(split, cm) {
      const k = cm.length;
      const head = el('tr', {}, el('th', { text: 'true / predicted' }),
        ...cm.map((_, j) => el('th', { scope: 'col', text: String(j) })));
      const rows = cm.map((row, i) => el('tr', {}, el('th', { scope: 'row', text: String(i) }),
        ...row.map((v, j) => el('td', { class: i === j ? 'hit' : '', text: fmtInt(v) }))));
      return el('table', { class: 'confusion', 'data-split': split, 'data-classes': k },
        el('caption', { class: 'sr-only', text: `Confusion matrix on the ${split} rows: row = true class, column = predicted` }),
        el('thead', {}, head), el('tbody', {}, ...rows));
    }

    function evalBlock(split, r) {
      const m = r.metrics || {};
      const parts = METRIC_NAMES.filter((k) => k in m)
        .map((k) => `${k} ${m[k] === null ? '–' : fmtNum(m[k], 4)}`);
      const block = el('div', { class: 'eval', 'data-split': split },
        el('h3', { text: `${split === 'validation' ? 'Validation' : 'Training'} rows: ${fmtInt(r.rows)}` }),
        el('p', { class: 'metrics-line', text: [`loss ${fmtNum(r.loss, 6)}`, ...parts].join(' · ') }));
      if (Array.isArray(m.confusion_matrix)) block.append(confusionTable(split, m.confusion_matrix));
      return block;
    }

    let evalLoads = 0;
    async function loadEval() {
      const m = st.model;
      if (!m) return;
      const mine = ++evalLoads;
      const splits = [];
      if (m.rows > 0) splits.push('train');
      if ((m.validation_rows ?? 0) > 0) splits.push('validation');
      try {
        const results = await Promise.all(splits.map((split) =>
          api(`/v1/models/${id}/evaluate`, { method: 'POST', body: { split }, signal })));
        if (mine !== evalLoads) return;
        evals.replaceChildren(...(splits.length
          ? results.map((r, i) => evalBlock(splits[i], r))
          : [el('p', { class: 'empty', text: 'No stored rows to evaluate on.' })]));
        showError(evalError, null);
      } catch (e) {
        if (!isAbort(e)) showError(evalError, e);
      }
    }
    q('.refresh-eval').addEventListener('click', loadEval);

    /* -- two inputs: the stored rows over the decision regions -- */

    const plotCard = q('.plot-card');
    const plotBox = q('.plot');
    const plotError = q('.plot-error');
    const PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac'];
    const PLOT_GRID = 40;         // cells per side of the decision-region grid
    const PLOT_MAX_ROWS = 4000;   // stored rows drawn at most
    const plot = { rows: null, rowsKey: '', busy: false, again: false, timer: 0 };

    const plottable = (m) => m && m.kind !== 'graph' && m.spec && m.spec.inputs === 2;
    const oneOutput = (m) => ['logistic', 'perceptron'].includes(m.kind) ||
      (m.kind === 'linear' && (m.spec.outputs ?? 1) === 1);

    /* Every stored row with its split and label, read batch by batch (GET …/batches/{bid}). */
    async function plotRows() {
      const list = (await api(`/v1/models/${id}/batches`, { signal })).batches;
      const key = list.map((b) => b.batch_id).join(',');
      if (plot.rows && key === plot.rowsKey) return plot.rows;
      const rows = [];
      for (const b of list) {
        if (rows.length >= PLOT_MAX_ROWS) break;
        const r = await api(`/v1/models/${id}/batches/${b.batch_id}`, { signal });
        r.x.forEach((x, i) => {
          if (rows.length < PLOT_MAX_ROWS) rows.push({ x, y: Array.isArray(r.y[i]) ? r.y[i][0] : r.y[i], split: r.split });
        });
      }
      plot.rows = rows;
      plot.rowsKey = key;
      return rows;
    }

    async function drawPlot() {
      const m = st.model;
      plotCard.hidden = !plottable(m);
      if (plotCard.hidden) return;
      const rows = await plotRows();
      let x0 = -1, x1 = 1, y0 = -1, y1 = 1;
      if (rows.length) {
        x0 = Math.min(...rows.map((r) => r.x[0])); x1 = Math.max(...rows.map((r) => r.x[0]));
        y0 = Math.min(...rows.map((r) => r.x[1])); y1 = Math.max(...rows.map((r) => r.x[1]));
      }
      const padX = (x1 - x0) * 0.08 || 1, padY = (y1 - y0) * 0.08 || 1;
      x0 -= padX; x1 += padX; y0 -= padY; y1 += padY;
      const n = PLOT_GRID, W = 400;
      const grid = [];
      for (let i = 0; i < n; i++) for (let j = 0; j < n; j++)
        grid.push([x0 + ((j + 0.5) / n) * (x1 - x0), y1 - ((i + 0.5) / n) * (y1 - y0)]);
      const pred = await api(`/v1/models/${id}/predict`, { method: 'POST', body: { x: grid }, signal });
      let boundary = null;
      if (oneOutput(m)) {
        try { boundary = await api(`/v1/models/${id}/boundary`, { signal }); } catch (e) { if (isAbort(e)) throw e; }
      }
      const sx = (v) => ((v - x0) / (x1 - x0)) * W, sy = (v) => ((y1 - v) / (y1 - y0)) * W;
      // A cell's class: the prediction's class, or for linear regression the sign of ŷ (the
      // side of its boundary). Regression with several outputs has no regions.
      const regionOf = (i) => pred.classes ? pred.classes[i]
        : (typeof pred.outputs[i] === 'number' ? (pred.outputs[i] > 0 ? 1 : 0) : null);
      const classifier = Array.isArray(pred.classes);
      let maxAbs = 0;
      for (const r of rows) maxAbs = Math.max(maxAbs, Math.abs(r.y));
      const fillOf = (label) => classifier ? PALETTE[label % PALETTE.length]
        : `rgb(${colour(maxAbs > 0 ? label / maxAbs : 0).join(',')})`;

      const svg = svgEl('svg', { viewBox: `0 0 ${W} ${W}`, role: 'img', 'data-points': rows.length });
      const clip = svgEl('clipPath', { id: `plot-clip-${id}` });
      clip.append(svgEl('rect', { x: 0, y: 0, width: W, height: W }));
      svg.append(clip);
      const regions = svgEl('g', { class: 'regions', 'shape-rendering': 'crispEdges' });
      const cw = W / n;
      let nRegions = 0;
      grid.forEach((_, k) => {
        const c = regionOf(k);
        if (c === null) return;
        nRegions++;
        regions.append(svgEl('rect', { x: ((k % n) * cw).toFixed(2), y: (Math.floor(k / n) * cw).toFixed(2),
          width: (cw + 0.3).toFixed(2), height: (cw + 0.3).toFixed(2), fill: PALETTE[c % PALETTE.length],
          'fill-opacity': 0.22, 'data-class': c }));
      });
      svg.append(regions);
      svg.dataset.regions = String(nRegions);
      if (boundary) {
        // θ0 + θ·x = 0 is the line u·x = offset (u the unit normal): through offset·u, along u⊥.
        const [u1, u2] = boundary.unit_normal, o = boundary.offset;
        const L = 4 * Math.hypot(x1 - x0, y1 - y0);
        const px0 = o * u1, py0 = o * u2;
        svg.append(svgEl('line', { class: 'boundary', 'clip-path': `url(#plot-clip-${id})`,
          x1: sx(px0 - L * u2), y1: sy(py0 + L * u1), x2: sx(px0 + L * u2), y2: sy(py0 - L * u1) }));
        // The unit normal, drawn from the boundary point nearest the middle of the view.
        const cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
        const t = (cx - px0) * -u2 + (cy - py0) * u1;
        const bx = px0 - t * u2, by = py0 + t * u1;
        const len = 0.15 * Math.min(x1 - x0, y1 - y0) / Math.hypot(u1, u2);
        const ex = bx + len * u1, ey = by + len * u2;
        const ang = Math.atan2(sy(ey) - sy(by), sx(ex) - sx(bx));
        const head = (a) => `${(sx(ex) - 9 * Math.cos(ang + a)).toFixed(1)},${(sy(ey) - 9 * Math.sin(ang + a)).toFixed(1)}`;
        const arrow = svgEl('g', { class: 'normal', 'data-unit-normal': `${u1},${u2}` });
        arrow.append(svgEl('line', { x1: sx(bx), y1: sy(by), x2: sx(ex), y2: sy(ey) }));
        arrow.append(svgEl('polyline', { points: `${head(0.45)} ${sx(ex).toFixed(1)},${sy(ey).toFixed(1)} ${head(-0.45)}`, fill: 'none' }));
        svg.append(arrow);
      }
      const pts = svgEl('g', { class: 'points' });
      for (const r of rows) {
        const attrs = { class: `pt ${r.split}`, fill: fillOf(r.y), 'data-label': r.y };
        if (r.split === 'validation') attrs.stroke = fillOf(r.y);
        if (r.split === 'validation') {
          pts.append(svgEl('rect', { ...attrs, x: (sx(r.x[0]) - 4).toFixed(1), y: (sy(r.x[1]) - 4).toFixed(1), width: 8, height: 8 }));
        } else {
          pts.append(svgEl('circle', { ...attrs, cx: sx(r.x[0]).toFixed(1), cy: sy(r.x[1]).toFixed(1), r: 3.5 }));
        }
      }
      svg.append(pts, svgEl('rect', { class: 'frame', x: 0, y: 0, width: W, height: W }));
      const nVal = rows.filter((r) => r.split === 'validation').length;
      svg.setAttribute('aria-label', `${rows.length - nVal} training rows (circles) and ${nVal} validation rows (squares) ` +
        `coloured by label over the model's decision regions${boundary ? ', with its boundary line and unit normal' : ''}`);
      plotBox.replaceChildren(svg);
      q('.plot-note').textContent = `x1 ${fmtNum(x0, 3)} to ${fmtNum(x1, 3)}, x2 ${fmtNum(y0, 3)} to ${fmtNum(y1, 3)} · ` +
        `circles: training rows, squares: validation rows${boundary ? ` · unit normal (${fmtNum(boundary.unit_normal[0], 3)}, ${fmtNum(boundary.unit_normal[1], 3)}), offset ${fmtNum(boundary.offset, 4)}` : ''}`;
    }

    /* One drawing at a time; a request during one draws again once it ends. */
    async function loadPlot() {
      if (plot.busy) { plot.again = true; return; }
      plot.busy = true;
      try {
        do {
          plot.again = false;
          await drawPlot();
        } while (plot.again && !signal.aborted);
        showError(plotError, null);
      } catch (e) {
        if (!isAbort(e)) showError(plotError, e);
      } finally {
        plot.busy = false;
      }
    }
    /* Progress events carry the training loss only: while a run reports progress on a model with
     * validation rows, reload the curve from history every 1.5 s for its validation loss. */
    let valCurveTimer = 0;
    function queueValidationCurve() {
      if (valCurveTimer || !st.model || !(st.model.validation_rows > 0)) return;
      valCurveTimer = setTimeout(() => { valCurveTimer = 0; if (!signal.aborted) loadCurve(); }, 1500);
    }

    /* While a run reports progress, redraw the regions about twice a second. */
    function queuePlot() {
      if (plot.timer || !plottable(st.model)) return;
      plot.timer = setTimeout(() => { plot.timer = 0; if (!signal.aborted) loadPlot(); }, 500);
    }

    /* -- start: the model first (a 404 stops the rest), then the parts -- */

    (async () => {
      if (!(await loadModel())) return;
      loadEval();
      loadPlot();
      loadParams();
      loadHistory();
      findActiveJob();
      // While a run holds the model, keep its status and step fresh.
      while (!signal.aborted) {
        await sleep(3000, signal);
        if (!signal.aborted && st.model && st.model.status === 'training' && !document.hidden) await loadModel();
      }
    })();
  }

  /* ---- start ------------------------------------------------------------------------------------ */

  updateTokenButton();
  window.addEventListener('hashchange', route);
  checkHealth();
  setInterval(checkHealth, 15000);
  route();
})();
