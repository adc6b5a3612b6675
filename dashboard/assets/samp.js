/* oraculum dashboard: "Send to SAMP", the SAMP Web Profile spoken from the browser.
 *
 * The SAMP hub (TOPCAT's, SPLAT's, or astropy's) runs on the oracle's own machine, so only the
 * browser can reach it; the dashboard's server cannot. A send is:
 *   1. ask the API, through the dashboard's proxy, for a signed short-lived link to the spectrum
 *      or the candidate table and the complete SAMP message (GET .../share);
 *   2. point the link at the dashboard's public door <prefix>_oraculum/shared/... (the desktop
 *      tool fetches it from the address the browser uses, with no token: the signature is the
 *      permission);
 *   3. register with the hub's Web Profile (XML-RPC over HTTP POST to <hub>/: samp.webhub.ping,
 *      register, declareMetadata; once per page, the hub asks the user to accept "oraculum"),
 *      then samp.webhub.notifyAll, and say on the page who got it.
 * Every call has a timeout: a hub that is not running, or one that hangs, gives a message, never
 * a hang. The hub's address comes from ORACULUM_DASHBOARD_SAMP_HUB (http://127.0.0.1:21012).
 * Key: v on the labelling page sends the spectrum shown (unless a class uses v as its hotkey).
 */
(function () {
  'use strict';

  const O = (window.oraculum = window.oraculum || {});
  const NO = () => window.dash_clientside.no_update;
  const TIMEOUT_MS = { ping: 3000, register: 120000, call: 10000, share: 30000 };
  const METADATA = { 'samp.name': 'oraculum', 'samp.description.text':
    'oraculum dashboard: active learning on spectra (sends spectra and candidate tables)' };

  // ---- XML-RPC: the three types SAMP uses (string, list, map), and the answers a hub gives ----
  function escapeXml(text) {
    return String(text).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  }
  function encode(value) {
    if (Array.isArray(value)) {
      return '<array><data>' + value.map((v) => '<value>' + encode(v) + '</value>').join('') + '</data></array>';
    }
    if (value !== null && typeof value === 'object') {
      return '<struct>' + Object.keys(value).map((k) => '<member><name>' + escapeXml(k) + '</name><value>' +
        encode(value[k]) + '</value></member>').join('') + '</struct>';
    }
    return '<string>' + escapeXml(value === null || value === undefined ? '' : value) + '</string>';
  }
  function methodCall(method, params) {
    return '<?xml version="1.0"?><methodCall><methodName>' + method + '</methodName><params>' +
      params.map((p) => '<param><value>' + encode(p) + '</value></param>').join('') + '</params></methodCall>';
  }
  function childElements(node) { return Array.prototype.filter.call(node.childNodes, (n) => n.nodeType === 1); }
  function decode(valueNode) {
    const typed = childElements(valueNode)[0];
    if (!typed) return valueNode.textContent;  // <value>text</value> is a string
    switch (typed.tagName) {
      case 'int': case 'i4': case 'i8': case 'double': return Number(typed.textContent);
      case 'boolean': return typed.textContent.trim() === '1';
      case 'nil': return null;
      case 'array': {
        const data = childElements(typed)[0];
        return data ? childElements(data).map(decode) : [];
      }
      case 'struct': {
        const out = {};
        childElements(typed).forEach((member) => {
          const parts = childElements(member);
          const name = parts.find((p) => p.tagName === 'name');
          const value = parts.find((p) => p.tagName === 'value');
          if (name && value) out[name.textContent] = decode(value);
        });
        return out;
      }
      default: return typed.textContent;
    }
  }

  class SampError extends Error {
    constructor(message, kind) { super(message); this.kind = kind; }
  }

  const timed = (url, init, ms) => O.fetchWithTimeout(url, init, ms);  // from oraculum.js

  /* One XML-RPC call of the hub; rejects with a SampError that says what to do. */
  function call(hub, method, params, ms) {
    return timed(hub + '/', { method: 'POST', headers: { 'Content-Type': 'text/xml' }, body: methodCall(method, params),
      credentials: 'omit', cache: 'no-store' }, ms).catch((error) => {
      if (error && error.name === 'AbortError') {
        throw new SampError(method === 'samp.webhub.register'
          ? 'the SAMP hub did not let oraculum register within ' + ms / 1000 + ' s (accept it in the hub\'s dialog)'
          : 'the SAMP hub at ' + hub + ' did not answer within ' + ms / 1000 + ' s', 'timeout');
      }
      throw new SampError('no SAMP hub answers at ' + hub + ': start TOPCAT or SPLAT (each runs one) and try again', 'down');
    }).then((response) => response.text().then((text) => {
      if (!response.ok) throw new SampError('the SAMP hub at ' + hub + ' answered HTTP ' + response.status, 'http');
      const doc = new DOMParser().parseFromString(text, 'text/xml');
      const fault = doc.querySelector('methodResponse > fault > value');
      if (fault) {
        const detail = decode(fault) || {};
        throw new SampError('the SAMP hub refused ' + method + ': ' + (detail.faultString || 'no reason given'), 'fault');
      }
      const value = doc.querySelector('methodResponse > params > param > value');
      if (!value) throw new SampError('the answer of ' + hub + ' is not XML-RPC: is that a SAMP hub?', 'http');
      return decode(value);
    }));
  }

  // ---- the registration: once per page and hub; the hub asks the user the first time ----------
  const Session = { hub: null, key: null, pending: null };

  function register(hub, status) {
    if (Session.hub === hub && Session.key) return Promise.resolve(Session.key);
    if (Session.hub === hub && Session.pending) return Session.pending;
    Session.hub = hub; Session.key = null;
    Session.pending = call(hub, 'samp.webhub.ping', [], TIMEOUT_MS.ping).then(() => {
      status('waiting for the SAMP hub: accept "oraculum" in its dialog…', 'pending');
      return call(hub, 'samp.webhub.register', [{ 'samp.name': METADATA['samp.name'] }], TIMEOUT_MS.register);
    }).then((answer) => {
      const key = answer && answer['samp.private-key'];
      if (!key) throw new SampError('the SAMP hub registered oraculum without a private key', 'fault');
      return call(hub, 'samp.webhub.declareMetadata', [key, METADATA], TIMEOUT_MS.call).then(() => {
        Session.key = key;
        return key;
      });
    }).finally(() => { Session.pending = null; });
    return Session.pending;
  }

  function notifyAll(hub, message, status) {
    const once = () => register(hub, status).then((key) =>
      call(hub, 'samp.webhub.notifyAll', [key, message], TIMEOUT_MS.call).then((ids) => ({ key: key, ids: ids })));
    return once().catch((error) => {
      if (error.kind !== 'fault' || !Session.key) throw error;
      Session.key = null;  // the hub restarted or dropped us meanwhile: register once more
      return once();
    });
  }

  function names(hub, key, ids) {
    return Promise.all(ids.map((id) => call(hub, 'samp.webhub.getMetadata', [key, id], TIMEOUT_MS.call)
      .then((meta) => (meta && meta['samp.name']) || id, () => id)));
  }

  window.addEventListener('pagehide', () => {
    if (!Session.key) return;
    try {
      fetch(Session.hub + '/', { method: 'POST', keepalive: true, headers: { 'Content-Type': 'text/xml' },
        body: methodCall('samp.webhub.unregister', [Session.key]) }).catch(() => {});
    } catch (e) { /* leaving anyway */ }
    Session.key = null;
  });

  // ---- a send: the signed link from the API, the message to the hub, the answer on the page -----
  const TOOLS = { 'spectrum.load.ssa-generic': 'spectra (start SPLAT or TOPCAT)',
    'table.load.votable': 'tables (start TOPCAT or Aladin)' };

  function share(apiPath) {
    return timed(O.base() + '_oraculum/api/v1' + apiPath, { credentials: 'same-origin', cache: 'no-store' },
      TIMEOUT_MS.share).catch((error) => {
      throw new SampError(error && error.name === 'AbortError' ? 'the dashboard did not answer in time'
        : 'the dashboard cannot be reached: ' + error, 'share');
    }).then((response) => response.json().catch(() => null).then((body) => {
      if (!response.ok) {
        const detail = body && body.detail;
        throw new SampError('no link: ' + (typeof detail === 'string' ? detail : response.status + ' ' + response.statusText),
          'share');
      }
      return body;
    }));
  }

  /* The message of a share answer, its link pointed at the dashboard's own address. */
  function message(answer) {
    const url = new URL(O.base() + '_oraculum/' + answer.path, window.location.href).href;
    const params = Object.assign({}, answer.params, { url: url });
    if (params.meta) params.meta = Object.assign({}, params.meta, { 'Access.Reference': url });
    return { 'samp.mtype': answer.mtype, 'samp.params': params };
  }

  function send(statusId, hub, apiPath, what) {
    const status = (text, kind) => {
      if (O.setProps) O.setProps(statusId, { children: text, className: 'samp-status ' + kind });
    };
    O.samp.last = null;
    let sent = null;
    return share(apiPath).then((answer) => {
      sent = message(answer);
      status('connecting to the SAMP hub at ' + hub + '…', 'pending');
      return notifyAll(hub, sent, status);
    }).then((result) => {
      const ids = result.ids || [];
      if (!ids.length) {
        throw new SampError('the SAMP hub is running, but no application connected to it accepts ' +
          (TOOLS[sent['samp.mtype']] || sent['samp.mtype']), 'nobody');
      }
      return names(hub, result.key, ids).then((who) => {
        status('sent ' + what + ' to ' + who.join(', '), 'ok');
        O.samp.last = { ok: true, to: who, message: sent };
      });
    }).catch((error) => {
      status(error instanceof SampError ? error.message : 'SAMP failed: ' + error, 'error');
      O.samp.last = { ok: false, kind: error && error.kind, message: error && error.message };
    });
  }

  O.samp = { call: call, encode: methodCall, decode: decode, session: Session, send: send, last: null };

  // ---- the buttons (clientside callbacks) and the key ------------------------------------------
  window.dash_clientside = Object.assign({}, window.dash_clientside, {
    oraculum_samp: {
      send_spectrum: function (clicks, config) {
        const L = O.label;
        const D = L && L.D, S = L && L.S;
        if (!clicks || !config) return NO();
        if (!D || !S || !D.items || !D.items.length) return 'no spectrum is shown yet';
        const item = D.items[S.pos];
        const variant = S.raw ? 'raw' : 'preprocessed';
        send('lab-samp-status', config.hub, '/datasets/' + encodeURIComponent(D.dataset) + '/spectra/' + item.index +
          '/share?variant=' + variant + '&format=fits', 'spectrum #' + item.index + ' (' + variant + ')');
        return 'asking for a link to spectrum #' + item.index + '…';
      },
      send_table: function (clicks, iteration, init, config) {
        if (!clicks || !config || !init) return NO();
        if (iteration === null || iteration === undefined) return 'choose an iteration first';
        send('perf-samp-status', config.hub, '/experiments/' + encodeURIComponent(init.experiment) + '/iterations/' +
          iteration + '/candidates/share', 'the candidates of iteration ' + iteration);
        return 'asking for a link to the candidates of iteration ' + iteration + '…';
      },
    },
  });

  document.addEventListener('keydown', (event) => {
    if (event.key !== 'v' || event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    if (!document.getElementById('lab-root')) return;
    const target = event.target;
    if (target && (target.tagName === 'INPUT' || target.tagName === 'TEXTAREA' || target.tagName === 'SELECT' ||
      target.isContentEditable)) return;
    const D = O.label && O.label.D;
    if (D && D.keys && D.keys.v) return;  // a class with the hotkey v labels instead
    const button = document.getElementById('lab-samp');
    if (!button) return;
    event.preventDefault();
    button.click();
  });
})();
