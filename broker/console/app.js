// The Sluice console: one page per task, each drawn from the broker's API with the token the
// user signed in with. Safe by construction:
// - every string from the API (and so from jobs: titles, table names, cells, log lines) reaches
//   the page through `el()` as a text node or an attribute set by this file, never as markup
//   (this file uses none of the DOM's HTML-parsing sinks: a test in console.rs checks);
// - no link's address comes from the API;
// - the token lives in sessionStorage and travels only in the Authorization header (never in a
//   URL, never in a cookie, so a cross-site request cannot carry it);
// - the broker serves this file under a Content-Security-Policy without inline script.

const TOKEN_KEY = 'sluice.token';
const state = { token: sessionStorage.getItem(TOKEN_KEY), me: null, generation: 0, abort: null };

// ---- building the page -------------------------------------------------------------------

/** An element with attributes (`text` sets its text, `on…` adds a listener) and children. */
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  setAttrs(e, attrs);
  append(e, children);
  return e;
}

/** An SVG element, built the same way. */
function svg(tag, attrs = {}, ...children) {
  const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
  setAttrs(e, attrs);
  append(e, children);
  return e;
}

function setAttrs(e, attrs) {
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v == null || v === false) continue;
    if (k === 'text') e.textContent = String(v);
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
}

function append(e, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c == null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** A definition list from [term, value] pairs (values left out when null). */
function facts(pairs) {
  return el('dl', { class: 'facts' },
    pairs.filter(([, v]) => v != null && v !== undefined && v !== '')
      .map(([k, v]) => [el('dt', { text: k }), el('dd', {}, v)]));
}

/** A table with a header row and rows of cells (strings, numbers or nodes). */
function table(headers, rows, attrs = {}) {
  return el('table', attrs,
    el('thead', {}, el('tr', {}, headers.map((h) => el('th', { scope: 'col', text: h })))),
    el('tbody', {}, rows.map((r) => el('tr', {}, r.map((c) => el('td', {}, c))))));
}

function message(kind, text) {
  return el('p', { class: kind, role: kind === 'error' ? 'alert' : 'status', text });
}

/** `x` to 4 significant digits, as the CLI prints it. */
function sig(x) {
  if (x == null || x === undefined) return '';
  if (typeof x !== 'number') return String(x);
  if (x === 0 || !Number.isFinite(x)) return String(x);
  return String(Number(x.toPrecision(4)));
}

function when(ms) {
  if (!ms) return '';
  return new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
}

function cost(c) {
  if (!c) return '';
  const parts = [];
  if (c.rho > 0) parts.push(`ρ=${sig(c.rho)}`);
  if (c.epsilon > 0 || !(c.rho > 0)) parts.push(`ε=${sig(c.epsilon)}`);
  if (c.delta > 0) parts.push(`δ=${c.delta.toExponential()}`);
  return parts.join(', ');
}

// ---- talking to the broker ------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, text) {
    super(text);
    this.status = status;
    this.code = code;
  }
}

/** One API call; JSON in and out (text for CSV). Throws ApiError with the broker's message. */
async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.token}` };
  const init = { method, headers, cache: 'no-store', signal: state.abort?.signal };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  const type = r.headers.get('Content-Type') || '';
  const data = type.includes('json') ? await r.json() : await r.text();
  if (!r.ok) {
    const e = data && data.error ? data.error : { code: `http_${r.status}`, message: String(data) };
    if (r.status === 401) signOut(e.message);
    throw new ApiError(r.status, e.code, e.message);
  }
  return data;
}

/** A job's events as they happen (server-sent events read through fetch, so that the token
 * goes in a header, not the URL): calls `on(kind, data)` for each until the stream ends. */
async function follow(id, on, signal) {
  const r = await fetch(`/v1/jobs/${encodeURIComponent(id)}/events`, {
    headers: { Authorization: `Bearer ${state.token}`, Accept: 'text/event-stream' },
    signal,
  });
  if (!r.ok) throw new ApiError(r.status, 'events', `the job's events could not be read (${r.status})`);
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let kind = 'message';
      let data = '';
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) kind = line.slice(6).trim();
        else if (line.startsWith('data:')) data += line.slice(5).trim();
      }
      if (data) on(kind, JSON.parse(data));
    }
  }
}

/** Saves what an authenticated GET returns as a file (a blob URL: the token stays out of it). */
async function download(path, filename) {
  const r = await fetch(path, { headers: { Authorization: `Bearer ${state.token}` } });
  if (!r.ok) throw new ApiError(r.status, 'download', `the download failed (${r.status})`);
  saveBlob(await r.blob(), filename);
}

/** Offers `blob` as a file named `filename`. */
function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = el('a', { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** Runs `action` for a button, showing its outcome in `out`. */
function act(button, out, action) {
  button.addEventListener('click', async () => {
    button.disabled = true;
    out.replaceChildren();
    try {
      out.append(await action());
    } catch (e) {
      out.append(message('error', e.message));
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

/** Runs `action` when `form` is submitted, showing what it returns (or its error) in `out`. */
function onSubmit(form, out, action) {
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    out.replaceChildren();
    try {
      out.append(...[await action()].flat());
    } catch (err) {
      out.append(message('error', err.message));
    }
  });
}

// ---- pages -----------------------------------------------------------------------------------

const STAFF = ['reviewer', 'admin', 'auditor', 'holder'];
const PAGES = {
  queue: { title: 'Review queue', roles: ['reviewer', 'holder', 'auditor'], render: queuePage },
  jobs: { title: 'Jobs', roles: ['operator', ...STAFF], render: jobsPage },
  job: { roles: ['operator', ...STAFF], render: jobPage },
  budget: { title: 'Budget', roles: ['operator'], render: budgetPage },
  estimate: { title: 'Estimate', roles: ['operator'], render: estimatePage },
  datasets: { title: 'Datasets', roles: STAFF, render: datasetsPage },
  audit: { title: 'Audit log', roles: STAFF, render: auditPage },
  receipts: { title: 'Receipts', roles: ['operator', ...STAFF], render: receiptsPage },
  objections: { title: 'Objections', roles: ['reviewer', 'admin', 'auditor'], render: objectionsPage },
  operators: { title: 'Operators', roles: STAFF, render: operatorsPage },
  statements: { title: 'Statements', roles: ['operator', 'holder', 'admin', 'auditor'], render: statementsPage },
};
const HOME = { operator: 'jobs', reviewer: 'queue', holder: 'datasets', admin: 'datasets', auditor: 'audit' };

async function route() {
  const [name, ...rest] = location.hash.replace(/^#\/?/, '').split('/');
  // The public register needs no token; every other page does.
  if (name === 'public') return draw('public', publicPage, rest);
  if (!state.me) return state.token ? undefined : signInPage();
  const page = PAGES[name] && PAGES[name].roles.includes(state.me.role) ? name : HOME[state.me.role];
  for (const a of document.querySelectorAll('#nav a')) {
    a.classList.toggle('current', a.dataset.page === page || (page === 'job' && a.dataset.page === 'jobs'));
  }
  return draw(page, PAGES[page].render, rest);
}

/** Replaces the page with `render`'s, cancelling what the previous page still had running. */
async function draw(page, render, rest) {
  state.abort?.abort();
  state.abort = new AbortController();
  const generation = ++state.generation;
  const main = document.getElementById('main');
  const body = el('section', { id: `page-${page}`, 'aria-busy': 'true' });
  main.replaceChildren(body);
  try {
    await render(body, rest.map(decodeURIComponent), state.abort.signal);
  } catch (e) {
    if (e.name !== 'AbortError' && generation === state.generation) body.append(message('error', e.message));
  } finally {
    body.setAttribute('aria-busy', 'false');
  }
}

function jobLink(id) {
  return el('a', { href: `#/job/${encodeURIComponent(id)}`, text: id });
}

function stateBadge(s) {
  return el('span', { class: `state state-${s}`, text: s.replace('_', ' ') });
}

// Reviewer (and holder, for its approvals): the queue, with everything to decide on.
async function queuePage(body) {
  body.append(el('h1', { text: 'Review queue' }));
  const q = await api('GET', '/v1/reviews');
  if (!q.pending.length && !q.held.length) body.append(message('note', 'No job is waiting for a decision.'));
  for (const job of q.pending) body.append(reviewCard(job, ['approve', 'reject']));
  if (q.held.length) body.append(el('h2', { text: 'Held at release' }));
  for (const job of q.held) body.append(reviewCard(job, ['release', 'discard']));
}

function reviewCard(job, decisions) {
  const out = el('div', { class: 'outcome' });
  const reason = el('textarea', { rows: 2, placeholder: 'Reason (recorded in the audit log)', 'aria-label': 'Reason', maxlength: 2000 });
  const allow = el('input', { type: 'checkbox' });
  const risk = el('div', { class: 'risk' });
  const canDecide = state.me.role !== 'auditor';
  return el('article', { class: 'card review', 'data-job': job.id },
    el('h2', {}, el('span', { class: 'purpose', text: job.purpose }), ' ', stateBadge(job.state)),
    facts([
      ['Job', jobLink(job.id)],
      ['Operator', job.operator],
      ['Scenario', job.scenario || '—'],
      ['Datasets', job.datasets.join(', ')],
      ['Wasm sha256', el('code', { text: job.wasm_sha256 })],
      ['Wasm size', `${job.wasm_bytes.toLocaleString('en')} bytes`],
      ['ε asked per dataset', job.max_epsilon == null ? 'the grant\'s per-job cap' : sig(job.max_epsilon)],
      ['Holders to approve', job.holders_to_approve.join(', ')],
      ['Approved by', job.approved_by.join(', ')],
      ['Submitted', when(job.created_ms)],
    ]),
    el('h3', { text: 'Parameters (in full)' }),
    el('pre', { class: 'params', text: job.params || '(none)' }),
    el('div', { class: 'actions' },
      act(el('button', { type: 'button', class: 'secondary', text: 'Plan and risk report' }), risk, async () => riskView(await api('GET', `/v1/jobs/${encodeURIComponent(job.id)}/risk`)))),
    risk,
    canDecide && el('div', { class: 'decide' },
      reason,
      decisions[0] === 'approve' && el('label', { class: 'inline' }, allow, ' Also allow this build without review next time'),
      el('div', { class: 'actions' }, decisions.map((d) => act(
        el('button', { type: 'button', class: d === 'approve' || d === 'release' ? 'primary' : 'danger', 'data-decision': d, text: d[0].toUpperCase() + d.slice(1) }),
        out,
        async () => {
          const r = await api('POST', `/v1/reviews/${encodeURIComponent(job.id)}/${d}`, { reason: reason.value, allow: d === 'approve' && allow.checked });
          return message('ok', `Job ${r.id} is now ${r.state.replace('_', ' ')}.`);
        })))),
    out);
}

function riskView(r) {
  const plan = r.plan || {};
  return el('div', {},
    el('p', {}, 'Risk level: ', el('strong', { class: `risk-${r.level}`, text: r.level }),
      ` · approvals of this build before: ${r.past_approvals_of_build}`),
    r.reasons.length ? el('ul', {}, r.reasons.map((x) => el('li', { text: x }))) : null,
    table(['Dataset', 'Job would spend', 'Dataset has left', 'Spent by all operators'],
      r.datasets.map((d) => [d.dataset, `${d.unit}=${sig(d.job_total)}`, d.dataset_left == null ? 'no dataset-wide cap' : sig(d.dataset_left), `${sig(d.spent_by_all_operators)} in ${sig(d.period_days)} days`])),
    el('h3', { text: 'Queries on mock data' }),
    table(['#', 'Dataset', 'SQL', 'Cost', 'Note'],
      (plan.queries || []).map((q, i) => [String(i + 1), q.dataset, el('code', { text: q.sql }), cost(q.cost), q.refused ? `refused: ${q.refused}` : q.cached ? 'cached (free)' : ''])),
    plan.adaptive ? message('note', 'Its queries depend on its answers: a real run may ask others.') : null);
}

// Everyone: jobs they may see.
async function jobsPage(body) {
  body.append(el('h1', { text: 'Jobs' }));
  const { jobs } = await api('GET', '/v1/jobs');
  if (!jobs.length) {
    body.append(message('note', state.me.role === 'operator'
      ? 'No jobs yet. Submit one with `sluice submit` (docs/operator.md).'
      : 'No jobs yet.'));
    return;
  }
  body.append(table(['Job', 'State', 'Operator', 'Purpose', 'Datasets', 'Spent', 'Submitted'],
    jobs.map((j) => [jobLink(j.id), stateBadge(j.state), j.operator, j.purpose, j.datasets.join(', '),
      cost({ epsilon: j.epsilon_spent, rho: j.rho_spent, delta: 0 }), when(j.created_ms)]), { class: 'jobs' }));
}

const ENDED = ['succeeded', 'failed', 'rejected', 'cancelled', 'held'];

// One job: its facts, live progress, its report with charts, downloads and its log.
async function jobPage(body, [id], signal) {
  const job = await api('GET', `/v1/jobs/${encodeURIComponent(id)}`);
  const badge = el('span', { id: 'job-state' }, stateBadge(job.state));
  const events = el('ol', { class: 'events', id: 'events' });
  const progress = el('p', { id: 'progress' });
  body.append(el('h1', {}, el('span', { text: job.purpose }), ' ', badge),
    facts([
      ['Job', el('code', { text: job.id })],
      ['Operator', job.operator],
      ['Scenario', job.scenario],
      ['Datasets', job.datasets.join(', ')],
      ['Wasm sha256', el('code', { text: job.wasm_sha256 })],
      ['Submitted', when(job.created_ms)],
      ['Error', job.error],
      ['Review', job.review_reason && `${job.reviewer}: ${job.review_reason}`],
    ]),
    el('h2', { text: 'Progress' }), progress, events);
  const report = el('div', { id: 'report' });
  const log = el('div', { id: 'log-box' });
  body.append(report, log);
  // A report delivered to this operator by another's scenario: its report only (the log and
  // the events are its operator's and the staff's; asking would be an audited denial).
  const delivered = state.me.role === 'operator' && job.operator !== state.me.principal;
  const show = async (s) => {
    badge.replaceChildren(stateBadge(s));
    if (s === 'succeeded') report.replaceChildren(await reportView(job));
    if (!delivered) await logView(log, job);
  };
  const ended = ENDED.includes(job.state);
  if (ended) {
    progress.textContent = `Ended: ${job.state.replace('_', ' ')}.`;
    await show(job.state);
  }
  if (delivered) return;
  if (!ended) await logView(log, job);
  // The event stream replays the job's events and, while it runs, adds each as it happens; it
  // ends with the job.
  let queries = 0;
  follow(job.id, (kind, e) => {
    if (kind === 'query') queries += 1;
    events.append(el('li', {}, el('time', { text: when(e.at_ms) }), ' ', el('strong', { text: kind }), ' ',
      e.detail && Object.keys(e.detail).length ? el('code', { text: JSON.stringify(e.detail) }) : ''));
    if (ended) return;
    progress.textContent = `${kind.replace('_', ' ')} · ${queries} ${queries === 1 ? 'query' : 'queries'} answered`;
    const now = kind === 'released' ? 'succeeded' : kind;
    if (ENDED.includes(now)) show(now).catch((err) => report.append(message('error', err.message)));
  }, signal).catch((e) => { if (e.name !== 'AbortError') progress.append(message('error', e.message)); });
}

/** The job's log lines into `box`. */
async function logView(box, job) {
  const log = await api('GET', `/v1/jobs/${encodeURIComponent(job.id)}/log`);
  box.replaceChildren(el('h2', { text: 'Log' }),
    log.lines.length
      ? el('ol', { class: 'log', id: 'log' }, log.lines.map((l) => el('li', { class: `log-${l.level}` }, el('span', { class: 'level', text: l.level }), ' ', l.message)))
      : message('note', 'The job logged nothing.'),
    log.dropped ? message('note', `${log.dropped} more lines were dropped by the log cap.`) : null);
}

/** A released report: its title and text, each table with a chart, each scalar; downloads. */
async function reportView(job) {
  const path = `/v1/jobs/${encodeURIComponent(job.id)}`;
  const r = await api('GET', `${path}/result`);
  const out = el('div', { class: 'outcome' });
  const tables = (r.tables || []).map((t) => (Array.isArray(t) ? { name: t[0], table: t[1] } : t));
  return el('article', { class: 'report' },
    el('h2', { class: 'report-title', text: r.title }),
    r.text ? el('div', { class: 'report-text' }, r.text.split('\n').map((p) => el('p', { text: p }))) : null,
    tables.map(({ name, table: t }) => el('section', { class: 'report-table' },
      el('h3', { text: name }),
      el('p', { class: 'hint', text: `${t.mechanism} · ${cost(t.cost)} · ± is the half-width of a 95% interval` }),
      resultTable(t),
      chartWithPicker(name, t))),
    r.scalars && r.scalars.length ? el('section', {}, el('h3', { text: 'Figures' }),
      table(['Name', 'Value', '± 95%'], r.scalars.map((s) => [s.name, sig(s.value), s.accuracy == null ? '' : sig(s.accuracy)]))) : null,
    el('div', { class: 'actions' },
      act(el('button', { type: 'button', text: 'Download JSON' }), out, async () => { await download(`${path}/result?format=json`, `${job.id}.json`); return message('ok', 'Saved.'); }),
      act(el('button', { type: 'button', text: 'Download CSV' }), out, async () => { await download(`${path}/result?format=csv`, `${job.id}.csv`); return message('ok', 'Saved.'); }),
      act(el('button', { type: 'button', text: 'Download receipt' }), out, async () => { await download(`${path}/receipt`, `${job.id}.receipt.json`); return message('ok', 'Saved.'); })),
    out);
}

function resultTable(t) {
  const rows = t.rows.map((row, r) => row.map((v, c) => {
    const acc = t.accuracy[r] && t.accuracy[r][c];
    if (v == null) return el('span', { class: 'suppressed', text: 'suppressed' });
    return acc == null || acc === undefined ? sig(v) : `${sig(v)} ± ${sig(acc)}`;
  }));
  return table(t.columns, rows, { class: 'result' });
}

function chartWithPicker(name, t) {
  const aggregates = t.columns.slice(t.key_columns);
  if (!aggregates.length || !t.rows.length) return null;
  const holder = el('figure', { class: 'chart' });
  const draw = (col) => holder.replaceChildren(barChart(name, t, col), el('figcaption', { text: `${col}: bars are the released values, whiskers their 95% intervals.` }));
  const picker = aggregates.length > 1
    ? el('select', { 'aria-label': 'Column to chart', onchange: (e) => draw(e.target.value) }, aggregates.map((a) => el('option', { value: a, text: a })))
    : null;
  draw(aggregates[0]);
  return el('div', {}, picker, holder);
}

/** A bar chart of one aggregate column, each bar with its 95% interval as an error bar. */
function barChart(title, t, column) {
  const c = t.columns.indexOf(column);
  const bars = t.rows.slice(0, 200).map((row, r) => ({
    label: row.slice(0, t.key_columns).map(String).join(' / ') || column,
    value: typeof row[c] === 'number' ? row[c] : null,
    half: t.accuracy[r] ? t.accuracy[r][c] : null,
  }));
  const W = 760, H = 360, L = 70, R = 20, T = 20, B = 110;
  const lo = Math.min(0, ...bars.map((b) => (b.value ?? 0) - (b.half ?? 0)));
  const hi = Math.max(0, ...bars.map((b) => (b.value ?? 0) + (b.half ?? 0))) || 1;
  const y = (v) => T + (H - T - B) * (1 - (v - lo) / (hi - lo));
  const step = (W - L - R) / Math.max(bars.length, 1);
  const chart = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', class: 'bar-chart' },
    svg('title', { text: `${title}: ${column}` }),
    svg('line', { x1: L, x2: W - R, y1: y(0), y2: y(0), class: 'axis' }));
  for (const tick of [lo, (lo + hi) / 2, hi]) {
    chart.append(svg('text', { x: L - 6, y: y(tick) + 4, 'text-anchor': 'end', class: 'tick', text: sig(tick) }));
  }
  bars.forEach((b, i) => {
    const x = L + i * step;
    if (b.value != null) {
      chart.append(svg('rect', { x: x + step * 0.15, width: step * 0.7, y: Math.min(y(b.value), y(0)), height: Math.abs(y(0) - y(b.value)), class: 'bar' }));
      if (b.half != null && b.half !== undefined) {
        const cx = x + step / 2;
        chart.append(svg('g', { class: 'error-bar' },
          svg('line', { x1: cx, x2: cx, y1: y(b.value - b.half), y2: y(b.value + b.half) }),
          svg('line', { x1: cx - step * 0.15, x2: cx + step * 0.15, y1: y(b.value - b.half), y2: y(b.value - b.half) }),
          svg('line', { x1: cx - step * 0.15, x2: cx + step * 0.15, y1: y(b.value + b.half), y2: y(b.value + b.half) })));
      }
    }
    const label = b.label.length > 24 ? `${b.label.slice(0, 23)}…` : b.label;
    chart.append(svg('text', { x: x + step / 2, y: H - B + 14, transform: `rotate(40 ${x + step / 2} ${H - B + 14})`, class: 'label', text: label }));
  });
  return chart;
}

// Operator: budgets per dataset.
async function budgetPage(body) {
  body.append(el('h1', { text: 'Budget' }));
  const b = await api('GET', '/v1/budget');
  if (!b.budgets.length) {
    body.append(message('note', 'No dataset is granted to you today.'));
    return;
  }
  body.append(table(['Dataset', 'Scenario', 'Measure', 'Per job', 'Per period', 'Spent this period', 'Remaining', 'Period'],
    b.budgets.map((v) => {
      const zcdp = v.privacy_measure === 'zcdp';
      return [v.dataset, v.scenario || '—', zcdp ? 'ρ (zCDP)' : 'ε (pure DP)', sig(zcdp ? v.rho_per_job : v.epsilon_per_job),
        sig(zcdp ? v.rho_per_period : v.epsilon_per_period), sig(v.spent_this_period),
        el('meter', { min: 0, max: zcdp ? v.rho_per_period : v.epsilon_per_period, value: v.remaining_this_period, title: sig(v.remaining_this_period) }),
        `${sig(v.period_secs / 86400)} days`];
    }), { id: 'budgets' }));
}

// Operator: what a query would cost and how accurate it would be, free.
async function estimatePage(body) {
  const sql = el('textarea', { rows: 4, required: true, 'aria-label': 'SQL', placeholder: 'SELECT district, COUNT(*) AS n FROM health_visits GROUP BY district' });
  const kind = el('select', { 'aria-label': 'Budget kind' },
    el('option', { value: 'epsilon', text: 'ε (pure-DP datasets)' }),
    el('option', { value: 'rho', text: 'ρ (zCDP datasets)' }),
    el('option', { value: 'accuracy', text: 'target 95% half-width' }));
  const amount = el('input', { type: 'number', step: 'any', min: '0', value: '0.5', required: true, 'aria-label': 'Amount' });
  const out = el('div', { class: 'outcome', id: 'estimate' });
  const form = el('form', { class: 'card' },
    el('label', {}, 'SQL', sql),
    el('div', { class: 'row' }, el('label', {}, 'Budget', kind), el('label', {}, 'Amount', amount)),
    el('div', { class: 'actions' }, el('button', { type: 'submit', class: 'primary', text: 'Estimate (no charge)' })),
    out);
  onSubmit(form, out, async () => {
    const r = await api('POST', '/v1/estimate', { sql: sql.value, [kind.value]: Number(amount.value) });
    return [facts([
      ['Dataset', r.dataset],
      ['Cost', cost(r)],
      ['Releases', String(r.releases)],
      ['Budget', r.budget && `per job ${sig(r.budget.per_job)}, ${sig(r.budget.available_this_period)} left this period${r.budget.over_per_job > 0 || r.budget.over_period > 0 ? ' — over the cap' : ''}`],
    ]), table(['Column', '± 95% (half-width)'], r.accuracy.map(([c, a]) => [c, a == null ? 'exact or key' : sig(a)]))];
  });
  body.append(el('h1', { text: 'Estimate' }), form);
}

// Holders, admins, auditors (and reviewers, reading): each dataset's burn-down, usage,
// suspensions and alerts, with suspend / resume (holders and admins).
async function datasetsPage(body) {
  body.append(el('h1', { text: 'Datasets' }));
  const custodian = ['admin', 'holder'].includes(state.me.role);
  // Reviewers read datasets and spending only: the console asks for nothing a role may not
  // read (each refusal would be an audited denial).
  const watcher = ['admin', 'holder', 'auditor'].includes(state.me.role);
  const [ds, usage, suspensions, alerts] = await Promise.all([
    api('GET', '/v1/datasets'),
    watcher ? api('GET', '/v1/admin/usage') : { usage: [] },
    watcher ? api('GET', '/v1/admin/suspensions') : { suspensions: [] },
    watcher ? api('GET', '/v1/admin/alerts') : { alerts: [] },
  ]);
  if (custodian) body.append(freezeControls());
  for (const d of ds.datasets) {
    const spend = await api('GET', `/v1/datasets/${encodeURIComponent(d.name)}/spend`);
    const suspended = suspensions.suspensions.filter((s) => s.name === d.name && s.kind.endsWith('dataset'));
    const out = el('div', { class: 'outcome' });
    const reason = el('input', { type: 'text', placeholder: 'Reason (recorded in the audit log)', 'aria-label': 'Reason' });
    const action = (verb, label, cls) => act(el('button', { type: 'button', class: cls, 'data-action': verb, text: label }), out, async () => {
      const r = await api('POST', `/v1/admin/datasets/${encodeURIComponent(d.name)}/${verb}`, { reason: reason.value });
      setTimeout(route, 600);
      return message('ok', `${r.name}: ${r.suspended ? 'suspended' : 'resumed'} (${r.scope}).`);
    });
    body.append(el('article', { class: 'card dataset', 'data-dataset': d.name },
      el('h2', {}, d.name, ' ', suspended.length ? el('span', { class: 'state state-failed', text: 'suspended' }) : el('span', { class: 'state state-succeeded', text: 'open' })),
      facts([
        ['Holder', d.holder],
        ['Grade', d.classification],
        ['Privacy unit', d.privacy_unit],
        ['Measure', d.privacy_measure],
        ['Dataset-wide cap', d.dataset_cap_per_period == null ? 'none' : `${sig(d.dataset_cap_per_period)} per ${sig(d.dataset_period_secs / 86400)} days`],
        ['Suspensions', suspended.map((s) => `${s.kind}: ${s.reason || 'no reason given'}`).join('; ')],
      ]),
      el('h3', { text: `Budget burn-down since ${spend.since}` }),
      burnDown(spend),
      usageTable(usage.usage.filter((u) => u.dataset === d.name)),
      alertsList(alerts.alerts.filter((a) => a.dataset === d.name)),
      custodian && el('div', { class: 'decide' }, reason, el('div', { class: 'actions' },
        action('suspend', 'Suspend', 'danger'), action('resume', 'Resume', 'secondary'),
        action('hold', 'Hold releases', 'secondary'), action('unhold', 'Release hold', 'secondary'))),
      out));
  }
}

function freezeControls() {
  const out = el('div', { class: 'outcome' });
  const reason = el('input', { type: 'text', placeholder: 'Reason', 'aria-label': 'Freeze reason' });
  const holder = state.me.role === 'holder' ? state.me.principal : undefined;
  const verb = (v) => act(el('button', { type: 'button', class: v === 'freeze' ? 'danger' : 'secondary', 'data-action': v, text: v === 'freeze' ? (holder ? 'Freeze all my datasets' : 'Freeze the platform') : 'Unfreeze' }), out, async () => {
    const r = await api('POST', `/v1/admin/${v}`, { reason: reason.value, holder });
    setTimeout(route, 600);
    return message('ok', `${r.scope}: ${r.frozen ? 'frozen' : 'unfrozen'} (${r.datasets.length} datasets).`);
  });
  return el('div', { class: 'card emergency' }, el('h2', { text: 'Emergency' }), reason, el('div', { class: 'actions' }, verb('freeze'), verb('unfreeze')), out);
}

function usageTable(rows) {
  if (!rows.length) return message('note', 'No charges yet.');
  return table(['Operator', 'Jobs', 'Queries', 'ε', 'ρ', 'δ'], rows.map((u) => [u.operator, String(u.jobs), String(u.queries), sig(u.epsilon), sig(u.rho), sig(u.delta)]));
}

function alertsList(alerts) {
  if (!alerts.length) return null;
  return el('div', {}, el('h3', { text: 'Alerts' }), table(['When', 'Rule', 'Operator', 'Watching', 'Level', 'Action'],
    alerts.slice(0, 20).map((a) => [when(a.at_ms), a.rule, a.operator, a.when, sig(a.share), a.action])));
}

/** Remaining dataset-wide budget over the window (or spend, where no cap is set), and each
 * operator's cumulative spend, by day. */
function burnDown(spend) {
  const unit = spend.measure === 'rho' ? 'ρ' : 'ε';
  const amount = (d) => (spend.measure === 'rho' ? d.rho : d.epsilon);
  const start = Date.parse(`${spend.since}T00:00:00Z`);
  const days = Math.max(1, Math.round((Date.now() - start) / 86_400_000));
  const ops = [...new Set(spend.days.map((d) => d.operator))];
  const perOp = new Map(ops.map((o) => [o, new Array(days).fill(0)]));
  for (const d of spend.days) {
    const i = Math.min(days - 1, Math.max(0, Math.round((Date.parse(`${d.day}T00:00:00Z`) - start) / 86_400_000)));
    perOp.get(d.operator)[i] += amount(d);
  }
  const cumulative = (xs) => xs.reduce((acc, x) => [...acc, (acc.at(-1) ?? 0) + x], []);
  const total = cumulative(new Array(days).fill(0).map((_, i) => ops.reduce((s, o) => s + perOp.get(o)[i], 0)));
  const cap = spend.cap_per_period;
  const main = cap == null ? total : total.map((t) => cap - t);
  const series = [{ name: cap == null ? `all operators (${unit} spent)` : `${unit} left of the dataset-wide cap`, values: main, cls: 'total' },
    ...ops.map((o, i) => ({ name: o, values: cumulative(perOp.get(o)), cls: `op op-${i % 6}` }))];
  const W = 760, H = 260, L = 60, R = 150, T = 15, B = 30;
  const hi = Math.max(cap ?? 0, ...series.flatMap((s) => s.values), 1e-9);
  const x = (i) => L + (W - L - R) * (days === 1 ? 0.5 : i / (days - 1));
  const y = (v) => T + (H - T - B) * (1 - v / hi);
  const chart = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', class: 'burn-down' },
    svg('title', { text: `${spend.dataset}: budget burn-down` }),
    svg('line', { x1: L, x2: W - R, y1: y(0), y2: y(0), class: 'axis' }),
    svg('text', { x: L - 6, y: y(hi) + 4, 'text-anchor': 'end', class: 'tick', text: sig(hi) }),
    svg('text', { x: L - 6, y: y(0) + 4, 'text-anchor': 'end', class: 'tick', text: '0' }),
    svg('text', { x: L, y: H - 8, class: 'tick', text: spend.since }),
    svg('text', { x: W - R, y: H - 8, 'text-anchor': 'end', class: 'tick', text: 'today' }));
  series.forEach((s, k) => {
    chart.append(svg('polyline', { class: `series ${s.cls}`, points: s.values.map((v, i) => `${x(i)},${y(v)}`).join(' ') }),
      svg('text', { x: W - R + 8, y: T + 14 * (k + 1), class: `legend ${s.cls}`, text: s.name }));
  });
  return el('figure', { class: 'chart' }, chart);
}

// Staff: the audit log with filters and verification.
async function auditPage(body) {
  body.append(el('h1', { text: 'Audit log' }));
  const verdict = el('div', { class: 'outcome', id: 'verify' });
  const verify = act(el('button', { type: 'button', class: 'primary', id: 'verify-button', text: 'Verify the log' }), verdict, async () => {
    const v = await api('GET', '/v1/audit/verify');
    return v.ok
      ? message('ok', `OK: ${v.entries} entries, hash chain intact, ${v.checkpoints} signed checkpoint(s) valid (last at entry ${v.last_checkpoint ?? 'none'}). Checked with the broker's key ${v.public_key.slice(0, 16)}…; check independently with \`sluice audit verify --public-key\`.`)
      : message('error', `BROKEN at entry ${v.broken_at}: ${v.problem}`);
  });
  const field = (name, value) => el('label', {}, name, el('input', { type: 'text', name, value: value || '' }));
  const holder = state.me.role === 'holder';
  const datasetField = holder
    ? el('label', {}, 'dataset', el('select', { name: 'dataset' }, state.me.holds.map((d) => el('option', { value: d, text: d }))))
    : field('dataset');
  const filters = el('form', { class: 'row filters' }, field('job'), field('operator'), datasetField,
    el('button', { type: 'submit', text: 'Filter' }));
  const list = el('div', { id: 'audit-entries' });
  const load = async (after) => {
    const q = new URLSearchParams({ limit: '100', after: String(after) });
    for (const [k, v] of new FormData(filters)) if (v) q.set(k, v);
    const page = await api('GET', `/v1/audit?${q}`);
    const more = el('div', { class: 'actions' });
    if (page.next_after != null) {
      more.append(el('button', { type: 'button', text: 'Next 100', onclick: () => { more.remove(); load(page.next_after).catch((e) => list.append(message('error', e.message))); } }));
    }
    list.append(auditTable(page.entries), more);
  };
  filters.addEventListener('submit', (e) => {
    e.preventDefault();
    list.replaceChildren();
    load(0).catch((err) => list.append(message('error', err.message)));
  });
  body.append(el('div', { class: 'actions' }, verify), verdict, filters, list);
  if (!holder || state.me.holds.length) await load(0);
}

/** Audit entries: one row of who, what and when each, and its detail on a row of its own. */
function auditTable(entries) {
  const headers = ['#', 'When', 'Kind', 'Actor', 'Job', 'Operator', 'Dataset'];
  return el('table', { class: 'audit' },
    el('thead', {}, el('tr', {}, headers.map((h) => el('th', { scope: 'col', text: h })))),
    entries.map((e) => el('tbody', {},
      el('tr', {}, [String(e.seq), when(e.at_ms), e.kind, e.actor, e.job || '', e.operator || '', e.dataset || ''].map((c) => el('td', { text: c }))),
      el('tr', { class: 'detail' }, el('td', { colspan: headers.length }, el('code', { text: JSON.stringify(e.detail) }))))));
}

// Everyone: check a receipt (and the report it should cover) against this broker's key.
async function receiptsPage(body) {
  const receipt = el('input', { type: 'file', accept: '.json,application/json', id: 'receipt-file', required: true });
  const report = el('input', { type: 'file', accept: '.json,.csv', id: 'report-file' });
  const out = el('div', { class: 'outcome', id: 'receipt-verdict' });
  const form = el('form', { class: 'card' },
    el('label', {}, 'Receipt (JSON)', receipt),
    el('label', {}, 'Report it covers (JSON or CSV, optional)', report),
    el('div', { class: 'actions' }, el('button', { type: 'submit', class: 'primary', text: 'Verify' })),
    out);
  onSubmit(form, out, async () => {
    let parsed;
    try {
      parsed = JSON.parse(await receipt.files[0].text());
    } catch {
      throw new Error('the receipt file is not JSON');
    }
    const check = { receipt: parsed };
    if (report.files[0]) check.report = await report.files[0].text();
    const v = await api('POST', '/v1/receipts/verify', check);
    return v.valid
      ? message('ok', `Valid: signed by this broker${v.report_checked ? ', and it covers the report' : ''}. Job ${v.job}, operator ${v.operator}, ε=${sig(v.epsilon)}${v.rho ? `, ρ=${sig(v.rho)}` : ''}, released at audit entry ${v.audit_seq}.`)
      : message('error', `Not valid: ${v.problem}`);
  });
  body.append(el('h1', { text: 'Verify a receipt' }),
    el('p', { class: 'hint', text: 'Offline, the same check is `sluice receipt verify` with the broker\'s public key.' }), form);
}

// Anyone, without a token: the public register, objections and their status.
async function publicPage(body, [tracking]) {
  body.append(el('h1', { text: 'Public register' }));
  const r = await fetch('/public/register', { cache: 'no-store', signal: state.abort?.signal });
  const register = await r.json();
  if (!r.ok) {
    body.append(message('note', register.error ? register.error.message : `the register could not be read (${r.status})`));
    return;
  }
  body.append(
    el('p', { class: 'hint', text: `What this platform does with the data it holds: no figure here comes from a row of data. Months in ${register.time_zone}; made ${when(register.generated_ms)}; the broker's key ${register.public_key}.` }),
    el('h2', { text: 'Scenarios in force' }),
    table(['Operator', 'Scenario', 'Datasets', 'Purpose', 'Use', 'Review', 'Until'],
      register.scenarios.map((g) => [g.operator, g.scenario || '—', g.datasets.join(', '), g.purpose, g.usage, g.review, g.expires]), { id: 'public-scenarios' }),
    el('h2', { text: 'Privacy loss charged, by dataset and month' }),
    register.spend.length
      ? table(['Month', 'Dataset', 'ε', 'ρ', 'δ', 'Operators', 'Jobs'],
        register.spend.map((m) => [m.month, m.dataset, sig(m.epsilon), sig(m.rho), sig(m.delta), String(m.operators), String(m.jobs)]), { id: 'public-spend' })
      : message('note', 'Nothing charged yet.'),
    el('h2', { text: 'Reports released, by dataset and month' }),
    register.releases.length
      ? table(['Month', 'Dataset', 'Reports'], register.releases.map((m) => [m.month, m.dataset, String(m.releases)]))
      : message('note', 'No report released yet.'),
    el('h2', { text: 'Suspensions in force' }),
    register.suspensions.length
      ? table(['Kind', 'Name', 'Reason'], register.suspensions.map((x) => [x.kind, x.name, x.reason]))
      : message('note', 'None.'),
    el('h2', { text: 'Registrations (登记)' }),
    register.registrations.length
      ? table(['Number', 'Kind', 'Owner', 'Status', 'Version'],
        register.registrations.map((r) => [r.number, r.kind, r.owner, r.status, String(r.version)]), { id: 'public-registrations' })
      : message('note', 'Nothing registered yet.'),
    el('p', { text: `Objections: ${register.objections.open} open, ${register.objections.upheld} upheld, ${register.objections.dismissed} dismissed.` }),
    objectionForm(), trackingForm(tracking));
}

/** Files an objection (no token): its tracking id is shown once. */
function objectionForm() {
  const subject = el('input', { type: 'text', maxlength: 200, required: true, 'aria-label': 'Subject', placeholder: 'A job id, a scenario, a dataset or an operator' });
  const text = el('textarea', { rows: 4, maxlength: 4000, required: true, 'aria-label': 'Objection' });
  const contact = el('input', { type: 'text', maxlength: 200, 'aria-label': 'Contact', placeholder: 'Optional: how to reach you (never published)' });
  const out = el('div', { class: 'outcome', id: 'objection-filed' });
  const form = el('form', { class: 'card', id: 'objection-form' }, el('h2', { text: 'Object to a use of data (异议)' }),
    el('label', {}, 'About', subject), el('label', {}, 'Objection', text), el('label', {}, 'Contact', contact),
    el('div', { class: 'actions' }, el('button', { type: 'submit', class: 'primary', text: 'File the objection' })), out);
  onSubmit(form, out, async () => {
    const r = await fetch('/public/objections', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ subject: subject.value, text: text.value, contact: contact.value || null }),
    });
    const v = await r.json();
    if (!r.ok) throw new Error(v.error ? v.error.message : `refused (${r.status})`);
    return [message('ok', 'Filed. Keep this tracking id to follow it:'), el('p', {}, el('code', { class: 'tracking', text: v.id }))];
  });
  return form;
}

/** Looks up an objection's state by its tracking id. */
function trackingForm(tracking) {
  const id = el('input', { type: 'text', 'aria-label': 'Tracking id', placeholder: 'obj-…', value: tracking || '' });
  const out = el('div', { class: 'outcome', id: 'objection-status' });
  const form = el('form', { class: 'card' }, el('h2', { text: 'Follow an objection' }), id,
    el('div', { class: 'actions' }, el('button', { type: 'submit', text: 'Look up' })), out);
  onSubmit(form, out, async () => {
    const r = await fetch(`/public/objections/${encodeURIComponent(id.value.trim())}`);
    const v = await r.json();
    if (!r.ok) throw new Error(v.error ? v.error.message : `refused (${r.status})`);
    return facts([['Filed', when(v.filed_ms)], ['State', v.status], ['Reason', v.reason], ['Resolved', when(v.decided_ms)]]);
  });
  return form;
}

// Reviewers (admins and auditors read): objections to resolve.
async function objectionsPage(body) {
  body.append(el('h1', { text: 'Objections' }));
  const [{ objections }, { operators }] = await Promise.all([
    api('GET', '/v1/objections?status=all'), api('GET', '/v1/operators')]);
  if (!objections.length) body.append(message('note', 'No objection has been filed.'));
  for (const o of objections) {
    const out = el('div', { class: 'outcome' });
    const reason = el('textarea', { rows: 2, 'aria-label': 'Reason', placeholder: 'Reason (shown to the filer and recorded in the audit log)' });
    const operator = el('select', { 'aria-label': 'Operator it concerns' }, el('option', { value: '', text: 'no operator' }),
      operators.map((c) => el('option', { value: c.operator, text: c.operator })));
    const decide = (d) => act(el('button', { type: 'button', class: d === 'uphold' ? 'danger' : 'secondary', 'data-decision': d, text: d === 'uphold' ? 'Uphold' : 'Dismiss' }), out, async () => {
      const r = await api('POST', `/v1/objections/${encodeURIComponent(o.id)}/${d}`, { reason: reason.value, operator: operator.value || null });
      return message('ok', `${r.id} is now ${r.status}.`);
    });
    body.append(el('article', { class: 'card objection', 'data-objection': o.id },
      el('h2', {}, el('span', { text: o.subject }), ' ', el('span', { class: `state state-${o.status === 'open' ? 'pending_review' : o.status === 'upheld' ? 'failed' : 'succeeded'}`, text: o.status })),
      facts([['Id', el('code', { text: o.id })], ['Filed', when(o.filed_ms)], ['Operator', o.operator], ['Decided', o.decided_by && `${o.decided_by}, ${when(o.decided_ms)}: ${o.reason}`]]),
      el('pre', { class: 'params', text: o.text }),
      o.status === 'open' && state.me.role === 'reviewer' && el('div', { class: 'decide' }, reason, el('label', {}, 'Concerns', operator),
        el('div', { class: 'actions' }, decide('uphold'), decide('dismiss'))),
      out));
  }
}

// Staff: each operator's credit record.
async function operatorsPage(body) {
  body.append(el('h1', { text: 'Operators' }));
  const { operators } = await api('GET', '/v1/operators');
  body.append(table(['Operator', 'Jobs', 'Released', 'Rejected', 'Suspensions', 'Release holds', 'Repairs', 'Objections upheld', 'Now'],
    operators.map((c) => [c.operator, String(c.jobs), String(c.released), String(c.rejected), String(c.suspensions), String(c.release_holds), String(c.repairs), String(c.objections_upheld), c.suspended_now ? 'suspended' : 'in good standing']), { id: 'credit' }));
  for (const c of operators.filter((x) => x.events.length)) {
    body.append(el('h2', { text: c.operator }), table(['#', 'When', 'What', 'Reason'], c.events.map((e) => [String(e.seq), when(e.at_ms), e.kind, e.reason || ''])));
  }
}

/** An amount in fen as CNY. */
function cny(fen) {
  return `${Math.floor(fen / 100)}.${String(fen % 100).padStart(2, '0')}`;
}

// Holders, operators (their own), admins and auditors (any): signed monthly statements.
async function statementsPage(body) {
  const role = state.me.role;
  const own = role === 'holder' || role === 'operator';
  const kind = el('select', { 'aria-label': 'Whose', disabled: own },
    el('option', { value: 'holders', text: 'holder' }), el('option', { value: 'operators', text: 'operator' }));
  kind.value = role === 'operator' ? 'operators' : 'holders';
  const party = el('input', { type: 'text', 'aria-label': 'Party', value: own ? state.me.principal : '', readonly: own, required: true });
  // Until the user picks a month, ask for `current`: this month in the policy's time zone, which
  // the browser's own clock may not share; the answer then fills the field.
  const month = el('input', { type: 'month', 'aria-label': 'Month', value: new Date().toISOString().slice(0, 7), required: true });
  let picked = false;
  month.addEventListener('input', () => { picked = true; });
  const out = el('div', { class: 'outcome', id: 'statement' });
  const form = el('form', { class: 'card row' }, el('label', {}, 'Whose', kind), el('label', {}, 'Party', party),
    el('label', {}, 'Month', month), el('button', { type: 'submit', class: 'primary', text: 'Show' }));
  onSubmit(form, out, async () => {
    const path = `/v1/statements/${kind.value}/${encodeURIComponent(party.value.trim())}/${picked ? encodeURIComponent(month.value) : 'current'}`;
    const s = await api('GET', path);
    month.value = s.month;
    const t = s.totals;
    const saved = el('div', { class: 'outcome' });
    return [
      el('p', { text: `${s.kind} ${s.party}, ${s.month} (${s.time_zone}): ${t.lines} line(s). Fees ${cny(t.fee_fen)} CNY, of which ${cny(t.earmark_fen)} CNY earmarked for public data; ε=${sig(t.epsilon)}, ρ=${sig(t.rho)}, ${t.queries} queries (${t.cached} cached), ${t.cells} cells.` }),
      table(['Operator', 'Holder', 'Use', 'Job', 'Dataset', 'ε', 'ρ', 'Queries', 'Cells', 'Fee CNY'],
        s.lines.map((l) => [l.operator, l.holder, l.usage, l.job, l.dataset, sig(l.epsilon), sig(l.rho), `${l.queries} (${l.cached} cached)`, String(l.cells), `${cny(l.fee_fen)}${l.capped ? ' (capped)' : ''}`]), { id: 'statement-lines' }),
      el('div', { class: 'actions' }, act(el('button', { type: 'button', text: 'Download signed JSON' }), saved, async () => {
        saveBlob(new Blob([JSON.stringify(s, null, 2)], { type: 'application/json' }), `statement-${s.kind}-${s.party}-${s.month}.json`);
        return message('ok', 'Saved: `sluice statement verify` checks it offline.');
      })),
      saved];
  });
  body.append(el('h1', { text: 'Statements' }),
    el('p', { class: 'hint', text: 'Each line is one job\'s use of one dataset in the month, priced by its scenario\'s tariff (public-interest use is free). ε and ρ are the ledger\'s.' }),
    form, out);
}

// ---- signing in --------------------------------------------------------------------------------

function signInPage(problem) {
  const token = el('input', { type: 'password', id: 'token', autocomplete: 'off', required: true, 'aria-label': 'Token' });
  const form = el('form', { class: 'card signin', id: 'sign-in' },
    el('h1', { text: 'Sign in' }),
    el('label', {}, 'Token', token),
    el('p', { class: 'hint', text: 'The bearer token your admin gave you (`sluice token create`). It is kept in this tab only.' }),
    el('p', {}, el('a', { href: '#/public', text: 'The public register' }), ' needs no token.'),
    el('div', { class: 'actions' }, el('button', { type: 'submit', class: 'primary', text: 'Sign in' })),
    problem ? message('error', problem) : null);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    state.token = token.value.trim();
    sessionStorage.setItem(TOKEN_KEY, state.token);
    await start();
  });
  document.getElementById('main').replaceChildren(form);
  document.getElementById('nav').replaceChildren();
  document.getElementById('who').textContent = '';
  document.getElementById('sign-out').hidden = true;
  token.focus();
}

function signOut(problem) {
  state.token = null;
  state.me = null;
  state.abort?.abort();
  state.abort = null;
  sessionStorage.removeItem(TOKEN_KEY);
  signInPage(problem);
}

async function start() {
  if (!state.token) return route();
  try {
    state.me = await api('GET', '/v1/me');
  } catch (e) {
    return signOut(e.message);
  }
  document.getElementById('who').textContent = `${state.me.principal} (${state.me.role})`;
  document.getElementById('sign-out').hidden = false;
  document.getElementById('nav').replaceChildren(...Object.entries(PAGES)
    .filter(([, p]) => p.title && p.roles.includes(state.me.role))
    .map(([name, p]) => el('a', { href: `#/${name}`, 'data-page': name, text: p.title })));
  return route();
}

window.addEventListener('hashchange', route);
document.getElementById('sign-out').addEventListener('click', () => signOut());
start();
