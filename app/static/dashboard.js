// Regio runs dashboard: runs across the user's sessions (GET /api/runs) with filters, the review
// of their products (marks valid / rejected and comments, /api/runs/ID/review), and the
// automation: standing requests, schedules and saved default parameters.

import { $, api, el, say } from './common.js';
import { stageText } from './stages.js';

const root = document.getElementById('dashboard');
const ACTIVE = ['QUEUED', 'EXECUTING'];
const PAGE = 50;

const state = {
  offset: 0,
  total: 0,
  runs: [],
  open: null, // the run whose review is shown
  sessions: [],
  scripts: [],
  timer: null,
};

// ------------------------------------------------------------------------------------ helpers

const when = (iso) => (iso ? iso.slice(0, 19).replace('T', ' ') : '');

function duration(seconds) {
  if (seconds === null || seconds === undefined) return '';
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

function triggerBadge(trigger, detail) {
  const [kind, id] = (trigger || 'manual').split(':');
  const label = { manual: 'manual', standing: 'standing request', schedule: 'schedule' }[kind] || kind;
  const title = detail && detail.title ? `${label}: ${detail.title}` : id ? `${label} ${id}` : label;
  return el('span', { class: `trigger trigger-${kind}`, title, 'data-testid': 'run-trigger' }, label);
}

function parseJSON(text, what) {
  if (!text.trim()) return {};
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`${what}: not valid JSON (e.g. {"steps": 2})`);
  }
}

function fillSelect(select, options, keepFirst = true) {
  const current = select.value;
  const first = keepFirst ? select.options[0] : null;
  select.replaceChildren(...(first ? [first] : []), ...options.map(([value, label]) => el('option', { value }, label)));
  if ([...select.options].some((o) => o.value === current)) select.value = current;
}

// ------------------------------------------------------------------------------------- filters

const filtersForm = $('filters');

function filters() {
  const out = new URLSearchParams();
  for (const [name, value] of new FormData(filtersForm)) if (value) out.set(name, value);
  return out;
}

function loadFiltersFromURL() {
  const params = new URLSearchParams(window.location.search);
  for (const [name, value] of params) {
    const field = filtersForm.elements.namedItem(name);
    if (!field) continue;
    if (field.tagName === 'SELECT' && ![...field.options].some((o) => o.value === value)) {
      field.append(el('option', { value }, value)); // e.g. standing:<id>, before the list is known
    }
    field.value = value;
  }
}

filtersForm.addEventListener('change', () => {
  state.offset = 0;
  state.open = null;
  loadRuns();
});
$('refresh').addEventListener('click', () => loadRuns());
$('page-prev').addEventListener('click', () => {
  state.offset = Math.max(0, state.offset - PAGE);
  loadRuns();
});
$('page-next').addEventListener('click', () => {
  state.offset += PAGE;
  loadRuns();
});

// ---------------------------------------------------------------------------------------- runs

async function loadRuns() {
  const query = filters();
  const search = query.toString();
  window.history.replaceState(null, '', `${window.location.pathname}${search ? `?${search}` : ''}`);
  query.set('limit', PAGE);
  query.set('offset', state.offset);
  let page;
  try {
    page = await api('GET', `/api/runs?${query}`);
  } catch (error) {
    say(error.message);
    return;
  }
  say('');
  state.runs = page.runs;
  state.total = page.total;
  fillSelect(filtersForm.elements.namedItem('session'), page.sessions.map((s) => [s.id, s.title ? `${s.title} (${s.id})` : s.id]));
  fillSelect(filtersForm.elements.namedItem('script'), page.scripts.map((s) => [s, s]));
  $('total').textContent = page.total === 1 ? '1 run' : `${page.total} runs`;
  $('total').dataset.total = page.total;
  $('page-prev').disabled = state.offset === 0;
  $('page-next').disabled = state.offset + page.runs.length >= page.total;
  renderRuns();
  if (state.open && state.runs.some((r) => r.id === state.open)) await showReview(state.open);
  scheduleRefresh();
}

function scheduleRefresh() {
  clearTimeout(state.timer);
  if (!state.open && state.runs.some((r) => ACTIVE.includes(r.phase))) state.timer = setTimeout(loadRuns, 3000);
}

function renderRuns() {
  const body = $('runs');
  body.replaceChildren(...state.runs.map(runRow));
  if (!state.runs.length) body.append(el('tr', {}, el('td', { colspan: 8, class: 'muted', 'data-testid': 'no-runs' }, 'No run matches.')));
}

function runRow(run) {
  const p = run.products;
  const counts = el(
    'span',
    { class: 'counts', 'data-testid': 'run-products', dataset: { count: p.count, valid: p.valid, rejected: p.rejected } },
    `${p.count}`,
    p.valid ? el('span', { class: 'valid', title: 'marked valid' }, ` ✓${p.valid}`) : null,
    p.rejected ? el('span', { class: 'rejected', title: 'rejected' }, ` ✗${p.rejected}`) : null,
    p.comments ? el('span', { class: 'muted', title: 'comments' }, ` · ${p.comments} comment${p.comments === 1 ? '' : 's'}`) : null,
  );
  return el(
    'tr',
    { 'data-testid': 'run-row', dataset: { run: run.id, phase: run.phase, trigger: run.trigger, session: run.session_id } },
    el('td', {}, when(run.created)),
    el('td', {}, el('a', { href: run.links.page, 'data-testid': 'run-link' }, run.session_title || run.session_id)),
    el('td', {}, run.script),
    el('td', {}, triggerBadge(run.trigger, run.trigger_detail)),
    el('td', { class: `phase-${run.phase.toLowerCase()}`, 'data-testid': 'run-phase', title: run.error || '' }, run.phase,
      run.phase === 'EXECUTING' ? el('span', { class: 'muted', 'data-testid': 'run-stage' }, ` · ${stageText(run)}`) : null),
    el('td', { class: 'num' }, duration(run.duration)),
    el('td', { class: 'num' }, counts),
    el(
      'td',
      {},
      el('button', { type: 'button', 'data-testid': 'review-button', onclick: () => toggleReview(run.id) }, state.open === run.id ? 'Close' : 'Review'),
      ' ',
      ['COMPLETED', 'ERROR', 'ABORTED'].includes(run.phase) ? el('a', { href: run.links.bundle, 'data-testid': 'bundle-link' }, 'bundle') : null,
    ),
  );
}

// -------------------------------------------------------------------------------------- review

async function toggleReview(runId) {
  if (state.open === runId) {
    state.open = null;
    renderRuns();
    scheduleRefresh();
    return;
  }
  state.open = runId;
  renderRuns();
  await showReview(runId);
}

async function showReview(runId) {
  let data;
  try {
    data = await api('GET', `/api/runs/${encodeURIComponent(runId)}/review`);
  } catch (error) {
    say(error.message);
    return;
  }
  const row = document.querySelector(`tr[data-testid="run-row"][data-run="${CSS.escape(runId)}"]`);
  if (!row || state.open !== runId) return;
  document.querySelectorAll('tr.review-row').forEach((r) => r.remove());
  row.after(el('tr', { class: 'review-row', 'data-testid': 'review', dataset: { run: runId } }, el('td', { colspan: 8 }, reviewPanel(runId, data))));
}

function markText(mark) {
  if (!mark) return 'not reviewed';
  return `${mark.mark} by ${mark.by_name || 'someone'} at ${when(mark.at)}`;
}

function commentList(comments) {
  return el('ul', { class: 'comments' }, comments.map((c) => el('li', { 'data-testid': 'comment', dataset: { id: c.id } }, el('strong', {}, c.author_name || 'someone'), ` (${when(c.at)}): `, c.text)));
}

function commentForm(runId, product, enabled) {
  const input = el('input', { type: 'text', maxlength: 4000, placeholder: 'Add a comment', 'data-testid': 'comment-input', disabled: !enabled });
  const submit = async (event) => {
    event.preventDefault();
    if (!input.value.trim()) return;
    try {
      await api('POST', `/api/runs/${encodeURIComponent(runId)}/review/comments`, { product, text: input.value });
      await afterReviewChange(runId);
    } catch (error) {
      say(error.message);
    }
  };
  return el('form', { class: 'comment-form', onsubmit: submit }, input, el('button', { type: 'submit', 'data-testid': 'comment-submit', disabled: !enabled }, 'Comment'));
}

async function setMark(runId, product, mark) {
  try {
    await api('PUT', `/api/runs/${encodeURIComponent(runId)}/review/marks`, { product, mark });
    await afterReviewChange(runId);
  } catch (error) {
    say(error.message);
  }
}

async function afterReviewChange(runId) {
  state.open = runId;
  await loadRuns(); // new counts; the review is shown again
}

function reviewPanel(runId, data) {
  const can = data.can_review;
  const rows = data.products.map((p) => {
    const current = p.mark ? p.mark.mark : null;
    const button = (value, label) =>
      el('button', {
        type: 'button',
        class: `mark-${value}${current === value ? ' active' : ''}`,
        'data-testid': `mark-${value}`,
        'aria-pressed': current === value ? 'true' : 'false',
        disabled: !can,
        onclick: () => setMark(runId, p.file, current === value ? null : value),
      }, label);
    return el(
      'tr',
      { 'data-testid': 'product-review-row', dataset: { product: p.file, mark: current || '' } },
      el('td', {}, el('a', { href: p.url || `/api/runs/${runId}/products/${p.file}` }, p.file), el('div', { class: 'muted' }, p.kind, p.description ? `: ${p.description}` : '')),
      el('td', {}, button('valid', 'Valid'), ' ', button('rejected', 'Rejected'), el('div', { class: 'muted', 'data-testid': 'mark-state' }, markText(p.mark))),
      el('td', {}, commentList(p.comments), commentForm(runId, p.file, can)),
    );
  });
  return el(
    'div',
    {},
    can ? null : el('p', { class: 'hint', 'data-testid': 'review-read-only' }, 'You may read this review, not change it (read-only access, or the run has not ended).'),
    data.products.length
      ? el('table', { class: 'review-products' }, el('thead', {}, el('tr', {}, el('th', {}, 'Product'), el('th', {}, 'Mark'), el('th', {}, 'Comments'))), el('tbody', {}, rows))
      : el('p', { class: 'muted' }, 'No product.'),
    el('h3', {}, 'About the run'),
    el('div', { 'data-testid': 'run-comments' }, commentList(data.comments), commentForm(runId, null, can)),
  );
}

// ---------------------------------------------------------------------------------- automation

function itemButtons(kind, item, url) {
  const toggle = el('button', {
    type: 'button',
    'data-testid': `${kind}-toggle`,
    onclick: async () => {
      try {
        await api('PATCH', url, { enabled: !item.enabled });
        await loadAutomation();
      } catch (error) {
        say(error.message);
      }
    },
  }, item.enabled ? 'Pause' : 'Resume');
  const remove = el('button', {
    type: 'button',
    'data-testid': `${kind}-delete`,
    onclick: async () => {
      try {
        await api('DELETE', url);
        await loadAutomation();
      } catch (error) {
        say(error.message);
      }
    },
  }, 'Delete');
  return [' ', toggle, ' ', remove];
}

function sessionLabel(id) {
  const s = state.sessions.find((x) => x.id === id);
  return s && s.title ? s.title : id;
}

function standingItem(item) {
  const scripts = item.scripts.map((s) => s.script).join(', ');
  const what = item.instruments.length ? item.instruments.join(', ') : 'any instrument';
  return el(
    'li',
    { 'data-testid': 'standing-row', dataset: { id: item.id, enabled: item.enabled } },
    el('strong', {}, sessionLabel(item.session_id)), `: ${scripts} on ${item.scope === 'new' ? 'new' : 'all'} data of ${what}`,
    item.enabled ? '' : ' (paused)',
    el('div', { class: 'muted' }, item.last_triggered ? `last fired ${when(item.last_triggered)}` : 'not fired yet', item.last_error ? ` — ${item.last_error}` : '', ' · ',
      el('a', { href: `/runs?trigger=${encodeURIComponent(`standing:${item.id}`)}` }, 'its runs')),
    ...itemButtons('standing', item, `/api/standing-requests/${item.id}`),
  );
}

function scheduleItem(item) {
  const timing = item.cron ? `${item.cron} (${item.timezone})` : `every ${item.interval} s`;
  return el(
    'li',
    { 'data-testid': 'schedule-row', dataset: { id: item.id, enabled: item.enabled } },
    el('strong', {}, sessionLabel(item.session_id)), `: ${item.script}, ${timing}`, item.enabled ? '' : ' (paused)',
    el('div', { class: 'muted' }, item.next_fire ? `next ${when(item.next_fire)} UTC` : '', item.last_error ? ` — ${item.last_error}` : '', ' · ',
      el('a', { href: `/runs?trigger=${encodeURIComponent(`schedule:${item.id}`)}` }, 'its runs')),
    ...itemButtons('schedule', item, `/api/schedules/${item.id}`),
  );
}

function defaultsItems(saved, scope) {
  return Object.entries(saved || {}).map(([script, entry]) =>
    el(
      'li',
      { 'data-testid': 'defaults-row', dataset: { script, scope } },
      el('strong', {}, script), ` (${scope === 'site' ? 'everyone' : 'you'}): `, el('code', {}, JSON.stringify(entry.params)),
      ' ',
      el('button', {
        type: 'button',
        'data-testid': 'defaults-delete',
        onclick: async () => {
          try {
            await api('DELETE', `/api/defaults/${encodeURIComponent(script)}?scope=${scope}`);
            await loadAutomation();
          } catch (error) {
            say(error.message);
          }
        },
      }, 'Forget'),
    ),
  );
}

async function loadAutomation() {
  try {
    const [sessions, scripts, standing, schedules, defaults] = await Promise.all([
      api('GET', '/api/sessions'),
      api('GET', '/api/scripts'),
      api('GET', '/api/standing-requests'),
      api('GET', '/api/schedules'),
      api('GET', '/api/defaults'),
    ]);
    state.sessions = sessions;
    state.scripts = scripts;
    const sessionOptions = sessions.map((s) => [s.id, s.title ? `${s.title} (${s.id})` : s.id]);
    const scriptOptions = scripts.map((s) => [s.name, `${s.title} (${s.name})`]);
    for (const id of ['standing-session', 'schedule-session']) fillSelect($(id), sessionOptions, false);
    for (const id of ['standing-script', 'schedule-script', 'defaults-script']) fillSelect($(id), scriptOptions, false);
    $('standing-list').replaceChildren(...standing.map(standingItem));
    $('schedule-list').replaceChildren(...schedules.map(scheduleItem));
    $('defaults-list').replaceChildren(...defaultsItems(defaults.site, 'site'), ...defaultsItems(defaults.user, 'user'));
  } catch (error) {
    say(error.message);
  }
}

function onSubmit(id, make) {
  $(id).addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      await make(new FormData(event.target));
      say('Saved.', 'info');
      await loadAutomation();
    } catch (error) {
      say(error.message);
    }
  });
}

onSubmit('standing-form', (form) => {
  const instruments = form.get('instruments').split(',').map((s) => s.trim()).filter(Boolean);
  return api('POST', `/api/sessions/${encodeURIComponent(form.get('session'))}/standing-requests`, {
    scripts: [{ script: form.get('script'), params: parseJSON(form.get('params'), 'parameters') }],
    instruments,
    scope: form.get('scope'),
  });
});

onSubmit('schedule-form', (form) =>
  api('POST', `/api/sessions/${encodeURIComponent(form.get('session'))}/schedules`, {
    script: form.get('script'),
    params: parseJSON(form.get('params'), 'parameters'),
    cron: form.get('cron'),
    timezone: form.get('timezone') || 'UTC',
  }),
);

onSubmit('defaults-form', (form) =>
  api('PUT', `/api/defaults/${encodeURIComponent(form.get('script'))}`, {
    params: parseJSON(form.get('params'), 'parameters'),
    scope: form.get('scope'),
  }),
);

// --------------------------------------------------------------------------------------- start

loadFiltersFromURL();
await Promise.all([loadRuns(), loadAutomation()]);
root.dataset.ready = 'true';
