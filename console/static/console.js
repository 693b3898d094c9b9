// ledgerd console: a single page over the public REST API.
//
// Every value the API returns is put in the page as text (text nodes,
// textContent), never as HTML. The bearer token is kept in this tab's
// sessionStorage and sent only in the Authorization header.
'use strict';

(function () {
  const TOKEN_KEY = 'ledgerd.token';
  const main = document.getElementById('main');
  const statusRegion = document.getElementById('status');
  let page = new AbortController(); // aborted when the page changes
  let firstRoute = true;
  let routeStart = 0; // when the page began: 0, the navigation's start, for the first

  // loaded records, on main, how long the page took to show its data,
  // from the navigation's start or the click that changed the page.
  function loaded() {
    main.dataset.loadMs = String(Math.round(performance.now() - routeStart));
  }

  // ---- token ----------------------------------------------------------

  // A link made by `ledgerd console` carries the token in the fragment,
  // which browsers never send: keep it in this tab and take it out of the
  // address bar and the history.
  if (location.hash.startsWith('#token=')) {
    const t = decodeURIComponent(location.hash.slice('#token='.length));
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    history.replaceState(null, '', location.pathname + location.search + '#/queue');
  }

  function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }

  // claims reads the token's payload for display only: the server checks
  // the token on every request.
  function claims() {
    try {
      const part = token().split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      return JSON.parse(atob(part));
    } catch (e) {
      return {};
    }
  }

  // ---- DOM helpers ----------------------------------------------------

  // h makes an element: props are properties (className, id, ...) or, for
  // names with a dash, attributes; children are nodes or strings, which
  // become text.
  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.includes('-') || k === 'for' || k === 'role' || k === 'scope') el.setAttribute(k, String(v));
      else el[k] = v;
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function mono(text) { return h('span', { className: 'mono' }, text); }

  // when shows a time in the browser's time zone, as 2026-01-02 15:04:05
  // (formatted by hand: the first toLocaleString of a page costs tens of
  // milliseconds), with the exact RFC 3339 time as its title.
  function when(iso) {
    if (!iso) return '—';
    const d = new Date(iso);
    if (isNaN(d)) return iso;
    const p = (n) => String(n).padStart(2, '0');
    const text = d.getFullYear() + '-' + p(d.getMonth() + 1) + '-' + p(d.getDate()) + ' ' + p(d.getHours()) + ':' + p(d.getMinutes()) + ':' + p(d.getSeconds());
    return h('time', { dateTime: iso, title: iso }, text);
  }

  function message(kind, ...children) {
    return h('div', { className: 'msg ' + kind, role: kind === 'error' ? 'alert' : 'status' }, ...children);
  }

  function announce(text) {
    statusRegion.textContent = '';
    statusRegion.textContent = text;
  }

  function detailOf(res) {
    if (res.data && typeof res.data.detail === 'string') return res.data.detail;
    return 'The server answered ' + res.status;
  }

  function notesOf(hf) {
    if (hf.engineer_notes === null || hf.notes_erased) return h('span', { className: 'erased' }, '(notes erased)');
    return hf.engineer_notes;
  }

  // ---- API ------------------------------------------------------------

  async function api(method, path, body, signal) {
    const headers = { Authorization: 'Bearer ' + token(), Accept: 'application/json' };
    const init = { method, headers, cache: 'no-store', signal };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      if (signal && signal.aborted) throw e;
      return { ok: false, status: 0, data: { detail: 'Cannot reach the server: ' + e.message }, next: null };
    }
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
    if (res.status === 401) noteUnauthorized(data);
    return { ok: res.ok, status: res.status, data, next: nextLink(res.headers.get('Link')) };
  }

  // nextLink returns the path of a Link header's rel="next", if any.
  function nextLink(link) {
    if (!link) return null;
    const m = /<([^>]+)>\s*;\s*rel="next"/.exec(link);
    return m && m[1].startsWith('/') ? m[1] : null;
  }

  function noteUnauthorized(data) {
    const detail = data && data.detail ? data.detail : 'Not signed in';
    sessionStorage.setItem('ledgerd.signin-detail', detail);
  }

  function sessionPath(id) { return '/ai-sessions/' + encodeURIComponent(id); }

  function withAsOf(path, asOf) {
    if (!asOf) return path;
    return path + (path.includes('?') ? '&' : '?') + 'as_of=' + encodeURIComponent(asOf);
  }

  // ---- routing --------------------------------------------------------

  function parseHash() {
    const raw = location.hash.replace(/^#\/?/, '');
    const [p, q] = raw.split('?');
    return { parts: p.split('/').filter(Boolean), query: new URLSearchParams(q || '') };
  }

  function go(hash) {
    if (location.hash === hash) route(); else location.hash = hash;
  }

  function route() {
    page.abort();
    page = new AbortController();
    routeStart = firstRoute ? 0 : performance.now();
    delete main.dataset.loadMs;
    const signedIn = token() !== '';
    document.getElementById('nav').hidden = !signedIn;
    document.getElementById('sign-out').hidden = !signedIn;
    const c = claims();
    document.getElementById('who').textContent = signedIn
      ? 'Signed in: ' + (c.role || '?') + ', user ' + (c.sub || '?') + ', team ' + (c.team_id || '?')
      : '';
    main.replaceChildren();
    const { parts, query } = parseHash();
    const name = signedIn ? parts[0] || 'queue' : 'signin';
    for (const a of document.querySelectorAll('nav a')) {
      if (a.id === 'nav-' + name) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
    }
    switch (name) {
      case 'session': sessionPage(parts[1] || '', query.get('as_of') || ''); break;
      case 'audit': auditPage(query.get('session') || ''); break;
      case 'signin': signInPage(); break;
      default: queuePage(query.get('as_of') || '');
    }
    if (!firstRoute) main.focus();
    firstRoute = false;
  }

  window.addEventListener('hashchange', route);
  document.getElementById('sign-out').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    announce('Signed out');
    go('#/');
  });

  // ---- sign in --------------------------------------------------------

  function signInPage() {
    document.title = 'Sign in · ledgerd console';
    const input = h('textarea', { id: 'token-input', name: 'token', autocomplete: 'off', required: true, 'aria-describedby': 'token-hint' });
    const out = h('div', { id: 'signin-result' });
    const earlier = sessionStorage.getItem('ledgerd.signin-detail');
    sessionStorage.removeItem('ledgerd.signin-detail');
    if (earlier) out.append(message('error', earlier));
    const form = h('form', { id: 'signin-form' },
      h('label', { for: 'token-input' }, 'Bearer token'),
      input,
      h('p', { id: 'token-hint', className: 'hint' },
        'Paste a token (ledgerd token prints one; ledgerd console prints a link that signs in). ',
        'It is kept in this tab only and sent only in the Authorization header.'),
      h('button', { type: 'submit', id: 'signin-button' }, 'Sign in'));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const t = input.value.trim();
      out.replaceChildren();
      if (t.split('.').length !== 3) {
        out.append(message('error', 'That is not a token: a token has three parts separated by dots.'));
        input.focus();
        return;
      }
      sessionStorage.setItem(TOKEN_KEY, t);
      const res = await api('GET', '/ai-sessions/queue?limit=1');
      if (res.status === 401) {
        sessionStorage.removeItem(TOKEN_KEY);
        sessionStorage.removeItem('ledgerd.signin-detail');
        out.append(message('error', 'The server refused the token: ' + detailOf(res)));
        input.focus();
        return;
      }
      announce('Signed in');
      go('#/queue');
    });
    main.append(h('h1', {}, 'Sign in'), form, out);
    input.focus();
  }

  // ---- queue ----------------------------------------------------------

  // queueOrder compares handoffs as the queue lists them: escalations
  // first, then higher priority, then oldest, then by id.
  const RANK = { low: 0, normal: 1, high: 2, urgent: 3 };
  function queueClass(hf) { return (3 - RANK[hf.priority]) + (hf.intent === 'escalate' ? 0 : 4); }
  function queueOrder(a, b) {
    return queueClass(a) - queueClass(b) ||
      (Date.parse(a.created_at) - Date.parse(b.created_at)) ||
      (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  }

  function queuePage(asOf) {
    document.title = 'Queue · ledgerd console';
    const signal = page.signal;
    const live = h('p', { id: 'live', className: 'live', 'data-state': 'connecting' }, asOf ? '' : 'Connecting…');
    const result = h('div', { id: 'pickup-result', 'aria-live': 'assertive' });
    const tbody = h('tbody', { id: 'queue-rows' });
    const caption = h('caption', { id: 'queue-caption' }, 'Loading…');
    const more = h('button', { type: 'button', className: 'secondary', id: 'queue-more', hidden: true }, 'Load more');
    const asOfInput = h('input', { id: 'queue-as-of', type: 'text', value: asOf, placeholder: 'e.g. ' + new Date().toISOString(), 'aria-describedby': 'queue-as-of-hint', size: 32 });
    const asOfForm = h('form', { className: 'row', id: 'queue-as-of-form' },
      h('div', {}, h('label', { for: 'queue-as-of' }, 'Show the queue as of'), asOfInput),
      h('button', { type: 'submit' }, 'Show'),
      asOf ? h('button', { type: 'button', className: 'secondary', id: 'queue-live' }, 'Back to live') : null);
    asOfForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const v = asOfInput.value.trim();
      go(v ? '#/queue?as_of=' + encodeURIComponent(v) : '#/queue');
    });
    const backLive = asOfForm.querySelector('#queue-live');
    if (backLive) backLive.addEventListener('click', () => go('#/queue'));

    main.append(
      h('h1', {}, asOf ? 'Queue as of ' + asOf : 'Queue'),
      live,
      asOfForm,
      h('p', { id: 'queue-as-of-hint', className: 'hint' }, 'An RFC 3339 time, such as 2026-01-02T15:04:05Z: the queue as it stood then.'),
      result,
      h('table', { id: 'queue' },
        caption,
        h('thead', {}, h('tr', {}, ['Intent', 'Priority', 'Session', 'Notes', 'Created', 'Created by', 'Action'].map((t) => h('th', { scope: 'col' }, t)))),
        tbody),
      more);

    const model = { rows: [], next: null, buffer: null };
    const trs = new Map(); // handoff id -> tr

    function rowOf(hf) {
      const action = asOf
        ? h('td', { 'data-label': 'Action' }, '—')
        : h('td', { 'data-label': 'Action' }, pickUpButton(hf));
      return h('tr', { 'data-handoff-id': hf.id, 'data-session-id': hf.session_id },
        h('td', { 'data-label': 'Intent' }, h('span', { className: 'tag ' + hf.intent }, hf.intent)),
        h('td', { 'data-label': 'Priority' }, hf.priority),
        h('td', { 'data-label': 'Session' }, h('a', { href: '#/session/' + hf.session_id, className: 'mono' }, hf.session_id)),
        h('td', { 'data-label': 'Notes', className: 'notes' }, notesOf(hf)),
        h('td', { 'data-label': 'Created' }, when(hf.created_at)),
        h('td', { 'data-label': 'Created by' }, mono(hf.created_by)),
        action);
    }

    function pickUpButton(hf) {
      const b = h('button', { type: 'button', className: 'pick-up', 'aria-label': 'Pick up the handoff of session ' + hf.session_id }, 'Pick Up');
      b.addEventListener('click', () => pickUp(hf, b));
      return b;
    }

    async function pickUp(hf, button) {
      button.disabled = true;
      result.replaceChildren(message('', 'Picking up…'));
      const res = await api('POST', sessionPath(hf.session_id) + '/handoffs/' + encodeURIComponent(hf.id) + '/claim');
      if (res.ok) {
        result.replaceChildren(h('div', { className: 'msg ok', role: 'status', 'data-outcome': 'won' },
          'You picked up the handoff of session ', h('a', { href: '#/session/' + hf.session_id, className: 'mono' }, hf.session_id), '.'));
        apply(res.data);
        return;
      }
      button.disabled = false;
      if (res.status === 409 && res.data && res.data.claimed_by) {
        result.replaceChildren(h('div', { className: 'msg error', role: 'alert', 'data-outcome': 'lost' },
          detailOf(res) + ': picked up by ', h('span', { className: 'mono', id: 'winner' }, res.data.claimed_by),
          ' at ', when(res.data.claimed_at), '.'));
        return;
      }
      result.replaceChildren(h('div', { className: 'msg error', role: 'alert', 'data-outcome': 'refused' }, detailOf(res)));
    }

    function setCaption() {
      caption.textContent = model.rows.length + ' open handoff' + (model.rows.length === 1 ? '' : 's') +
        ' shown' + (model.next ? ', more to load' : '') + '; escalations first, then higher priority, then oldest.';
      more.hidden = !model.next;
    }

    // apply puts a handoff's new state in the list: a session has at most
    // one open handoff, which is in the queue; a closed one is not.
    function apply(hf) {
      for (let i = model.rows.length - 1; i >= 0; i--) {
        const r = model.rows[i];
        if (r.id === hf.id || (hf.status === 'open' && r.session_id === hf.session_id)) remove(i);
      }
      if (hf.status !== 'open') { setCaption(); return; }
      // Past the last row loaded, it shows when its page is loaded.
      if (model.next && model.rows.length && queueOrder(hf, model.rows[model.rows.length - 1]) > 0) { setCaption(); return; }
      let i = 0;
      while (i < model.rows.length && queueOrder(model.rows[i], hf) < 0) i++;
      const tr = rowOf(hf);
      tbody.insertBefore(tr, tbody.children[i] || null);
      model.rows.splice(i, 0, hf);
      trs.set(hf.id, tr);
      setCaption();
    }

    function remove(i) {
      const r = model.rows[i];
      const tr = trs.get(r.id);
      model.rows.splice(i, 1);
      trs.delete(r.id);
      if (!tr) return;
      if (tr.contains(document.activeElement)) {
        const next = tr.nextElementSibling || tr.previousElementSibling;
        const target = next && next.querySelector('button, a');
        (target || main).focus();
      }
      tr.remove();
    }

    function append(list) {
      for (const hf of list) {
        if (trs.has(hf.id)) continue;
        const tr = rowOf(hf);
        tbody.append(tr);
        model.rows.push(hf);
        trs.set(hf.id, tr);
      }
    }

    // Loads that replace the list are numbered: one that answers after a
    // later one has been shown is dropped.
    let started = 0;
    let shown = 0;
    async function load(path, replace) {
      const gen = replace ? ++started : shown;
      const res = await api('GET', path, undefined, signal);
      if (signal.aborted || gen < shown) return false;
      if (replace) shown = gen;
      if (!res.ok) {
        result.replaceChildren(message('error', detailOf(res)));
        caption.textContent = 'Could not load the queue.';
        return false;
      }
      if (replace) {
        model.rows = [];
        trs.clear();
        tbody.replaceChildren();
      }
      append(res.data);
      model.next = res.next;
      setCaption();
      if (replace && !main.dataset.loadMs) loaded();
      return true;
    }

    more.addEventListener('click', async () => {
      if (!model.next) return;
      more.disabled = true;
      const before = model.rows.length;
      await load(model.next, false).catch(() => {});
      more.disabled = false;
      const first = tbody.children[before];
      const b = first && first.querySelector('button, a');
      if (b) b.focus();
    });

    if (asOf) {
      live.textContent = 'As of ' + asOf + ': live updates paused.';
      live.dataset.state = 'past';
      load(withAsOf('/ai-sessions/queue', asOf), true).catch(() => {});
      return;
    }
    // The queue shows at once; once the stream is ready, it is loaded
    // again, and the changes streamed meanwhile applied to it, so that
    // no change between the two is missed.
    model.buffer = [];
    load('/ai-sessions/queue', true).catch(() => {});
    followQueue(signal, {
      ready: async () => {
        model.buffer = [];
        const focused = document.activeElement && document.activeElement.closest && document.activeElement.closest('tr');
        const focusedID = focused ? focused.dataset.handoffId : null;
        const ok = await load('/ai-sessions/queue', true).catch(() => false);
        const buffered = model.buffer || [];
        model.buffer = null;
        if (ok) for (const hf of buffered) apply(hf);
        const again = focusedID && trs.get(focusedID);
        if (again) (again.querySelector('button') || again.querySelector('a')).focus();
      },
      handoff: (hf) => {
        if (model.buffer) model.buffer.push(hf); else apply(hf);
      },
      state: (state, text) => {
        live.dataset.state = state;
        live.textContent = text;
      },
    });
  }

  // followQueue reads GET /ai-sessions/queue/stream (server-sent events,
  // read with fetch so that the token goes in a header) until signal is
  // aborted, connecting again after a failure, 1 to 10 seconds later.
  function followQueue(signal, on) {
    let delay = 1000;
    (async () => {
      while (!signal.aborted) {
        try {
          on.state('connecting', 'Connecting…');
          const res = await fetch('/ai-sessions/queue/stream', {
            headers: { Authorization: 'Bearer ' + token(), Accept: 'text/event-stream' },
            cache: 'no-store',
            signal,
          });
          if (!res.ok) {
            let data = null;
            try { data = await res.json(); } catch (e) { data = null; }
            const detail = data && data.detail ? data.detail : 'The server answered ' + res.status;
            on.state('error', 'Live updates stopped: ' + detail);
            if (res.status === 401 || res.status === 403) return;
          } else {
            delay = 1000;
            const ended = await readEvents(res.body, signal, (event, data) => {
              if (event === 'ready') {
                on.state('live', 'Live: changes show as they happen.');
                on.ready(data);
              } else if (event === 'handoff') {
                on.handoff(data.handoff);
              } else if (event === 'error') {
                on.state('error', 'Live updates interrupted: ' + data.detail + ' Reconnecting…');
              }
            });
            if (signal.aborted) return;
            if (ended !== 'error') on.state('error', 'Live updates interrupted. Reconnecting…');
          }
        } catch (e) {
          if (signal.aborted) return;
          on.state('error', 'Live updates interrupted. Reconnecting…');
        }
        await new Promise((resolve) => {
          const t = setTimeout(resolve, delay);
          signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
        });
        delay = Math.min(delay * 2, 10000);
      }
    })();
  }

  // readEvents parses a text/event-stream body, calling on for each event
  // with its name and its data as JSON; it returns when the body ends,
  // 'error' if the last event was an error event.
  async function readEvents(body, signal, on) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    let last = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done || signal.aborted) return last;
      buf += value.replace(/\r\n?/g, '\n');
      let end;
      while ((end = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        let event = 'message';
        const data = [];
        for (const line of block.split('\n')) {
          if (line.startsWith(':')) continue;
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          const val = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
          if (field === 'event') event = val;
          else if (field === 'data') data.push(val);
        }
        if (!data.length) continue;
        let parsed;
        try { parsed = JSON.parse(data.join('\n')); } catch (e) { continue; }
        last = event;
        await on(event, parsed);
      }
    }
  }

  // ---- session --------------------------------------------------------

  const UUID_RE = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

  function sessionPage(id, asOf) {
    document.title = (id ? 'Session ' + id : 'Session') + ' · ledgerd console';
    const signal = page.signal;
    const idInput = h('input', { id: 'session-id', type: 'text', value: id, size: 40, required: true, autocomplete: 'off' });
    const asOfInput = h('input', { id: 'session-as-of', type: 'text', value: asOf, size: 32, placeholder: 'e.g. ' + new Date().toISOString(), 'aria-describedby': 'session-as-of-hint' });
    const form = h('form', { id: 'session-form' },
      h('div', { className: 'row' },
        h('div', {}, h('label', { for: 'session-id' }, 'Session id'), idInput),
        h('div', {}, h('label', { for: 'session-as-of' }, 'As of'), asOfInput),
        h('button', { type: 'submit' }, 'Show'),
        asOf ? h('button', { type: 'button', className: 'secondary', id: 'session-now' }, 'Now') : null),
      h('p', { id: 'session-as-of-hint', className: 'hint' }, 'Leave "As of" empty for now, or give an RFC 3339 time such as 2026-01-02T15:04:05Z to see the session and the queue as they stood then.'));
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const sid = idInput.value.trim();
      const at = asOfInput.value.trim();
      go('#/session/' + encodeURIComponent(sid) + (at ? '?as_of=' + encodeURIComponent(at) : ''));
    });
    const now = form.querySelector('#session-now');
    if (now) now.addEventListener('click', () => go('#/session/' + encodeURIComponent(id)));
    main.append(h('h1', {}, id ? 'Session ' + id + (asOf ? ' as of ' + asOf : '') : 'Session'), form);
    if (!id) { idInput.focus(); return; }
    if (!UUID_RE.test(id)) {
      main.append(message('error', 'A session id is a UUID, such as 4f1c1f0e-2b1a-4c8e-9a53-0d8f5d0b7c21.'));
      return;
    }
    main.append(h('p', {},
      h('a', { href: withAsOf('#/queue', asOf || new Date().toISOString()), id: 'queue-then' }, asOf ? 'The queue as of this moment' : 'The queue as of now, frozen'),
      ' · ',
      h('a', { href: '#/audit?session=' + encodeURIComponent(id) }, 'Erase this session’s notes')));

    // Handoffs.
    const hbody = h('tbody', { id: 'history-rows' });
    const hmore = h('button', { type: 'button', className: 'secondary', hidden: true, id: 'history-more' }, 'Load more');
    const hout = h('div', { id: 'history-result' });
    main.append(h('h2', { id: 'handoffs-heading' }, 'Handoffs'), hout,
      h('table', { id: 'history', 'aria-labelledby': 'handoffs-heading' },
        h('caption', {}, 'Newest first'),
        h('thead', {}, h('tr', {}, ['Intent', 'Priority', 'Status', 'Notes', 'Created', 'Created by', 'Claimed by', 'Claimed at'].map((t) => h('th', { scope: 'col' }, t)))),
        hbody),
      hmore);
    let next = null;
    async function loadHistory(path) {
      const res = await api('GET', path, undefined, signal);
      if (signal.aborted) return;
      if (!res.ok) { hout.replaceChildren(message('error', detailOf(res))); return; }
      for (const hf of res.data) {
        hbody.append(h('tr', { 'data-handoff-id': hf.id, 'data-status': hf.status },
          h('td', { 'data-label': 'Intent' }, h('span', { className: 'tag ' + hf.intent }, hf.intent)),
          h('td', { 'data-label': 'Priority' }, hf.priority),
          h('td', { 'data-label': 'Status', className: 'status-cell' }, hf.status),
          h('td', { 'data-label': 'Notes', className: 'notes' }, notesOf(hf)),
          h('td', { 'data-label': 'Created' }, when(hf.created_at)),
          h('td', { 'data-label': 'Created by' }, mono(hf.created_by)),
          h('td', { 'data-label': 'Claimed by' }, hf.claimed_by ? mono(hf.claimed_by) : '—'),
          h('td', { 'data-label': 'Claimed at' }, when(hf.claimed_at))));
      }
      if (!res.data.length && !hbody.children.length) hout.replaceChildren(message('', asOf ? 'No handoffs at that moment.' : 'No handoffs.'));
      next = res.next;
      hmore.hidden = !next;
    }
    hmore.addEventListener('click', () => { if (next) loadHistory(next).catch(() => {}); });
    const history = loadHistory(withAsOf(sessionPath(id) + '/handoffs', asOf)).catch(() => {});

    // Timeline.
    const tout = h('div', { id: 'timeline-result' });
    main.append(h('h2', { id: 'timeline-heading' }, 'Event timeline'),
      h('p', { className: 'hint' }, 'Every event of the session in order, with the session’s state after it. Auditor, admin or owner.'),
      tout);
    const events = (async () => {
      const res = await api('GET', sessionPath(id) + '/events', undefined, signal);
      if (signal.aborted) return;
      if (!res.ok) { tout.replaceChildren(message('error', detailOf(res))); return; }
      const cut = asOf ? Date.parse(asOf) : NaN;
      const shown = isNaN(cut) ? res.data : res.data.filter((e) => Date.parse(e.recorded_at) <= cut);
      if (!shown.length) { tout.replaceChildren(message('', 'No events' + (asOf ? ' at that moment.' : '.'))); return; }
      tout.replaceChildren(timeline(shown, res.data.length - shown.length));
    })().catch(() => {});
    Promise.all([history, events]).then(() => { if (!signal.aborted) loaded(); });
  }

  // timeline renders events with the session's state after each, folded
  // here from the events as the ledger folds them.
  function timeline(events, hidden) {
    const state = { holder: null, handoffs: new Map() };
    // An erasure also takes the client addresses out of the metadata.
    const erasedEver = events.some((e) => e.type === 'SessionDataErased');
    const body = h('tbody', { id: 'timeline-rows' });
    for (const e of events) {
      const d = e.data || {};
      const m = e.metadata || {};
      let what = null;
      switch (e.type) {
        case 'HandoffParked':
        case 'HandoffEscalated':
          state.handoffs.set(d.handoff_id, {
            intent: e.type === 'HandoffParked' ? 'park' : 'escalate',
            priority: d.priority, status: 'open', erased: false,
          });
          state.holder = d.created_by || state.holder;
          what = d.engineer_notes === null || d.notes_erased === true ? h('span', { className: 'erased' }, '(notes erased)') : d.engineer_notes;
          break;
        case 'HandoffClaimed': {
          const hf = state.handoffs.get(d.handoff_id);
          if (hf) { hf.status = 'claimed'; hf.claimedBy = d.claimed_by; }
          state.holder = d.claimed_by || state.holder;
          break;
        }
        case 'HandoffWithdrawn': {
          const hf = state.handoffs.get(d.handoff_id);
          if (hf) hf.status = 'withdrawn';
          break;
        }
        case 'SessionDataErased':
          for (const hf of state.handoffs.values()) hf.erased = true;
          what = d.reason ? 'Reason: ' + d.reason : null;
          break;
        default:
          what = '(an event type this console does not know)';
      }
      const lines = [h('li', {}, 'holder ', state.holder ? mono(state.holder) : '—')];
      for (const [hid, hf] of state.handoffs) {
        lines.push(h('li', {}, mono(hid), ': ' + hf.status + ' (' + hf.intent + ', ' + hf.priority + ')',
          hf.claimedBy ? [' by ', mono(hf.claimedBy)] : null,
          hf.erased ? h('span', { className: 'erased' }, ', notes erased') : null));
      }
      body.append(h('tr', { 'data-position': e.position, 'data-type': e.type },
        h('td', { 'data-label': 'Position' }, String(e.position)),
        h('td', { 'data-label': 'Type' }, e.type, what !== null ? h('div', { className: 'notes' }, what) : null),
        h('td', { 'data-label': 'Who' }, m.actor_id ? mono(m.actor_id) : '—'),
        h('td', { 'data-label': 'Role' }, m.role || '—'),
        h('td', { 'data-label': 'When' }, when(e.recorded_at)),
        h('td', { 'data-label': 'Request id' }, m.request_id ? mono(m.request_id) : '—'),
        h('td', { 'data-label': 'Client address' }, m.client_ip ? mono(m.client_ip) : erasedEver ? h('span', { className: 'erased' }, '(erased)') : '—'),
        h('td', { 'data-label': 'State after' }, h('ul', {}, lines))));
    }
    return h('div', {},
      hidden ? h('p', { className: 'hint', id: 'timeline-hidden' }, hidden + ' later event' + (hidden === 1 ? '' : 's') + ' not shown (recorded after the chosen moment).') : null,
      h('table', { id: 'timeline', 'aria-labelledby': 'timeline-heading' },
        h('thead', {}, h('tr', {}, ['Position', 'Type', 'Who', 'Role', 'When', 'Request id', 'Client address', 'State after'].map((t) => h('th', { scope: 'col' }, t)))),
        body));
  }

  // ---- audit ----------------------------------------------------------

  function auditPage(sessionID) {
    document.title = 'Audit · ledgerd console';
    const signal = page.signal;
    const headOut = h('div', { id: 'head-result' }, 'Loading…');
    main.append(h('h1', {}, 'Audit'),
      h('h2', {}, 'Sealed head'),
      h('p', { className: 'hint' }, 'The newest signed checkpoint of the Merkle tree over the log. Keep its hash somewhere else: ledgerd verify --head checks that the log only grew since.'),
      headOut);
    (async () => {
      const res = await api('GET', '/audit/head', undefined, signal);
      if (signal.aborted) return;
      if (!res.ok) { headOut.replaceChildren(message('error', detailOf(res))); loaded(); return; }
      const d = res.data;
      const copied = h('span', { id: 'copy-result', role: 'status' });
      const copy = h('button', { type: 'button', id: 'copy-hash', className: 'secondary' }, 'Copy hash');
      const hashEl = h('dd', { id: 'head-hash', className: 'mono' }, d.hash);
      copy.addEventListener('click', async () => {
        try {
          await navigator.clipboard.writeText(d.hash);
          copied.textContent = ' Copied.';
        } catch (e) {
          const range = document.createRange();
          range.selectNodeContents(hashEl);
          const sel = getSelection();
          sel.removeAllRanges();
          sel.addRange(range);
          copied.textContent = document.execCommand('copy') ? ' Copied.' : ' Selected: press Ctrl+C (or ⌘C) to copy.';
        }
      });
      headOut.replaceChildren(
        h('dl', { className: 'facts' },
          h('dt', {}, 'Position'), h('dd', { id: 'head-position' }, String(d.position)),
          h('dt', {}, 'Size'), h('dd', { id: 'head-size' }, String(d.size)),
          h('dt', {}, 'Hash'), hashEl),
        h('p', {}, copy, copied),
        h('details', {}, h('summary', {}, 'Signed checkpoint'), h('pre', { id: 'head-checkpoint' }, d.checkpoint)));
      loaded();
    })().catch(() => {});

    // Erasure.
    const sid = h('input', { id: 'erase-session', type: 'text', value: sessionID, size: 40, required: true, autocomplete: 'off' });
    const reason = h('textarea', { id: 'erase-reason', required: true, 'aria-describedby': 'erase-hint' });
    const eraseOut = h('div', { id: 'erase-result' });
    const confirmBox = h('div', { id: 'erase-confirm', className: 'confirm', hidden: true, role: 'group', 'aria-labelledby': 'erase-confirm-text' });
    const form = h('form', { id: 'erase-form' },
      h('label', { for: 'erase-session' }, 'Session id'), sid,
      h('label', { for: 'erase-reason' }, 'Reason'), reason,
      h('p', { id: 'erase-hint', className: 'hint' }, 'Admin or owner of the session’s account; the server refuses others. Erasing destroys the key of the session’s personal data: its notes show as erased everywhere, for good.'),
      h('button', { type: 'submit', id: 'erase-start', className: 'danger' }, 'Erase…'));
    main.append(h('h2', {}, 'Erase a session’s notes'), form, confirmBox, eraseOut);
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      eraseOut.replaceChildren();
      const id = sid.value.trim();
      const why = reason.value.trim();
      if (!UUID_RE.test(id)) { eraseOut.append(message('error', 'A session id is a UUID.')); sid.focus(); return; }
      if (!why) { eraseOut.append(message('error', 'Give the reason for the erasure.')); reason.focus(); return; }
      const yes = h('button', { type: 'button', id: 'erase-confirm-button', className: 'danger' }, 'Erase for good');
      const no = h('button', { type: 'button', id: 'erase-cancel', className: 'secondary' }, 'Cancel');
      confirmBox.replaceChildren(
        h('p', { id: 'erase-confirm-text' }, 'Erase the notes of session ', mono(id), ' for this reason: “', why, '”? This cannot be undone.'),
        h('p', { className: 'row' }, yes, no));
      confirmBox.hidden = false;
      yes.focus();
      no.addEventListener('click', () => { confirmBox.hidden = true; confirmBox.replaceChildren(); form.querySelector('#erase-start').focus(); });
      yes.addEventListener('click', async () => {
        yes.disabled = true;
        const res = await api('POST', sessionPath(id) + '/erase', { reason: why });
        confirmBox.hidden = true;
        confirmBox.replaceChildren();
        if (!res.ok) {
          eraseOut.replaceChildren(h('div', { className: 'msg error', role: 'alert', 'data-outcome': 'refused' }, detailOf(res)));
          return;
        }
        eraseOut.replaceChildren(h('div', { className: 'msg ok', role: 'status', 'data-outcome': 'erased' },
          'The notes of session ', mono(id), ' are erased. ', h('a', { href: '#/session/' + id, id: 'erased-session-link' }, 'See its timeline'), '.'));
        eraseOut.querySelector('a').focus();
      });
    });
  }

  route();
})();
