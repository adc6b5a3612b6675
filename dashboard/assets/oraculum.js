/* oraculum dashboard: the browser side.
 *
 * The labelling page is keyboard first and must show the next spectrum within a frame or two of a
 * key press, so its state machine runs here, in the browser:
 *   keydown -> set_props('lab-key') -> clientside callback oraculum.label_render -> figure etc.
 * Every label is queued in an outbox kept in localStorage and sent to the API (through the
 * dashboard's authenticated proxy, <prefix>_oraculum/api/v1/...) strictly in order, one request
 * at a time; a failed save is shown and retried, a refused one is shown and reverted, and a
 * reload (or a crash of the browser) loses nothing: the outbox is sent when the page comes back.
 * Live events (other oracles' labels, Job progress, phase changes) come from one EventSource per
 * page (<prefix>_oraculum/events?experiments=...).
 */
(function () {
  'use strict';

  const O = (window.oraculum = window.oraculum || {});
  const NO = () => window.dash_clientside.no_update;

  // ---- where we are ------------------------------------------------------------------------
  let basePath = null;
  O.base = function () {
    if (basePath === null) {
      basePath = '/';
      try {
        const config = JSON.parse(document.getElementById('_dash-config').textContent);
        basePath = config.requests_pathname_prefix || config.url_base_pathname || '/';
      } catch (e) { /* keep / */ }
    }
    return basePath;
  };

  // dcc.Store renders no element: whether a component exists is asked of the page's root instead
  const ROOTS = { lab: 'lab-root', exp: 'experiments-root' };
  function setProps(id, props) {
    const root = ROOTS[id.split('-')[0]];
    if (root && !document.getElementById(root)) return;
    if (!root && !document.getElementById(id)) return;
    if (window.dash_clientside && window.dash_clientside.set_props) {
      try { window.dash_clientside.set_props(id, props); } catch (e) { console.warn('oraculum: set_props', id, e); }
    }
  }
  O.setProps = setProps;

  function apiDetail(body, fallback) {
    if (!body) return fallback;
    const d = body.detail;
    if (!d) return fallback;
    if (typeof d === 'string') return d;
    if (Array.isArray(d)) return d.map((e) => (e.loc || []).join('.') + ': ' + e.msg).join('; ');
    let text = d.message || JSON.stringify(d);
    if (d.holders) text += ': ' + Object.entries(d.holders).map(([i, w]) => '#' + i + ' by ' + w).join(', ');
    return text;
  }

  function fetchWithTimeout(url, init, ms) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), ms);
    return fetch(url, Object.assign({}, init, { signal: controller.signal })).finally(() => clearTimeout(timer));
  }
  O.fetchWithTimeout = fetchWithTimeout;  // also for samp.js

  // ---- performance probes (read by the benchmark and the tests) ------------------------------
  O.perf = { keyAt: null, key: null, samples: [], saves: [], trace: [], shown: null, renders: 0 };

  // ---- the outbox: labels on their way to the API ---------------------------------------------
  const Outbox = (O.outbox = {
    q: [], exp: null, it: null, busy: false, timer: null, backoff: 1000, sent: 0, n: 0, delayMs: 80,
    key(exp, it) { return 'oraculum:outbox:' + O.base() + exp + ':' + it; },
    open(exp, it) {
      if (this.exp === exp && this.it === it) return;
      clearTimeout(this.timer);
      this.exp = exp; this.it = it; this.busy = false; this.backoff = 1000;
      try { this.q = JSON.parse(localStorage.getItem(this.key(exp, it)) || '[]'); } catch (e) { this.q = []; }
      this.q.forEach((op) => { delete op.t0; });  // timings of an earlier page mean nothing here
      this.pump();
    },
    save() {
      try { localStorage.setItem(this.key(this.exp, this.it), JSON.stringify(this.q)); } catch (e) { /* full */ }
    },
    size() { return this.q.length; },
    push(op) {
      op.id = Date.now().toString(36) + '-' + Math.random().toString(36).slice(2, 8);
      op.t0 = performance.now();
      this.q.push(op);
      this.save();  // in localStorage now: safe from a reload or a crash of the browser
      // sent a moment later, once the next spectrum is on screen: the request (and the servers'
      // work for it) then never competes with drawing it
      if (!this.busy) { clearTimeout(this.timer); this.timer = setTimeout(() => this.pump(), this.delayMs); }
    },
    notify(event) {
      event.queue = this.q.length;
      event.n = ++this.n;
      setProps('lab-saved', { data: event });
    },
    retryNow() { this.backoff = 1000; clearTimeout(this.timer); this.pump(); },
    pump() {
      if (this.busy || !this.q.length) return;
      clearTimeout(this.timer);
      this.busy = true;
      const op = this.q[0];
      const exp = this.exp, it = this.it;
      let url = O.base() + '_oraculum/api/v1/experiments/' + encodeURIComponent(op.experiment) +
        '/iterations/' + op.iteration + '/labels/' + op.index;
      const init = { credentials: 'same-origin', headers: { 'X-Oraculum-Request': '1' } };
      if (op.label === null || op.label === undefined) {
        init.method = 'DELETE';
        if (op.comment) url += '?comment=' + encodeURIComponent(op.comment);
      } else {
        init.method = 'PUT';
        init.headers['Content-Type'] = 'application/json';
        init.body = JSON.stringify({ label: op.label, comment: op.comment || null });
      }
      const stale = () => this.exp !== exp || this.it !== it;
      fetchWithTimeout(url, init, 20000).then(async (response) => {
        let body = null;
        try { body = await response.json(); } catch (e) { /* not JSON */ }
        if (stale()) return;
        if (response.ok) {
          this.q.shift(); this.save(); this.busy = false; this.backoff = 1000; this.sent++;
          if (op.t0 && op.t0 <= performance.now()) O.perf.saves.push(performance.now() - op.t0);
          if (O.perf.saves.length > 2000) O.perf.saves.splice(0, 1000);
          this.notify({ ok: true, op: op, progress: body && body.progress });
          this.pump();
          return;
        }
        const message = apiDetail(body, response.status + ' ' + response.statusText);
        if (response.status === 401 || response.status === 408 || response.status === 429 || response.status >= 500) {
          throw { status: response.status, message: message };
        }
        // refused for good (someone else holds the item, the iteration moved on, ...): revert
        this.q.shift(); this.save(); this.busy = false;
        this.notify({ ok: false, permanent: true, op: op, status: response.status, message: message });
        this.pump();
      }).catch((error) => {
        if (stale()) return;
        this.busy = false;
        const wait = this.backoff;
        this.backoff = Math.min(this.backoff * 2, 30000);
        const message = (error && error.message) || String(error);
        this.notify({ ok: false, permanent: false, op: op, status: (error && error.status) || 0,
          message: error && error.name === 'AbortError' ? 'the request timed out' : message, retry_in: wait / 1000 });
        this.timer = setTimeout(() => this.pump(), wait);
      });
    },
  });
  window.addEventListener('online', () => Outbox.retryNow());

  // ---- live events ------------------------------------------------------------------------------
  const TYPES = ['ready', 'status', 'label', 'labels-submitted', 'lock', 'unlock', 'progress', 'suspended',
    'resumed', 'deleted', 'created', 'error', 'upstream-error'];
  O.sse = {
    es: null, url: null, handler: null, ready: 0, log: [],
    open(names, handler) {
      const url = O.base() + '_oraculum/events?experiments=' + names.map(encodeURIComponent).join(',');
      if (this.url === url && this.es) { this.handler = handler; return; }
      this.close();
      this.handler = handler;
      if (!names.length || !window.EventSource) return;
      this.url = url;
      const es = new EventSource(url, { withCredentials: true });
      TYPES.forEach((type) => es.addEventListener(type, (event) => {
        let data = null;
        try { data = JSON.parse(event.data); } catch (e) { return; }
        if (type === 'ready') this.ready += 1;
        this.log.push({ type: type, data: data });  // the latest events, for people and tests
        if (this.log.length > 50) this.log.shift();
        if (this.handler) this.handler(type, data);
      }));
      this.es = es;
    },
    close() {
      if (this.es) this.es.close();
      this.es = null; this.url = null; this.handler = null;
    },
  };

  // ---- the spectrum figure ----------------------------------------------------------------------
  let canvas = null;
  function textWidth(text, font) {
    canvas = canvas || document.createElement('canvas');
    const ctx = canvas.getContext('2d');
    ctx.font = font;
    return ctx.measureText(text).width;
  }
  const LABEL_FONT_PX = 12;
  const LABEL_FONT = LABEL_FONT_PX + 'px "Open Sans", verdana, arial, sans-serif';
  const LEVEL_PX = 17;

  /* Levels for line labels so that no two overlap: lines sorted by wavelength, each label goes to
   * the lowest level whose last label ends left of it (interval greedy colouring, optimal for
   * intervals). Positions in pixels from the visible range and the plot's width. */
  function placeLabels(lines, x0, x1, width) {
    const visible = lines.filter((l) => l.x >= x0 && l.x <= x1).sort((a, b) => a.x - b.x);
    const ends = [];
    return visible.map((line) => {
      const px = ((line.x - x0) / (x1 - x0)) * width;
      const half = textWidth(line.name, LABEL_FONT) / 2 + 6;
      let level = ends.findIndex((end) => end <= px - half);
      if (level < 0) { level = ends.length; ends.push(0); }
      ends[level] = px + half;
      return Object.assign({}, line, { level: level });
    });
  }
  O.placeLabels = placeLabels;

  function smooth(y, sigma) {
    const radius = Math.ceil(3 * sigma);
    const kernel = [];
    for (let k = -radius; k <= radius; k++) kernel.push(Math.exp(-0.5 * (k / sigma) * (k / sigma)));
    const out = new Array(y.length);
    for (let i = 0; i < y.length; i++) {
      let sum = 0, weight = 0;
      for (let k = -radius; k <= radius; k++) {
        const v = y[i + k];
        if (v === null || v === undefined || !isFinite(v)) continue;
        sum += v * kernel[k + radius]; weight += kernel[k + radius];
      }
      out[i] = weight > 0 && y[i] !== null ? sum / weight : null;
    }
    return out;
  }

  function extent(values) {
    let lo = Infinity, hi = -Infinity;
    for (const v of values) { if (v !== null && isFinite(v)) { if (v < lo) lo = v; if (v > hi) hi = v; } }
    return [lo, hi];
  }

  const MARGIN = { l: 64, r: 18, t: 28, b: 52 };

  function buildFigure(D, S, item, flux, raw, xrange) {
    const rawHere = raw && raw.index === item.index;
    const showRaw = !!(S.raw && rawHere && raw.wavelength && !raw.error);
    const x = showRaw ? raw.wavelength : D.wavelength;
    const y = showRaw ? raw.flux : flux;
    const medium = showRaw ? raw.medium : D.medium;
    const lines = (medium === 'air' ? D.lines_air : D.lines_vacuum) || [];
    const traces = [];
    if (y) {
      traces.push({ type: 'scatter', mode: 'lines', x: x, y: y, name: showRaw ? 'raw (archive file)' : 'preprocessed',
        line: { color: S.smooth ? '#9fb3d1' : '#1b3a6b', width: S.smooth ? 1 : 1.6 },
        hovertemplate: '%{x:.2f} Å<br>%{y:.4g}<extra></extra>' });
      if (S.smooth) {
        traces.push({ type: 'scatter', mode: 'lines', x: x, y: smooth(y, showRaw ? 3 : 1.5), name: 'smoothed',
          line: { color: '#c0392b', width: 2 }, hovertemplate: '%{x:.2f} Å<br>%{y:.4g}<extra>smoothed</extra>' });
      }
    }
    const [lo, hi] = extent(x || []);
    const full = isFinite(lo) ? [lo, hi] : [6500, 6750];
    const range = xrange && xrange[0] < xrange[1] ? xrange : full;
    const graph = document.getElementById('lab-graph');
    const width = Math.max(200, ((graph && graph.clientWidth) || 900) - MARGIN.l - MARGIN.r);
    const placed = placeLabels(lines, range[0], range[1], width);
    const levels = placed.reduce((m, l) => Math.max(m, l.level + 1), 0);
    // The names of the lines sit in a band above the spectrum: a second, hidden y axis whose domain
    // is that band (text traces there cost far less than annotations, which Plotly redraws on every
    // update); the dotted lines themselves are shapes over the spectrum's y domain.
    const plotHeight = Math.max(150, ((graph && graph.clientHeight) || 500) - MARGIN.t - MARGIN.b);
    const band = levels * LEVEL_PX + 10;
    const split = 1 - band / plotHeight;
    const inBand = (px) => px / band;
    const cx = [], cy = [];
    placed.forEach((l) => { cx.push(l.x, l.x, null); cy.push(0, inBand(2 + l.level * LEVEL_PX), null); });
    traces.push({ type: 'scatter', mode: 'lines', x: cx, y: cy, yaxis: 'y2', name: 'line marks', showlegend: false,
      hoverinfo: 'skip', line: { color: '#7a6a9a', width: 1, dash: 'dot' } });
    traces.push({ type: 'scatter', mode: 'text', x: placed.map((l) => l.x), y: placed.map((l) => inBand(2 + l.level * LEVEL_PX)),
      text: placed.map((l) => l.name), textposition: 'top center', yaxis: 'y2', name: 'line names', showlegend: false,
      cliponaxis: false, textfont: { size: LABEL_FONT_PX, color: '#4b3f66' },
      hovertext: placed.map((l) => l.name + ' at ' + l.x.toFixed(2) + ' Å (' + medium + ')'), hoverinfo: 'text' });
    const shapes = lines.filter((l) => l.x >= full[0] && l.x <= full[1]).map((l) => ({
      type: 'line', xref: 'x', yref: 'y domain', x0: l.x, x1: l.x, y0: 0, y1: 1,
      line: { color: '#7a6a9a', width: 1, dash: 'dot' } }));
    if (showRaw && D.wavelength && D.wavelength.length) {
      shapes.push({ type: 'rect', xref: 'x', yref: 'y domain', x0: D.wavelength[0], x1: D.wavelength[D.wavelength.length - 1],
        y0: 0, y1: 1, fillcolor: 'rgba(27,58,107,0.06)', line: { width: 0 }, layer: 'below' });
    }
    const annotations = [];
    if (S.raw && !showRaw) {
      annotations.push({ text: rawHere && raw.error ? 'raw file unavailable: ' + raw.error : 'loading the raw spectrum…',
        xref: 'paper', yref: 'paper', x: 0, y: 1, xanchor: 'left', yanchor: 'top', showarrow: false,
        font: { size: 12, color: '#b3261e' }, bgcolor: 'rgba(255,255,255,0.9)' });
    }
    if (showRaw) {
      annotations.push({ text: 'raw archive spectrum: ' + raw.points + ' points' + (raw.decimated ? ' (min/max decimated for display)' : '') +
        '; shaded: the preprocessed grid', xref: 'paper', yref: 'paper', x: 0, y: 1, xanchor: 'left', yanchor: 'top',
        showarrow: false, font: { size: 11, color: '#555' }, bgcolor: 'rgba(255,255,255,0.85)' });
    }
    if (!y) {
      annotations.push({ text: 'loading spectrum #' + item.index + '…', xref: 'paper', yref: 'paper', x: 0.5, y: 0.5,
        showarrow: false, font: { size: 16, color: '#888' } });
    }
    return {
      data: traces,
      layout: {
        meta: { index: item.index, raw: !!showRaw },
        uirevision: item.index + ':' + (showRaw ? 'raw' : 'pre') + ':' + S.reset,
        margin: { l: MARGIN.l, r: MARGIN.r, t: MARGIN.t, b: MARGIN.b },
        xaxis: { title: { text: 'wavelength (Å, ' + medium + ')' }, autorange: true, showgrid: true, gridcolor: '#eef0f4',
          zeroline: false },
        yaxis: { title: { text: showRaw ? 'flux (archive units)' : 'flux (' + (D.normalisation || 'normalised') + ')' },
          autorange: true, showgrid: true, gridcolor: '#eef0f4', zeroline: false, fixedrange: false, domain: [0, split] },
        yaxis2: { domain: [split, 1], range: [0, 1], visible: false, fixedrange: true, anchor: 'x' },
        shapes: shapes, annotations: annotations, showlegend: S.smooth, legend: { orientation: 'h', x: 1, xanchor: 'right', y: -0.14 },
        hovermode: 'x', dragmode: 'zoom', plot_bgcolor: '#ffffff', paper_bgcolor: '#ffffff',
        font: { family: '"Open Sans", verdana, arial, sans-serif', size: 12 },
      },
    };
  }

  // ---- the labelling state machine -------------------------------------------------------------
  const L = (O.label = { D: null, S: null, flux: {}, fluxStamp: null, lastCurrent: null, lastWant: null,
    lastItem: null, xrange: null, me: null, clicks: {}, figureKey: null, keys: [], prev: [], currentTimer: null,
    restMs: 120 });

  function emptyState(D) {
    return { experiment: D.experiment, iteration: D.iteration, pos: 0, labels: {}, smooth: false, raw: false,
      help: false, undo: [], reset: 0, status: null, banner: null, loadedAt: null, submitted: false };
  }

  function isLabelled(S, index) { const e = S.labels[index]; return !!(e && e.label); }

  function nextUnlabelled(D, S, from) {
    const n = D.items.length;
    for (let step = 1; step <= n; step++) {
      const p = (from + step) % n;
      if (!isLabelled(S, D.items[p].index)) return p;
    }
    return null;
  }

  function positionOf(D, index) { return D.items.findIndex((item) => item.index === index); }

  function init(D, stored) {
    const sameBatch = stored && stored.experiment === D.experiment && stored.iteration === D.iteration;
    const S = sameBatch ? Object.assign(emptyState(D), stored) : emptyState(D);
    S.labels = {};
    S.status = null;
    S.banner = null;
    S.help = false;
    Object.entries(D.labels || {}).forEach(([index, entry]) => { S.labels[index] = Object.assign({}, entry, { pending: false }); });
    Outbox.open(D.experiment, D.iteration);
    Outbox.q.forEach((op) => {  // unsent labels of an earlier visit
      S.labels[op.index] = op.label ? { label: op.label, comment: op.comment, who: D.me.name, pending: true } : null;
    });
    S.submitted = !!D.submitted;
    if (D.item !== null && D.item !== undefined && positionOf(D, D.item) >= 0) {
      // opened at one spectrum (from the map): go there, and drop ?item= from the address so that
      // a reload keeps the place the oracle has moved on to since
      S.pos = positionOf(D, D.item);
      try { window.history.replaceState(window.history.state, '', window.location.pathname); } catch (e) { /* ok */ }
    } else if (!sameBatch || S.pos >= D.items.length) {
      const first = D.items.findIndex((item) => !isLabelled(S, item.index));
      S.pos = first >= 0 ? first : 0;
    }
    S.loadedAt = D.loaded_at;
    if (Outbox.size()) S.status = { kind: 'pending', text: Outbox.size() + ' label(s) from an earlier visit are being saved…' };
    O.sse.open([D.experiment], onEvent);
    return S;
  }

  function onEvent(type, data) {
    setProps('lab-remote', { data: { type: type, data: data, n: Date.now() + Math.random() } });
  }

  function status(kind, text) { L.S.status = { kind: kind, text: text }; }

  function setLabel(D, S, pos, label, comment) {
    const item = D.items[pos];
    const before = S.labels[item.index] ? Object.assign({}, S.labels[item.index]) : null;
    if (before) delete before.pending;
    S.labels[item.index] = { label: label, comment: comment, who: D.me.name, pending: true };
    S.undo.push({ index: item.index, before: before, after: label });
    if (S.undo.length > 500) S.undo.shift();
    Outbox.push({ experiment: D.experiment, iteration: D.iteration, index: item.index, label: label, comment: comment,
      before: before });
  }

  function readComment() {
    const el = document.getElementById('lab-comment');
    const text = el ? el.value.trim() : '';
    return text ? text : null;
  }

  function handleKey(D, S, key) {
    const n = D.items.length;
    const item = D.items[S.pos];
    const classLabel = D.keys[key];
    if (classLabel) {
      if (!D.can_label) { status('error', D.me.name + ' (' + D.me.role + ') may not label: read-only'); return; }
      if (S.submitted) { status('error', 'this batch was submitted: labels can no longer change here'); return; }
      setLabel(D, S, S.pos, classLabel, readComment());
      status('pending', 'saving #' + item.index + ' as ' + classLabel + '…');
      const next = nextUnlabelled(D, S, S.pos);
      S.pos = next !== null ? next : Math.min(S.pos + 1, n - 1);
      return;
    }
    switch (key) {
      case 'ArrowRight':
        if (S.pos < n - 1) S.pos += 1; else status('info', 'this is the last spectrum of the batch');
        break;
      case 'ArrowLeft':
        if (S.pos > 0) S.pos -= 1; else status('info', 'this is the first spectrum of the batch');
        break;
      case 'n': {
        const next = nextUnlabelled(D, S, S.pos);
        if (next === null) status('info', 'every spectrum of the batch is labelled'); else S.pos = next;
        break;
      }
      case 'z': {
        if (!D.can_label || S.submitted) { status('error', 'nothing can be undone here'); break; }
        const last = S.undo.pop();
        if (!last) { status('info', 'nothing to undo'); break; }
        const before = last.before;
        S.labels[last.index] = before ? Object.assign({}, before, { pending: true }) : null;
        Outbox.push({ experiment: D.experiment, iteration: D.iteration, index: last.index,
          label: before ? before.label : null, comment: before ? before.comment || null : null,
          before: { label: last.after }, undo: true });
        const p = positionOf(D, last.index);
        if (p >= 0) S.pos = p;
        status('pending', 'undo: #' + last.index + (before ? ' back to ' + before.label : ' unlabelled') + '…');
        break;
      }
      case 's': S.smooth = !S.smooth; break;
      case 'f': S.raw = !S.raw; break;
      case 'r': S.reset += 1; L.xrange = null; break;
      case '?': S.help = !S.help; break;
      case 'Escape': S.help = false; break;
      case 'retry': Outbox.retryNow(); break;
      case 'comment': {
        const comment = readComment();
        const entry = S.labels[item.index];
        if (entry && entry.label && D.can_label && !S.submitted) {
          if ((entry.comment || null) !== comment) {
            setLabel(D, S, S.pos, entry.label, comment);
            status('pending', 'saving the comment of #' + item.index + '…');
          }
        } else {
          status('info', 'the comment is saved with the label of #' + item.index);
        }
        break;
      }
      default: break;
    }
  }

  function handleSaved(D, S, event) {
    const op = event.op || {};
    if (op.experiment !== D.experiment || op.iteration !== D.iteration) return;
    const entry = S.labels[op.index];
    const same = (entry ? entry.label : null) === (op.label || null);
    if (event.ok) {
      if (entry && same) entry.pending = false;
      if (event.progress) D.progress = event.progress;
      status(event.queue ? 'pending' : 'ok', (op.label ? 'saved #' + op.index + ' as ' + op.label : 'cleared #' + op.index) +
        (event.queue ? ' · ' + event.queue + ' more to save' : ' ✓'));
    } else if (event.permanent) {
      if (same) S.labels[op.index] = op.before && op.before.label ? Object.assign({}, op.before, { pending: false }) : null;
      status('error', 'not saved: #' + op.index + (op.label ? ' as ' + op.label : '') + ': ' + event.message +
        ' (HTTP ' + event.status + '); shown as before');
    } else {
      status('error', 'save failed: ' + event.message + (event.status ? ' (HTTP ' + event.status + ')' : '') +
        ' · ' + event.queue + ' unsaved, kept in this browser · retrying in ' + Math.round(event.retry_in) + ' s');
    }
  }

  function handleRemote(D, S, message) {
    const type = message.type, data = message.data || {};
    if (type === 'label' && data.iteration === D.iteration && data.who !== D.me.name) {
      (data.indices || []).forEach((index) => {
        S.labels[index] = data.label ? { label: data.label, who: data.who, pending: false } : null;
      });
      if (data.progress) D.progress = data.progress;
      status('info', data.who + ' labelled ' + (data.indices || []).length + ' spectrum(s)' + (data.label ? ' as ' + data.label : ''));
    } else if (type === 'labels-submitted' && data.iteration === D.iteration) {
      S.submitted = true;
      S.banner = { kind: 'info', text: 'Batch ' + D.iteration + ' submitted by ' + data.who + '; the next iteration is being prepared.' };
    } else if (type === 'status') {
      if ((data.iteration || 0) > D.iteration && data.phase === 'AwaitingLabels') {
        if (S.submitted && !Outbox.size()) { window.location.reload(); return; }
        S.banner = { kind: 'ready', text: 'Iteration ' + data.iteration + ' is ready to label: reload the page (or press F5).' };
      } else if ((data.iteration || 0) > D.iteration || S.submitted) {
        S.banner = { kind: 'info', text: 'Experiment ' + D.experiment + ': ' + (data.phase || '') + ', iteration ' +
          data.iteration + (data.message ? ' — ' + data.message : '') };
      }
      if (data.suspended) S.banner = { kind: 'info', text: 'Experiment ' + D.experiment + ' is suspended.' };
    } else if (type === 'suspended' || type === 'resumed') {
      S.banner = { kind: 'info', text: 'Experiment ' + D.experiment + ' was ' + type + '.' };
    }
  }

  function triggeredIds() {
    const ctx = window.dash_clientside.callback_context;
    return (ctx.triggered || []).map((t) => t.prop_id).filter((id) => id && id !== '.');
  }

  function probabilityRows(D, item, S) {
    const h = window.dash_clientside;
    const row = (name, value, cls) => ({ type: 'Div', namespace: 'dash_html_components', props: { className: 'prob-row ' + (cls || ''), children: [
      { type: 'Span', namespace: 'dash_html_components', props: { className: 'prob-name', children: name } },
      { type: 'Span', namespace: 'dash_html_components', props: { className: 'prob-bar', children: [
        { type: 'Span', namespace: 'dash_html_components', props: { className: 'prob-fill', style: { width: (100 * value).toFixed(1) + '%' } } }] } },
      { type: 'Span', namespace: 'dash_html_components', props: { className: 'prob-value', children: (100 * value).toFixed(1) + ' %' } },
    ] } });
    if (item.prediction_hidden && !isLabelled(S, item.index)) {
      return [{ type: 'P', namespace: 'dash_html_components', props: { className: 'muted', id: 'lab-probs-hidden',
        children: 'Hidden: a blind estimation spectrum. The network\'s opinion is shown once you have labelled it.' } }];
    }
    if (!item.probabilities) {
      if (item.prediction_hidden) {
        return [{ type: 'P', namespace: 'dash_html_components', props: { className: 'muted',
          children: 'Labelled blind; reload to see the network\'s opinion.' } }];
      }
      return [{ type: 'P', namespace: 'dash_html_components', props: { className: 'muted',
        children: D.cold_start ? 'Cold start: no network yet in this iteration.' : 'No prediction for this spectrum.' } }];
    }
    return Object.entries(item.probabilities).sort((a, b) => b[1] - a[1])
      .map(([name, value]) => row(name, value, name === item.predicted ? 'predicted' : ''));
  }

  function render(D, S, rawDoc) {
    const no = NO();
    const item = D.items[S.pos];
    const flux = L.flux[item.index];
    // a new figure only when what it shows changed (Plotly.react costs a frame or two)
    const rawHere = rawDoc && rawDoc.index === item.index ? (rawDoc.error ? 'error' : 'raw') : 'none';
    const graph = document.getElementById('lab-graph');
    const figureKey = [item.index, !!flux, S.smooth, S.raw, rawHere, S.reset, JSON.stringify(L.xrange),
      graph ? graph.clientWidth : 0].join('|');
    let figure = no;
    if (figureKey !== L.figureKey) {
      L.figureKey = figureKey;
      figure = buildFigure(D, S, item, flux || null, rawDoc, L.xrange);
    }
    let oracle = 0, estimation = 0;
    let oracleTotal = 0, estimationTotal = 0;
    D.items.forEach((it) => {
      const labelled = isLabelled(S, it.index);
      if (it.set === 'estimation') { estimationTotal++; if (labelled) estimation++; } else { oracleTotal++; if (labelled) oracle++; }
    });
    const complete = oracle + estimation === D.items.length;
    const pending = Outbox.size();
    const text = oracle + ' / ' + oracleTotal + ' oracle, ' + estimation + ' / ' + estimationTotal + ' estimation';
    const entry = S.labels[item.index];
    const current = entry && entry.label ? entry.label : null;
    const title = '#' + item.index + ' · ' + item.id;
    const position = (S.pos + 1) + ' / ' + D.items.length + ' · ' + (item.set === 'estimation' ? 'estimation sample' : 'oracle batch') +
      (item.reason ? ' (' + item.reason + ')' : '') + (item.lock && item.lock !== D.me.name ? ' · ' + item.lock + ' is labelling it' : '');
    const labelText = current ? 'labelled ' + current + (entry.pending ? ' (saving…)' : '') + (entry.who && entry.who !== D.me.name ? ' by ' + entry.who : '') : 'not labelled';
    const outputs = window.dash_clientside.callback_context.outputs_list;
    const buttonIds = outputs[outputs.length - 1].map((o) => o.id.key);
    const classes = buttonIds.map((key) => {
      let cls = 'key-btn';
      if (D.keys[key] && D.keys[key] === current) cls += ' active';
      if ((key === 's' && S.smooth) || (key === 'f' && S.raw) || (key === '?' && S.help)) cls += ' on';
      return cls;
    });
    // what the server should fetch: flux of the coming spectra, the raw file, details
    const want = [];
    for (let p = Math.max(0, S.pos - 2); p < Math.min(D.items.length, S.pos + 16); p++) {
      const index = D.items[p].index;
      if (!(index in L.flux)) want.push(index);
    }
    const wantKey = want.join(',');
    let wantOut = no;
    if (want.length && wantKey !== L.lastWant) { L.lastWant = wantKey; wantOut = { experiment: D.experiment, dataset: D.dataset, indices: want }; }
    // details, neighbours and the raw file come from the server once the oracle rests on a spectrum
    // for a moment: never on the way to the next spectrum's first paint
    // (details and neighbours depend on the spectrum only; the raw toggle asks for the raw file only,
    // so toggling it never re-renders the details card under the oracle's hands)
    const currentKey = item.index + ':' + S.raw;
    if (currentKey !== L.lastCurrent) {
      if (L.lastIndex !== item.index) {
        L.lastIndex = item.index;
        L.detailsDue = true;
        // the cards below still show the previous spectrum's details: say so until the new ones arrive
        for (const id of ['lab-meta', 'lab-neighbours']) {
          const card = document.getElementById(id);
          if (card && !card.classList.contains('stale')) setProps(id, { className: 'stale' });
        }
      }
      L.lastCurrent = currentKey;
      const current = { index: item.index, raw: S.raw, dataset: D.dataset, experiment: D.experiment,
        iteration: D.iteration, classes: D.classes.map((c) => c.name) };
      clearTimeout(L.currentTimer);
      L.currentTimer = setTimeout(() => {
        if (L.detailsDue) { L.detailsDue = false; setProps('lab-current', { data: current }); }
        if (current.raw) setProps('lab-raw-want', { data: current });
      }, L.restMs);
    }
    let commentOut = no;
    if (L.lastItem !== item.index) {
      L.lastItem = item.index;
      commentOut = entry && entry.comment ? entry.comment : '';
    }
    const st = S.status || { kind: 'idle', text: pending ? pending + ' label(s) to save' : 'every label is saved' };
    const statusClass = 'save-status ' + st.kind;
    const banner = S.banner ? { className: 'banner ' + S.banner.kind, text: S.banner.text } : { className: 'banner hidden', text: '' };
    O.perf.rendering = item.index;
    // persisted in sessionStorage (position, toggles, undo) only when it changed; exactly as JSON
    // round-trips it, or dcc.Store sees a difference every time and updates itself forever
    const storedText = JSON.stringify(Object.assign({}, S, { labels: null, status: null, banner: null }));
    let stored = no;
    if (storedText !== L.storedText) { L.storedText = storedText; stored = JSON.parse(storedText); }
    const values = [
      stored, figure, title, position, labelText, text,
      { width: (100 * oracle / Math.max(1, oracleTotal)).toFixed(1) + '%' },
      { width: (100 * estimation / Math.max(1, estimationTotal)).toFixed(1) + '%' },
      !(complete && pending === 0 && D.can_label && !S.submitted),
      S.submitted ? 'Submitted' : (complete ? (pending ? 'Saving…' : 'Submit batch') : 'Submit (' + (D.items.length - oracle - estimation) + ' left)'),
      probabilityRows(D, item, S), wantOut, { display: S.help ? 'flex' : 'none' },
      st.text, statusClass, banner.text, banner.className, commentOut, classes,
    ];
    // only what changed goes back to Dash: every changed prop costs a React render before the plot
    for (let i = 2; i < values.length; i++) {
      if (values[i] === no || i === 11 || i === 17) continue;  // want and comment decide for themselves
      const textOf = JSON.stringify(values[i]);
      if (L.prev[i] === textOf) values[i] = i === values.length - 1 ? values[i].map(() => no) : no;
      else L.prev[i] = textOf;
    }
    return values;
  }

  const NOUT = 19;  // number of outputs of label_render

  function labelRender(key, data, fluxDoc, saved, rawDoc, remote, relayout, clicks, stored) {
    const no = NO();
    const nothing = () => { const out = new Array(NOUT).fill(no); out[NOUT - 1] = (clicks || []).map(() => no); return out; };
    if (!data || !data.items) return nothing();
    if (!data.items.length) {
      if (data.waiting) {  // no batch yet: open it as soon as the experiment awaits labels
        O.sse.open([data.experiment], (type, event) => {
          if (type === 'status' && event.phase === 'AwaitingLabels') window.location.reload();
        });
      }
      return nothing();
    }
    const ids = triggeredIds();
    const fired = (name) => ids.some((id) => id.startsWith(name + '.'));
    if (!L.D || L.D.loaded_at !== data.loaded_at) {
      L.D = data;
      L.S = init(data, L.S && L.S.experiment === data.experiment && L.S.iteration === data.iteration ? L.S : stored);
      L.lastCurrent = null; L.lastIndex = null; L.lastWant = null; L.lastItem = null; L.xrange = null; L.figureKey = null;
      L.clicks = {};
      L.storedText = null;
      L.prev = [];
      const all = window.dash_clientside.callback_context.inputs_list;
      (all[all.length - 1] || []).forEach((entry) => { L.clicks[entry.id.key] = entry.value || 0; });
    }
    const D = L.D, S = L.S;
    if (fluxDoc && fluxDoc !== L.fluxStamp) {
      L.fluxStamp = fluxDoc;
      Object.entries(fluxDoc).forEach(([index, values]) => { L.flux[index] = values; });
    }
    const before = S.pos;
    if (L.keys.length && O.perf.keyAt !== null) O.perf.cbStart = performance.now();
    // every key pressed since the last run, in order (Dash may fold quick updates of lab-key into one)
    while (L.keys.length) handleKey(D, S, L.keys.shift());
    // a button press is a click count that grew (buttons appearing also "trigger", with no click)
    const inputs = window.dash_clientside.callback_context.inputs_list;
    const buttons = inputs[inputs.length - 1] || [];
    buttons.forEach((entry) => {
      const key = entry.id.key, count = entry.value || 0;
      const seen = L.clicks[key] || 0;
      L.clicks[key] = count;
      for (let c = seen; c < count; c++) {
        O.perf.keyAt = performance.now(); O.perf.key = key;
        handleKey(D, S, key);
      }
    });
    if (fired('lab-saved') && saved) handleSaved(D, S, saved);
    if (fired('lab-remote') && remote) handleRemote(D, S, remote);
    if (fired('lab-graph') && relayout) {  // zoom and pan re-place the line labels; resizes do not matter
      if (relayout['xaxis.autorange']) L.xrange = null;
      else if (relayout['xaxis.range[0]'] !== undefined) L.xrange = [relayout['xaxis.range[0]'], relayout['xaxis.range[1]']];
      else if (relayout['xaxis.range']) L.xrange = relayout['xaxis.range'].slice();
    }
    if (S.pos !== before) L.xrange = null;
    const out = render(D, S, rawDoc);
    O.perf.cbEnd = performance.now();
    return out;
  }

  // after each plot: record how long it took from the key press to the spectrum on screen
  function watchGraph() {
    const holder = document.getElementById('lab-graph');
    const gd = holder && holder.querySelector('.js-plotly-plot');
    if (!gd || gd._oraculumWatched || !gd.on) return;
    gd._oraculumWatched = true;
    gd.on('plotly_afterplot', () => {
      const meta = (gd.layout && gd.layout.meta) || {};
      O.perf.renders += 1;
      if (O.perf.keyAt !== null && meta.index !== O.perf.shown) {
        const started = O.perf.keyAt;
        O.perf.keyAt = null;
        const plotted = performance.now();
        const cb = O.perf.cbStart, cbEnd = O.perf.cbEnd;
        requestAnimationFrame(() => requestAnimationFrame(() => {  // two frames on: painted
          const painted = performance.now();
          O.perf.samples.push(painted - started);
          // where the time went: keydown -> callback starts -> ends -> Plotly has drawn -> painted
          O.perf.trace.push([cb - started, cbEnd - started, plotted - started, painted - started]);
          [O.perf.samples, O.perf.trace].forEach((list) => { if (list.length > 2000) list.splice(0, 1000); });
        }));
      }
      O.perf.shown = meta.index;
      holder.dataset.shown = meta.index;
    });
  }
  setInterval(watchGraph, 250);

  // ---- keyboard ------------------------------------------------------------------------------------
  let keyCount = 0;
  function sendKey(key) {
    if (L.keys.length < 200) L.keys.push(key);
    setProps('lab-key', { data: { key: key, n: ++keyCount } });
  }
  const COMMANDS = new Set(['ArrowLeft', 'ArrowRight', 'z', 's', 'f', 'r', '?', 'Escape', 'n']);
  document.addEventListener('keydown', (event) => {
    if (!document.getElementById('lab-root')) {
      if (event.key === '?' && document.getElementById('app-help')) {
        const help = document.getElementById('app-help');
        help.style.display = help.style.display === 'flex' ? 'none' : 'flex';
      }
      return;
    }
    const target = event.target;
    const typing = target && (target.tagName === 'INPUT' || target.tagName === 'TEXTAREA' || target.tagName === 'SELECT' ||
      target.isContentEditable);
    if (typing) {
      if (target.id === 'lab-comment' && event.key === 'Enter' && !event.shiftKey) {
        event.preventDefault();
        target.blur();
        sendKey('comment');
      } else if (event.key === 'Escape') {
        target.blur();
      }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key;
    const D = L.D;
    const isClass = !!(D && D.keys && D.keys[key]);
    if (key === 'c' && !isClass) {
      const comment = document.getElementById('lab-comment');
      if (comment) { event.preventDefault(); comment.focus(); }
      return;
    }
    const known = isClass || COMMANDS.has(key);
    if (!known) return;
    event.preventDefault();
    if (event.repeat && !(key === 'ArrowLeft' || key === 'ArrowRight')) return;  // a held key labels once
    O.perf.keyAt = performance.now();
    O.perf.key = key;
    sendKey(key);
  });
  // a narrower or wider plot places the line labels anew (after Plotly has resized the plot)
  let resizeTimer = null;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { if (L.D) sendKey('resize'); }, 200);
  });
  // buttons never keep the focus (Enter or space would press them again)
  document.addEventListener('mouseup', (event) => {
    const button = event.target && event.target.closest && event.target.closest('button.key-btn');
    if (button) setTimeout(() => button.blur(), 0);
  });

  // ---- the sky view: Aladin Lite needs the internet; probe before embedding ---------------------
  O.sky = function (url) {
    setProps('lab-sky-note', { children: 'checking whether Aladin Lite can be reached…' });
    fetchWithTimeout(url, { mode: 'no-cors', cache: 'no-store' }, 4000).then(() => {
      setProps('lab-sky-frame', { src: url, style: { display: 'block' } });
      setProps('lab-sky-note', { children: '' });
    }).catch(() => {
      setProps('lab-sky-frame', { style: { display: 'none' } });
      setProps('lab-sky-note', { children: 'Aladin Lite cannot be reached from this browser (offline?). ' +
        'The link above opens it when the internet is available.' });
    });
  };

  // ---- clientside callbacks -----------------------------------------------------------------------
  window.dash_clientside = Object.assign({}, window.dash_clientside, {
    oraculum: {
      label_render: labelRender,
      sky: function (clicks, current) {
        if (!clicks || !current || !current.sky) return NO();
        O.sky(current.sky);
        return NO();
      },
      experiments_live: function (names) {
        if (!names || !names.length) { O.sse.close(); return NO(); }
        const live = {};
        O.sse.open(names, (type, data) => {
          const name = data.experiment;
          if (type === 'progress') {
            const pct = data.fraction !== null && data.fraction !== undefined ? (100 * data.fraction).toFixed(0) + ' %' : '';
            live[name] = { fraction: data.fraction, text: [data.job, data.step, pct, data.message].filter((x) => x).join(' · ') };
            setProps('exp-live', { data: Object.assign({}, live) });
          } else if (type === 'label' && data.progress) {
            const p = data.progress;
            live[name] = { fraction: p.total ? p.labelled / p.total : null, text: 'labelling ' + p.text };
            setProps('exp-live', { data: Object.assign({}, live) });
          }
          if (['status', 'label', 'labels-submitted', 'suspended', 'resumed', 'created', 'deleted'].includes(type)) {
            clearTimeout(O.refreshTimer);  // the table itself comes from the server, at most every 0.8 s
            O.refreshTimer = setTimeout(() => setProps('exp-refresh', { data: Date.now() }), type === 'label' ? 800 : 300);
          }
        });
        return NO();
      },
      experiments_bars: function (live) {
        const outputs = window.dash_clientside.callback_context.outputs_list;
        const pick = (o) => (live || {})[o.id.name];
        const fills = outputs[0].map((o) => {
          const report = pick(o);
          if (!report || report.fraction === undefined || report.fraction === null) return NO();
          return { width: (100 * report.fraction).toFixed(1) + '%' };
        });
        const texts = outputs[1].map((o) => { const report = pick(o); return report ? report.text : NO(); });
        return [fills, texts];
      },
      close_events: function () { O.sse.close(); return NO(); },
    },
  });
})();
