/* Cited Q&A chat widget: one script tag, Shadow DOM, text-only rendering, no dependencies. */
(() => {
  'use strict';
  const me = document.currentScript;
  if (!me) return;
  const d = me.dataset;
  const base = new URL(d.api || './', d.api ? location.href : me.src);
  if (!base.pathname.endsWith('/')) base.pathname += '/';
  const inline = !!d.mount;
  const title = d.title || 'Ask a question';
  // data-collection: ask that collection's routes; without it, the service's default ones.
  const coll = d.collection;
  const api = coll ? 'api/collections/' + encodeURIComponent(coll) + '/' : 'api/';
  const KEY = 'cited-qa:' + base.href + (coll ? '#' + coll : '');
  const NO_ACCESS = "You don't have access to this collection (or it does not exist).";
  // data-token-from: a function of the host page (a global, or a dotted path to one), called
  // before each request; what it returns (or resolves to) goes in an Authorization header.
  async function auth(extra) {
    const path = (d.tokenFrom || '').split('.');
    const owner = path.slice(0, -1).reduce((o, k) => o && o[k], window);
    const f = d.tokenFrom && owner && owner[path[path.length - 1]];
    const t = typeof f === 'function' ? await f.call(owner) : null;
    return Object.assign(t ? { Authorization: 'Bearer ' + t } : {}, extra);
  }
  const MAX_TURNS = 19; // the API takes at most 20 messages: 19 earlier turns + the question
  const KEEP_TURNS = 60; // what the page remembers and shows; sessionStorage is a few MB

  const STYLE = `
/* Important, because for important declarations the shadow tree's :host rule beats the page's
   rules, so no page style (transform, display, filter...) can move or hide the widget. */
:host{all:initial!important;display:block!important}
.r{all:initial;display:block;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:#1b1f24;--a:#1f55c4;--on:#fff;-webkit-text-size-adjust:100%}
*,*::before,*::after{box-sizing:border-box}
[hidden]{display:none!important}
button,textarea{font:inherit;color:inherit;margin:0}
button{cursor:pointer;border:1px solid #b7bfcb;background:#fff;border-radius:6px;padding:3px 9px}
button:disabled{cursor:default;opacity:.55}
:focus-visible{outline:3px solid var(--a);outline-offset:2px}
.l{position:fixed;bottom:20px;right:20px;z-index:2147483000;display:flex;align-items:center;gap:8px;
background:var(--a);color:var(--on);border:0;border-radius:24px;padding:12px 18px;font-weight:600;
box-shadow:0 4px 14px #0003}
.left .l,.left .p{right:auto;left:20px}
.p{position:fixed;bottom:84px;right:20px;z-index:2147483000;width:384px;height:min(620px,calc(100vh - 104px));
display:flex;flex-direction:column;background:#fff;border:1px solid #c9d0da;border-radius:12px;
box-shadow:0 10px 32px #0003;overflow:hidden}
.inline .p{position:relative;inset:auto;width:100%;height:min(600px,85vh);box-shadow:none;z-index:auto}
header{display:flex;align-items:center;gap:6px;padding:10px 12px;background:var(--a);color:var(--on)}
h2{all:unset;flex:1;font-weight:600;font-size:15px}
header button{background:transparent;border-color:currentColor;color:inherit}
.log{flex:1;overflow:auto;padding:12px;position:relative;overscroll-behavior:contain}
.m{margin:0 0 12px;max-width:92%;padding:8px 11px;border-radius:10px;white-space:pre-wrap;
overflow-wrap:anywhere;background:#eef1f5}
.u{margin-left:auto;background:var(--a);color:var(--on)}
.no{border-left:4px solid #b25e00}
.err{background:#fdecea;border-left:4px solid #b3261e}
.tag{display:block;font-size:12px;font-weight:600;color:#7a4100;margin-bottom:2px}
.c{all:unset;display:inline-block;cursor:pointer;min-width:18px;padding:0 5px;margin:0 1px;
border-radius:9px;background:var(--a);color:var(--on);font-size:11px;font-weight:700;
text-align:center;line-height:18px;vertical-align:1px}
.c:focus-visible{outline:3px solid var(--a);outline-offset:2px}
.c[aria-expanded=true]{box-shadow:0 0 0 2px #fff,0 0 0 4px var(--a)}
.s{margin-top:8px;white-space:normal}.s ul{margin:0;padding:0;list-style:none}
.s p{margin:0 0 3px;font-size:12px;color:#4a5260}
.s button{all:unset;display:block;cursor:pointer;padding:3px 0;color:#173f94;text-decoration:underline;
font-size:13px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;max-width:100%}
.s button:focus-visible{outline:3px solid var(--a)}.s button[aria-expanded=true]{font-weight:600}
.q{margin-top:8px;padding:8px 10px;background:#fff;border:1px solid #c9d0da;border-radius:8px;
white-space:normal}
.q:focus{outline:none}.q:focus-visible{outline:3px solid var(--a)}
.q b{display:block}.q small{display:block;color:#4a5260;font-size:12px}
blockquote{margin:6px 0;white-space:pre-wrap;max-height:220px;overflow:auto;font-size:13px}
table{border-collapse:collapse;white-space:normal;margin:2px 0}td,th{border:1px solid #c9d0da;padding:1px 5px;text-align:left}
blockquote ul{margin:0;padding-left:18px;white-space:normal}.q a{font-size:12px;margin-right:8px}
mark{background:#ffe066;color:#1b1f24;border-radius:2px}
.cx{background:#e3ecfb}
.q button,.m>button{margin:4px 6px 0 0;font-size:12px}
.ok,.th{color:#1d6b34;font-size:12px}
.fb{display:flex;flex-wrap:wrap;gap:6px;align-items:center;margin-top:8px;white-space:normal}
.fb button{font-size:12px}.fb [aria-pressed=true]{background:var(--a);color:var(--on)}
.fb div{flex-basis:100%;display:flex;gap:6px;align-items:flex-end}.bad{color:#b3261e;font-size:12px}
.dots::after{content:'…';display:inline-block;animation:b 1s steps(2) infinite}
@keyframes b{50%{opacity:.2}}
@media (prefers-reduced-motion:reduce){.dots::after{animation:none}}
form{display:flex;gap:8px;padding:10px;border-top:1px solid #dde2e8;align-items:flex-end}
textarea{flex:1;resize:none;border:1px solid #8a94a3;border-radius:8px;padding:8px;
min-height:38px;max-height:120px;background:#fff}
textarea::placeholder{white-space:nowrap;overflow:hidden;text-overflow:ellipsis;color:#5f6773}
form button{background:var(--a);color:var(--on);border:0;padding:9px 14px;font-weight:600}
.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
@media (max-width:640px){.r:not(.inline) .p{inset:0;width:100%;height:100%;border-radius:0;border:0}
.open:not(.inline) .l{display:none}}`;

  // Build an element; `props` are DOM properties or (for aria-*/role/id) attributes. Text
  // children become text nodes, so nothing from the server or the user is ever parsed as HTML.
  const h = (tag, props, ...kids) => {
    const el = document.createElement(tag);
    for (const k in props || {}) {
      if (props[k] == null) continue;
      if (/^(aria-|role$|id$)/.test(k)) el.setAttribute(k, props[k]);
      else el[k] = props[k];
    }
    el.append(...kids.flat().filter((k) => k != null && k !== false));
    return el;
  };
  const btn = (text, props, onClick) => {
    const b = h('button', Object.assign({ type: 'button' }, props), text);
    b.addEventListener('click', onClick);
    return b;
  };

  // Offsets from the service count code points (Python strings); JS strings count UTF-16
  // units. Walk `n` code points from unit index `i`.
  const units = (s, n, i = 0) => {
    for (; n > 0 && i < s.length; n--) {
      const c = s.charCodeAt(i);
      i += c >= 0xd800 && c < 0xdc00 ? 2 : 1;
    }
    return i;
  };
  // `text` starts at code point `at` of its document; mark the highlight spans inside it.
  const marked = (text, at, spans) => {
    const out = [];
    let pos = 0;
    let i = 0;
    for (const sp of [...(spans || [])].sort((x, y) => x.start - y.start)) {
      const a = sp.start - at;
      if (a < pos || sp.end <= sp.start) continue;
      const ia = units(text, a - pos, i);
      const ib = units(text, sp.end - sp.start, ia);
      out.push(text.slice(i, ia), h('mark', null, text.slice(ia, ib)));
      pos = sp.end - at;
      i = ib;
    }
    out.push(text.slice(i));
    return out;
  };

  // A passage as it reads in its original: table rows (tab- or pipe-separated cells) as a
  // table, list items as a list, Markdown emphasis and link text without their marks. Only
  // marks are hidden, never text, so the highlights (UTF-16 ranges R) stay where they were.
  const INL = /\*\*([^*\n]+)\*\*|\*([^*\n]+)\*|\b_([^_\n]+)_\b|`([^`\n]+)`|\[([^\]\n]+)\]\([^)\n]*\)/dg;
  const marks = (t, s, e, R) => {
    const out = [];
    for (const [a, b] of R) {
      if (b <= s || a >= e) continue;
      if (a > s) out.push(t.slice(s, a));
      out.push(h('mark', null, t.slice(Math.max(a, s), s = Math.min(b, e))));
    }
    out.push(t.slice(s, e));
    return out;
  };
  const inl = (t, s, e, R) => {
    const out = [];
    INL.lastIndex = s;
    for (let m; (m = INL.exec(t)) && m.index + m[0].length <= e;) {
      const g = m.indices.findIndex((x, i) => i && x);
      out.push(...marks(t, s, m.index, R),
        h(['', 'b', 'i', 'i', 'code', 'span'][g], null, marks(t, m.indices[g][0], m.indices[g][1], R)));
      s = INL.lastIndex;
    }
    return out.concat(marks(t, s, e, R));
  };
  const rich = (t, at, spans) => {
    const R = (spans || []).map((sp) => { const a = units(t, sp.start - at); return [a, units(t, sp.end - sp.start, a)]; })
      .sort((x, y) => x[0] - y[0]);
    const out = [];
    let tbl = null;
    let list = null;
    let s = 0;
    for (const line of t.split('\n')) {
      const e = s + line.length;
      const pipe = line.trim()[0] === '|';
      if (pipe || line.includes('\t')) {
        list = null;
        const cells = [];
        for (let k = s, c = s; k <= e; k++) {
          if (k === e || t[k] === (pipe ? '|' : '\t')) { cells.push([c, k]); c = k + 1; }
        }
        if (pipe) cells.shift();
        if (pipe && !t.slice(...cells[cells.length - 1]).trim()) cells.pop();
        if (!cells.every(([a, b]) => /^[\s:-]*-[\s:-]*$/.test(t.slice(a, b)))) {
          if (!tbl) out.push(tbl = h('table'));
          tbl.append(h('tr', null, cells.map(([a, b]) => h(tbl.rows.length ? 'td' : 'th', null, inl(t, a, b, R)))));
        }
      } else {
        tbl = null;
        const m = /^\s*(?:[-*+•]|\d{1,3}[.)])\s+/.exec(line);
        if (m) {
          if (!list) out.push(list = h('ul'));
          list.append(h('li', null, inl(t, s + m[0].length, e, R)));
        } else {
          list = null;
          out.push(...inl(t, s, e, R), '\n');
        }
      }
      s = e + 1;
    }
    return out;
  };

  // The API refuses control characters and lone surrogates; drop them before sending.
  // (No regex lookbehind: older Safari cannot even parse it, which would stop the whole script.)
  const clean = (s) => s.replace(/[\0-\x08\x0b-\x1f\x7f-\x9f]/g, '')
    .replace(/[\ud800-\udbff][\udc00-\udfff]|[\ud800-\udfff]/g, (m) => (m.length > 1 ? m : '\ufffd'))
    .trim();

  let state = { turns: [], open: false };
  try {
    state = Object.assign(state, JSON.parse(sessionStorage.getItem(KEY)) || {});
  } catch (e) { /* storage off or unreadable: start fresh */ }
  if (!Array.isArray(state.turns)) state.turns = [];
  const save = () => {
    try {
      sessionStorage.setItem(KEY, JSON.stringify(state));
    } catch (e) { /* storage off or full: the conversation lasts only for this page */ }
  };

  const host = document.createElement('cited-qa');
  const shadow = host.attachShadow({ mode: 'open' });
  if (shadow.adoptedStyleSheets) {
    const sheet = new CSSStyleSheet();
    sheet.replaceSync(STYLE);
    shadow.adoptedStyleSheets = [sheet];
  } else {
    shadow.append(h('style', { textContent: STYLE }));
  }

  const root = h('div', { className: 'r' + (inline ? ' inline' : '') + (d.position === 'left' ? ' left' : '') });
  if (d.accent && CSS.supports('color', d.accent)) root.style.setProperty('--a', d.accent);
  if (d.accentText && CSS.supports('color', d.accentText)) root.style.setProperty('--on', d.accentText);
  const named = h('h2', { id: 't' }, title);
  const launcher = btn(title, {
    className: 'l', 'aria-haspopup': 'dialog', 'aria-expanded': 'false', 'aria-controls': 'p',
  }, () => show(!state.open, true));
  // The log stays silent: the status region announces each answer once, without the chips.
  const log = h('div', { className: 'log', role: 'log', 'aria-label': 'Conversation', 'aria-live': 'off' });
  const status = h('div', { className: 'sr', role: 'status', 'aria-live': 'polite' });
  const input = h('textarea', {
    rows: 1, maxLength: 1000, placeholder: d.placeholder || 'Ask a question…', 'aria-label': 'Your question',
  });
  const send = h('button', { type: 'submit' }, 'Send');
  const form = h('form', null, input, send);
  const panel = h('div', inline
    ? { className: 'p', id: 'p', role: 'region', 'aria-labelledby': 't' }
    : { className: 'p', id: 'p', role: 'dialog', 'aria-modal': 'false', 'aria-labelledby': 't', hidden: true },
  h('header', null, named,
    btn('New chat', { title: 'Clear the conversation' }, clear),
    inline ? null : btn('✕', { 'aria-label': 'Close' }, () => show(false, true))),
  log, status, form);
  root.append(...(inline ? [panel] : [launcher, panel]));
  shadow.append(root);

  let busy = false;
  let waitUntil = 0;
  const say = (text) => { status.textContent = text; };
  // Bring `el` into view inside the log only (scrollIntoView would scroll the host page too),
  // keeping what is above it visible when it fits: an opened passage stays beside its answer.
  const reveal = (el) => {
    const top = el.offsetTop - 8;
    const bottom = el.offsetTop + el.offsetHeight + 8;
    if (bottom > log.scrollTop + log.clientHeight) log.scrollTop = Math.min(top, bottom - log.clientHeight);
    else if (top < log.scrollTop) log.scrollTop = top;
  };
  const add = (el) => { log.append(el); reveal(el); return el; };
  const setBusy = (on) => { busy = on; send.disabled = on || Date.now() < waitUntil; };

  function show(open, focus) {
    if (inline) return;
    state.open = open;
    save();
    panel.hidden = !open;
    root.classList.toggle('open', open);
    launcher.setAttribute('aria-expanded', String(open));
    if (focus) (open ? input : launcher).focus();
  }

  function greet() {
    log.replaceChildren(h('p', { className: 'm' },
      d.greeting || 'Ask me about the text. Each answer links to the passages it quotes: open a [1] to check it.'));
  }

  function clear() {
    state.turns = [];
    save();
    greet();
    say('Conversation cleared');
    input.focus();
  }

  const docs = new Map();
  // One encoded segment, slashes included: the URL standard resolves '..' and '%2E%2E'
  // segments alike, so "x/../../metrics" must never reach the URL as segments.
  const docUrl = (id, more) => new URL(api + 'documents/' + encodeURIComponent(id) + (more || ''), base);
  async function getDoc(id) {
    if (!docs.has(id)) {
      docs.set(id, auth().then((headers) => fetch(docUrl(id), { credentials: 'omit', headers }))
        .then((r) => { if (!r.ok) throw new Error('HTTP ' + r.status); return r.json(); })
        .catch((e) => { docs.delete(id); throw e; }));
    }
    return docs.get(id);
  }

  // A link to the original file. With a token the browser cannot send it on a plain link, so
  // the file is fetched with it and saved as a download (never shown on the host's origin).
  function original(c) {
    const url = docUrl(c.doc_id, '/source');
    const a = h('a', { href: url + (c.page && /\.pdf$/i.test(c.doc_id) ? '#page=' + c.page : ''), target: '_blank', rel: 'noopener noreferrer' }, 'Open original');
    if (d.tokenFrom) {
      a.addEventListener('click', async (e) => {
        e.preventDefault();
        try {
          const r = await fetch(url, { credentials: 'omit', headers: await auth() });
          if (!r.ok) throw new Error('HTTP ' + r.status);
          const link = h('a', { href: URL.createObjectURL(new Blob([await r.blob()], { type: 'application/octet-stream' })), download: c.doc_id.split('/').pop() });
          link.click();
          setTimeout(() => URL.revokeObjectURL(link.href), 60000);
        } catch (err) {
          say('Could not get the original (' + err.message + ').');
        }
      });
    }
    return a;
  }

  // The passage a citation points to, with the answer's sentences marked; "see in context"
  // loads the whole document and checks the passage against it.
  function passage(c, reply, close) {
    const quote = h('blockquote', null, rich(c.text, c.start, c.highlights));
    const note = h('p', { className: 'ok', hidden: true });
    const sub = [c.heading && (c.title || c.doc_id), c.page && 'p. ' + c.page].filter(Boolean).join(' · ');
    const box = h('div', { className: 'q', role: 'region', tabIndex: -1, 'aria-label': 'Source ' + c.n },
      h('b', null, '[' + c.n + '] ' + (c.heading || c.title || c.doc_id)),
      sub ? h('small', null, sub) : null,
      quote, note,
      original(c));
    let wide = false;
    const more = btn('See in context', null, async () => {
      wide = !wide;
      more.textContent = wide ? 'Passage only' : 'See in context';
      note.hidden = !wide;
      if (!wide) { quote.replaceChildren(...rich(c.text, c.start, c.highlights)); return; }
      note.className = 'ok';
      note.textContent = 'Loading the document…';
      try {
        const doc = await getDoc(c.doc_id);
        const t = String(doc.text);
        const a = units(t, c.start);
        const b = units(t, c.end - c.start, a);
        let from = Math.max(0, a - 700);
        let to = Math.min(t.length, b + 700);
        if (from) from = Math.min(a, t.indexOf(' ', from) + 1 || a);
        if (to < t.length) to = Math.max(b, t.lastIndexOf(' ', to));
        const cited = h('span', { className: 'cx' }, marked(t.slice(a, b), c.start, c.highlights));
        quote.replaceChildren(from ? '…' : '', t.slice(from, a), cited, t.slice(b, to), to < t.length ? '…' : '');
        quote.scrollTop = Math.max(0, cited.offsetTop - quote.offsetTop - 40);
        const same = t.slice(a, b) === c.text;
        note.className = same ? 'ok' : 'bad';
        note.textContent = same
          ? '✓ The passage matches the document (characters ' + c.start + '–' + c.end + ').'
          : 'The document has changed since this answer; the passage is no longer at this place.';
        if (same && doc.index_version !== reply.index_version) note.textContent += ' The index has been rebuilt since.';
      } catch (e) {
        note.className = 'bad';
        note.textContent = 'Could not load the document (' + e.message + ').';
      }
    });
    box.append(more, btn('Close', null, close));
    return box;
  }

  function answer(reply) {
    const cites = Array.isArray(reply.citations) ? reply.citations : [];
    const el = h('div', { className: 'm' + (reply.answered ? '' : ' no') });
    const chips = [];
    let open = null;
    const toggle = (c, from) => {
      const same = open && open.n === c.n;
      if (open) open.box.remove();
      chips.forEach((x) => x.setAttribute('aria-expanded', 'false'));
      open = null;
      if (same) { from.focus(); return; }
      const box = passage(c, reply, () => toggle(c, from));
      open = { n: c.n, box };
      el.append(box);
      chips.filter((x) => x.n === c.n).forEach((x) => x.setAttribute('aria-expanded', 'true'));
      box.focus({ preventScroll: true });
      reveal(box);
    };
    const chip = (c, text, props) => {
      const b = btn(text, Object.assign({ 'aria-expanded': 'false' }, props), () => toggle(c, b));
      b.n = c.n;
      chips.push(b);
      return b;
    };
    const where = (c) => (c.heading ? c.heading + ' — ' : '') + (c.title || c.doc_id) + (c.page ? ', p. ' + c.page : '');
    // Chips come only from the structured parts: a "[2]" inside a quoted sentence stays text.
    const parts = [];
    const pieces = Array.isArray(reply.answer_parts) ? reply.answer_parts : [{ text: reply.answer }];
    pieces.forEach((p, i) => {
      const c = cites.find((x) => x.n === p.citation);
      parts.push(i ? ' ' : '', String(p.text || ''));
      if (c) parts.push(' ', chip(c, c.n + (c.page ? ' · p. ' + c.page : ''), { className: 'c', 'aria-label': 'Source ' + c.n + ': ' + where(c) }));
    });
    if (!reply.answered) el.append(h('span', { className: 'tag' }, 'Not answered by the text'));
    el.append(h('span', null, parts));
    if (cites.length) {
      el.append(h('div', { className: 's' },
        h('p', null, reply.answered ? 'Sources' : 'Nearest passages (they do not answer the question)'),
        h('ul', null, cites.map((c) => h('li', null, chip(c, '[' + c.n + '] ' + where(c), { title: where(c) }))))));
    }
    if (reply.answer_id) el.append(rate(reply));
    return el;
  }

  // Helpful / Not helpful under an answer; one vote that can be changed, then an optional comment.
  function rate(reply) {
    const note = h('span', { className: 'th' });
    let more = null;
    const post = async (helpful, comment) => {
      let r = null;
      try {
        r = await fetch(new URL('api/feedback', base), {
          method: 'POST', credentials: 'omit', headers: await auth({ 'Content-Type': 'application/json' }),
          body: JSON.stringify({ answer_id: reply.answer_id, helpful, comment }),
        });
      } catch (e) { /* reported below */ }
      if (r && r.ok) { reply.vote = helpful; save(); }
      note.className = r && r.ok ? 'th' : 'th bad';
      note.textContent = r && r.ok ? (comment ? 'Thanks for the comment.' : 'Thanks for your feedback.')
        : "Couldn't send your feedback" + (r ? ' (HTTP ' + r.status + ').' : '.');
      say(note.textContent);
      sync();
      return r && r.ok;
    };
    const yes = btn('Helpful', null, () => { if (more) more.hidden = true; post(true); });
    // The comment box is made only when wanted: until then the answer has no second textarea.
    const no = btn('Not helpful', null, async () => {
      if (!(await post(false))) return;
      if (!more) {
        const ta = h('textarea', { rows: 2, maxLength: 500, placeholder: 'What was wrong? (optional)', 'aria-label': 'What was wrong? (optional)' });
        more = h('div', null, ta, btn('Send', null, async () => {
          const c = clean(ta.value);
          if (c && await post(false, c)) { more.hidden = true; no.focus(); }
        }));
        box.append(more);
      }
      more.hidden = false;
      more.firstChild.focus();
      reveal(more);
    });
    const sync = () => {
      yes.setAttribute('aria-pressed', String(reply.vote === true));
      no.setAttribute('aria-pressed', String(reply.vote === false));
    };
    sync();
    const box = h('div', { className: 'fb', role: 'group', 'aria-label': 'Was this answer helpful?' }, yes, no, note);
    return box;
  }

  function retryAfter(r) {
    const v = r.headers.get('Retry-After');
    const s = /^\d+$/.test(v || '') ? Number(v) : (Date.parse(v) - Date.now()) / 1000;
    return Math.min(3600, Math.max(1, Math.ceil(s) || 5));
  }

  // A failed question: say why, and offer a retry (after the wait the service asked for).
  function failure(msg, q, wait) {
    const text = h('span', null, msg);
    const again = wait === null ? null : btn('Retry', null, () => { el.remove(); ask(q, true); });
    const el = h('div', { className: 'm err' }, text, again && h('br'), again);
    say(msg);
    if (wait) {
      waitUntil = Date.now() + wait * 1000;
      again.disabled = send.disabled = true;
      const tick = () => {
        const left = Math.ceil((waitUntil - Date.now()) / 1000);
        if (left > 0) {
          again.textContent = 'Retry in ' + left + ' s';
          setTimeout(tick, 250);
        } else {
          again.textContent = 'Retry';
          again.disabled = false;
          setBusy(busy);
        }
      };
      tick();
    }
    return add(el);
  }

  async function ask(q, again) {
    if (busy || Date.now() < waitUntil) return;
    const history = state.turns.slice(-MAX_TURNS).map((t) => ({ role: t.role, content: t.content.slice(0, 4000) }));
    if (!again) add(h('p', { className: 'm u' }, q));
    const wait = add(h('p', { className: 'm', 'aria-busy': 'true' }, h('span', { className: 'dots' }, 'Searching the text')));
    say('Searching the text');
    setBusy(true);
    let r;
    let reply;
    try {
      r = await fetch(new URL(api + 'chat', base), {
        method: 'POST', credentials: 'omit', signal: AbortSignal.timeout && AbortSignal.timeout(30000),
        headers: await auth({ 'Content-Type': 'application/json' }),
        body: JSON.stringify({ messages: history.concat({ role: 'user', content: q }) }),
      });
      reply = await r.json().catch(() => null);
    } catch (e) {
      r = null;
    }
    wait.remove();
    setBusy(false);
    if (!r) {
      failure("Couldn't reach the service. Check your connection, then retry. (If this keeps " +
        "happening, this site may not be allowed to use it.)", q, 0);
    } else if (r.status === 404 || r.status === 401) {
      failure(r.status === 401 ? 'Your sign-in was not accepted: sign in again, then retry.' : NO_ACCESS, q, 0);
    } else if (r.status === 429) {
      const s = retryAfter(r);
      failure('Too many questions right now. You can ask again in ' + s + ' s.', q, s);
    } else if (r.status === 503) {
      failure("The service is starting up and can't answer yet.", q, retryAfter(r));
    } else if (r.status === 422 || r.status === 413) {
      const det = reply && reply.detail;
      const why = Array.isArray(det) ? det.map((x) => x && x.msg).filter(Boolean).join('; ') : det;
      failure("The service can't take this question" + (why ? ': ' + why : '.'), q, null);
      if (!input.value) input.value = q;
    } else if (!r.ok || !reply || typeof reply.answer !== 'string') {
      failure('The service had a problem answering (HTTP ' + r.status + ').', q, 0);
    } else {
      const keep = {
        answered: !!reply.answered, answer: reply.answer, answer_parts: reply.answer_parts,
        index_version: reply.index_version,
        answer_id: typeof reply.answer_id === 'string' ? reply.answer_id : null,
        citations: (reply.citations || []).map((c) => ({
          n: c.n, doc_id: c.doc_id, title: c.title, heading: c.heading, start: c.start, end: c.end,
          text: c.text, highlights: c.highlights, page: c.page,
        })),
      };
      state.turns.push({ role: 'user', content: q }, { role: 'assistant', content: reply.answer, reply: keep });
      state.turns = state.turns.slice(-KEEP_TURNS);
      save();
      add(answer(keep));
      say((keep.answered ? 'Answer: ' : 'Not answered by the text. ') + reply.answer);
    }
  }

  const submit = (e) => {
    e.preventDefault();
    const q = clean(input.value);
    if (!q || busy || Date.now() < waitUntil) return;
    input.value = '';
    input.style.height = '';
    ask(q, false);
  };
  form.addEventListener('submit', submit);
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) submit(e);
  });
  input.addEventListener('input', () => {
    input.style.height = 'auto';
    input.style.height = Math.min(input.scrollHeight + 2, 120) + 'px';
  });
  panel.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && !inline) {
      e.stopPropagation();
      show(false, true);
    }
  });

  greet();
  // A collection names itself: its title, unless the page gave one; a 404 means no access.
  if (coll) {
    auth().then((headers) => fetch(new URL(api.slice(0, -1), base), { credentials: 'omit', headers }))
      .then(async (r) => {
        if (r.status === 404) add(h('p', { className: 'm err' }, NO_ACCESS));
        const info = r.ok ? await r.json() : null;
        if (!d.title && info && typeof info.title === 'string') named.textContent = launcher.textContent = info.title;
      }).catch(() => { /* the first question reports what is wrong */ });
  }
  for (const t of state.turns) {
    add(t.role === 'user' ? h('p', { className: 'm u' }, t.content) : answer(t.reply || { answer: t.content, answered: true }));
  }

  const mount = () => {
    const target = inline ? document.querySelector(d.mount) : document.body;
    if (!target) {
      console.warn('cited-qa: no element matches data-mount=' + JSON.stringify(d.mount));
      return;
    }
    target.append(host);
    if (state.open) show(true, false);
  };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', mount);
  else mount();
})();
