// Run history of the session page: every run of the session (GET /api/sessions/ID/runs) with
// its script, parameters, trigger, phase and duration; choosing one shows its status, log and
// products in the process and products panels (live if it is running; regio.js does the
// showing), and the choice is kept in the URL (#run=ID) so it survives a reload. "Re-run"
// queues the same script with the same parameters on the same selection (the selection is set
// back to the run's exposures first when it has changed). Also the session's title, editable
// with write access (PATCH /api/sessions/ID).
//
// regio.js owns the page's state; it hands this module a few functions (initHistory) and tells
// it when the shown run changes (shown) and when a session is loaded (sessionLoaded).

import { $, api, el, say } from './common.js';

const TERMINAL = ['COMPLETED', 'ERROR', 'ABORTED'];
const TRIGGERS = { manual: 'manual', standing: 'standing request', schedule: 'schedule' };
const RELOAD_MS = 15000;

// The run named in the URL: #run=ID (or ?run=ID).
export function runInUrl() {
  const hash = new URLSearchParams(window.location.hash.replace(/^#/, ''));
  return hash.get('run') || new URLSearchParams(window.location.search).get('run');
}

function keepInUrl(runId) {
  const url = new URL(window.location.href);
  url.searchParams.delete('run');
  url.hash = runId ? `run=${runId}` : '';
  if (url.href !== window.location.href) window.history.replaceState(null, '', url.href);
}

export function triggerLabel(trigger) {
  const kind = String(trigger || 'manual').split(':')[0];
  return TRIGGERS[kind] || kind;
}

export function duration(run) {
  if (!run.started) return run.phase === 'QUEUED' ? 'queued' : '';
  const end = run.ended ? new Date(run.ended) : new Date();
  const seconds = Math.max(0, Math.round((end - new Date(run.started)) / 1000));
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = String(seconds % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${s}` : `${m}:${s}`;
}

function paramText(params) {
  return Object.entries(params || {}).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`).join(', ');
}

const sameSet = (a, b) => a.length === b.length && [...a].sort().every((x, i) => x === [...b].sort()[i]);

// hooks: sessionId() -> id, canWrite, show(run) (status, log, products; live when running),
// selection() -> the session's selected exposure ids, reloadSession() -> re-reads the session.
export function initHistory(hooks) {
  const state = { runs: [], chosen: null, timer: null, reloading: null, launching: false };
  const panel = $('history');
  const body = $('history-runs');

  function render() {
    panel.hidden = !hooks.sessionId();
    $('history-count').textContent = state.runs.length ? `(${state.runs.length})` : '';
    if (!state.runs.length) {
      body.replaceChildren(el('tr', {}, el('td', { colspan: 8, class: 'muted' }, 'No run yet.')));
      return;
    }
    body.replaceChildren(...state.runs.map((run) => el('tr', {
      'data-testid': 'history-row', 'data-run': run.id, 'data-script': run.script, 'data-phase': run.phase,
      class: `history-row${run.id === state.chosen ? ' chosen' : ''}`,
      'aria-selected': run.id === state.chosen ? 'true' : 'false',
      onclick: (event) => { if (!event.target.closest('button')) choose(run.id); },
    },
    el('td', {}, el('button', {
      class: 'linklike', 'data-testid': 'history-show', title: 'show this run\'s status, log and products',
      onclick: () => choose(run.id),
    }, run.id)),
    el('td', {}, run.script),
    el('td', { class: 'wrap params', 'data-testid': 'history-params' }, paramText(run.params)),
    el('td', { 'data-testid': 'history-trigger', title: run.trigger || 'manual' }, triggerLabel(run.trigger)),
    el('td', { class: `phase-${run.phase.toLowerCase()}`, 'data-testid': 'history-phase' }, run.phase.toLowerCase()),
    el('td', {}, (run.created || '').slice(0, 19).replace('T', ' ')),
    el('td', { class: 'num', 'data-testid': 'history-duration' }, duration(run)),
    el('td', {}, hooks.canWrite ? el('button', {
      'data-testid': 'rerun-button', disabled: state.launching,
      title: 'run the same script with the same parameters on the same exposures',
      onclick: () => rerun(run),
    }, 'Re-run') : null))));
    panel.dataset.count = String(state.runs.length);
  }

  async function reload() {
    const id = hooks.sessionId();
    if (!id) return;
    if (state.reloading) return state.reloading;
    state.reloading = api('GET', `/api/sessions/${id}/runs`)
      .then((runs) => { state.runs = runs; render(); })
      .catch((error) => say(`Run history: ${error.message}`))
      .finally(() => { state.reloading = null; });
    return state.reloading;
  }

  function choose(runId) {
    const run = state.runs.find((r) => r.id === runId);
    if (!run) return;
    say('');
    hooks.show(run);
  }

  // regio.js tells which run the panels show now (a choice, a launch, a refresh of its state).
  function shown(run) {
    if (!run) return;
    const known = state.runs.findIndex((r) => r.id === run.id);
    const changed = state.chosen !== run.id;
    state.chosen = run.id;
    keepInUrl(run.id);
    $('products-run').textContent = `of run ${run.id} (${run.script})`;
    if (known < 0) { reload(); return; }
    state.runs[known] = { ...state.runs[known], ...run };
    if (changed || state.runs[known].phase !== body.querySelector(`[data-run="${run.id}"]`)?.dataset.phase) render();
    else {
      const cell = body.querySelector(`[data-run="${run.id}"] [data-testid="history-duration"]`);
      if (cell) cell.textContent = duration(state.runs[known]);
    }
  }

  async function rerun(run) {
    if (state.launching) return;
    state.launching = true;
    render();
    const id = hooks.sessionId();
    try {
      const exposures = run.exposures || null;
      if (exposures && !sameSet(exposures, hooks.selection())) {
        await api('PUT', `/api/sessions/${id}/selection`, { exposures });
        await hooks.reloadSession();
      }
      const launched = await api('POST', `/api/sessions/${id}/runs`, { script: run.script, params: run.params });
      say(`Re-run of ${run.id}: run ${launched.id} queued with the same parameters.`, 'info');
      await reload();
      hooks.show(launched);
    } catch (error) {
      say(`Not re-run: ${error.message}`);
    } finally {
      state.launching = false;
      render();
    }
  }

  // The run to show first: the one in the URL, else the newest.
  async function start() {
    await reload();
    const wanted = runInUrl();
    let run = state.runs[0] || null;
    if (wanted) {
      const found = state.runs.find((r) => r.id === wanted);
      if (found) run = found;
      else say(`Run ${wanted} is not a run of this session: showing the newest run.`);
    }
    clearInterval(state.timer);
    state.timer = setInterval(() => { if (!document.hidden) reload(); }, RELOAD_MS);
    return run;
  }

  const titleInput = $('session-title');
  async function saveTitle() {
    const id = hooks.sessionId();
    if (!id || titleInput.value === titleInput.defaultValue) return;
    try {
      const session = await api('PATCH', `/api/sessions/${id}`, { title: titleInput.value });
      titleInput.value = session.title;
      titleInput.defaultValue = session.title;
      titleInput.dataset.saved = 'true';
      say('Title saved.', 'info');
    } catch (error) {
      say(`Title not saved: ${error.message}`);
    }
  }
  titleInput.addEventListener('change', saveTitle);
  titleInput.addEventListener('keydown', (event) => { if (event.key === 'Enter') { event.preventDefault(); saveTitle(); } });

  function sessionLoaded(session) {
    titleInput.hidden = false;
    titleInput.disabled = !hooks.canWrite;
    if (document.activeElement !== titleInput) {
      titleInput.value = session.title || '';
      titleInput.defaultValue = session.title || '';
    }
    panel.hidden = false;
    if (!state.runs.length) render();
  }

  return { start, reload, shown, sessionLoaded, isTerminal: (run) => TERMINAL.includes(run.phase) };
}
