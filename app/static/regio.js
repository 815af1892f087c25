// Regio page: sky viewer (Aladin Lite), region editor, observation selector, process control,
// live log and products. Everything goes through the JSON API (/api/openapi.json).
// Regions are kept as the API's viewer shapes, in ICRS degrees.

import { $, api, el, say } from './common.js';
import * as regionsIo from './regions-io.js'; // frames, DS9 export, region view, names
import { initHistory } from './history.js';
import { plotProduct, showImage } from './plots.js';
import { stageText } from './stages.js';

const app = document.getElementById('app');
const REGION_COLOURS = { source: '#00e5ff', background: '#ffd600' };
const TERMINAL = ['COMPLETED', 'ERROR', 'ABORTED'];

const state = {
  sessionId: app.dataset.session || null,
  session: null,
  canWrite: ['write', 'owner'].includes(app.dataset.access),
  tab: 'source',
  regions: { source: [], background: [] },
  aladin: null,
  A: null,
  overlays: {},
  coverage: null,
  coverageLayer: null,
  cameraLayers: [],
  mocGeneration: 0,
  instruments: [], // GET /api/instruments: missions, instruments, cameras (order, labels, colours)
  allScripts: [], // every installed script (to explain why none fits a selection)
  scripts: [], // the scripts that accept the current selection (the chooser offers these)
  scriptProblem: null, // why no script fits the selection, for the page
  scriptsGeneration: 0,
  preferredScript: null,
  paramsFor: null, // the script whose parameter fields are shown
  saving: null,
  selectionDirty: false,
  run: null,
  events: null,
  timer: null,
};

// the session's runs (history.js): choosing one shows it here (showRun)
const runHistory = initHistory({
  sessionId: () => state.sessionId,
  canWrite: state.canWrite,
  show: (run) => showRun(run),
  selection: () => [...selectedIds()],
  reloadSession: () => refreshSelection(),
});

// ------------------------------------------------------------------------------------ helpers

const fmt = (value, digits) => (value === null || value === undefined ? '' : Number(value).toFixed(digits));

function bytes(n) {
  if (n === null || n === undefined) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function angularDistance(ra1, dec1, ra2, dec2) {
  const r = Math.PI / 180;
  const a = Math.sin(((dec2 - dec1) * r) / 2) ** 2
    + Math.cos(dec1 * r) * Math.cos(dec2 * r) * Math.sin(((ra2 - ra1) * r) / 2) ** 2;
  return (2 * Math.asin(Math.min(1, Math.sqrt(a)))) / r;
}

// "149.59 -11.06", "09 58 21.6 -11 03 36", "09:58:21.6 -11:03:36", "9h58m21.6s -11d03m36s"
function parseTarget(text) {
  const clean = text.trim().replace(/[hdms:°'"]/g, ' ').replace(/,/g, ' ').split(/\s+/).filter(Boolean);
  const nums = clean.map(Number);
  if (!clean.length || nums.some((n) => !Number.isFinite(n))) return null;
  let ra; let dec;
  if (nums.length === 2) {
    [ra, dec] = nums;
  } else if (nums.length === 6) {
    const sign = clean[3].startsWith('-') ? -1 : 1;
    ra = 15 * (nums[0] + nums[1] / 60 + nums[2] / 3600);
    dec = sign * (Math.abs(nums[3]) + nums[4] / 60 + nums[5] / 3600);
  } else {
    return null;
  }
  if (ra < 0 || ra >= 360 || dec < -90 || dec > 90) return null;
  return [ra, dec];
}

// ------------------------------------------------------------------------------------ viewer

async function initViewer() {
  const probe = document.createElement('canvas');
  if (!probe.getContext('webgl2')) {
    $('webgl-problem').hidden = false;
    $('sky').hidden = true;
    return;
  }
  const { default: A } = await import(app.dataset.aladin);
  await A.init;
  let survey = app.dataset.survey;
  if (survey.startsWith('/')) {
    const ok = await fetch(`${survey.replace(/\/$/, '')}/properties`, { method: 'GET' }).then((r) => r.ok, () => false);
    if (!ok) {
      survey = app.dataset.blankSurvey;
      say('No sky image of the archive yet (the HiPS is built at start-up): showing the coverage only.', 'info');
    }
    // without a trailing slash: Aladin appends "/Norder3/..." (tiles at /hips/Norder.., not /hips//)
    survey = new URL(survey, window.location.href).href.replace(/\/+$/, '');
  }
  const aladin = A.aladin('#sky', {
    survey,
    fov: 1.5,
    target: '149.59 -11.06',
    log: false,
    showReticle: false,
    showLayersControl: false,
    showProjectionControl: false,
    showFullscreenControl: false,
    showCooGridControl: false,
    showSimbadPointerControl: false,
    showShareControl: false,
    showContextMenu: false,
    showGotoControl: false,
  });
  state.A = A;
  state.aladin = aladin;
  for (const name of ['source', 'background']) {
    state.overlays[name] = A.graphicOverlay({ color: REGION_COLOURS[name], lineWidth: 2, name });
    aladin.addOverlay(state.overlays[name]);
  }
  state.coverage = await api('GET', '/api/coverage').catch(() => null);
  showCoverage();
  let pending = null;
  const remember = () => {
    if (!state.sessionId || !state.canWrite) return;
    clearTimeout(pending);
    pending = setTimeout(() => {
      const [ra, dec] = aladin.getRaDec();
      const fov = Math.min(360, aladin.getFov()[0]);
      api('PUT', `/api/sessions/${state.sessionId}/view`, { ra: ((ra % 360) + 360) % 360, dec, fov }).catch(() => {});
    }, 800);
  };
  aladin.on('positionChanged', remember);
  aladin.on('zoomChanged', remember);
}

// The coverage MOC degraded to the slider's order (cells of deeper orders merged into parents).
function degrade(moc, order) {
  const out = {};
  for (const [key, cells] of Object.entries(moc)) {
    const o = Number(key);
    const target = Math.min(o, order);
    const shift = 2 ** (2 * (o - target));
    const set = out[target] || (out[target] = new Set());
    for (const c of cells) set.add(Math.floor(c / shift));
  }
  return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, [...v].sort((a, b) => a - b)]));
}

function showCoverage() {
  const { aladin, A } = state;
  if (!aladin || !state.coverage) return;
  const order = Number($('moc-order').value);
  $('moc-order-value').textContent = order;
  if (state.coverageLayer) aladin.removeLayer(state.coverageLayer);
  state.coverageLayer = A.MOCFromJSON(degrade(state.coverage, order), {
    name: 'archive coverage', color: '#ff9900', opacity: 0.15, lineWidth: 1, adaptativeDisplay: false,
  });
  aladin.addMOC(state.coverageLayer);
}

// The footprints of the covering exposures, each in its camera's colour (from the registry).
async function showCameraMocs(rows) {
  const { aladin, A } = state;
  if (!aladin) return;
  state.mocGeneration += 1;
  const generation = state.mocGeneration;
  for (const layer of state.cameraLayers) aladin.removeLayer(layer);
  state.cameraLayers = [];
  const mocs = await Promise.all(rows.map((row) => api('GET', `/api/exposures/${encodeURIComponent(row.exposure_id)}/moc`).catch(() => null)));
  if (generation !== state.mocGeneration) return; // a newer coverage is being shown
  rows.forEach((row, i) => {
    if (!mocs[i]) return;
    const layer = A.MOCFromJSON(mocs[i], {
      name: `${row.mission} ${row.obsid} ${row.camera}`, color: rowColour(row),
      perimeter: true, fill: false, edge: false, opacity: 0.8, lineWidth: 1.5,
    });
    aladin.addMOC(layer);
    state.cameraLayers.push(layer);
  });
  app.dataset.footprints = String(state.cameraLayers.length);
}

// ------------------------------------------------------------------------------ region editor

function drawRegions() {
  const { A } = state;
  if (!A) return;
  for (const name of ['source', 'background']) {
    const overlay = state.overlays[name];
    overlay.removeAll();
    const colour = REGION_COLOURS[name];
    for (const s of state.regions[name]) {
      const style = { color: colour, lineWidth: s.exclude ? 1 : 2, lineDash: s.exclude ? [6, 4] : undefined };
      if (s.type === 'circle') overlay.add(A.circle(s.ra, s.dec, s.radius, style));
      else if (s.type === 'annulus') {
        overlay.add(A.circle(s.ra, s.dec, s.outer, style));
        overlay.add(A.circle(s.ra, s.dec, s.inner, style));
      } else if (s.type === 'polygon') overlay.add(A.polygon(s.vertices, style));
      else if (s.type === 'ellipse') overlay.add(A.ellipse(s.ra, s.dec, s.width / 2, s.height / 2, s.angle, style));
      else if (s.type === 'box') overlay.add(A.polygon(boxCorners(s), style));
    }
  }
}

function boxCorners(s) {
  const r = Math.PI / 180;
  const cos = Math.cos(s.angle * r); const sin = Math.sin(s.angle * r);
  return [[-1, -1], [1, -1], [1, 1], [-1, 1]].map(([u, v]) => {
    const x = (u * s.width) / 2; const y = (v * s.height) / 2;
    const east = x * cos - y * sin; const north = x * sin + y * cos;
    return [s.ra + east / Math.cos(s.dec * r), s.dec + north];
  });
}

function setTab(name) {
  state.tab = name;
  for (const tab of document.querySelectorAll('.tab')) tab.classList.toggle('active', tab.dataset.tab === name);
  document.querySelector('.annulus-only').hidden = name !== 'background';
  renderShapeFields();
}

// [key, label, scale]: sizes are typed in arcseconds (the API stores degrees).
const NUMERIC_FIELDS = {
  circle: [['ra', 'RA (°)', 1], ['dec', 'Dec (°)', 1], ['radius', 'radius (″)', 3600]],
  annulus: [['ra', 'RA (°)', 1], ['dec', 'Dec (°)', 1], ['inner', 'inner (″)', 3600], ['outer', 'outer (″)', 3600]],
  ellipse: [['ra', 'RA (°)', 1], ['dec', 'Dec (°)', 1], ['width', 'width (″)', 3600], ['height', 'height (″)', 3600], ['angle', 'angle (°)', 1]],
  box: [['ra', 'RA (°)', 1], ['dec', 'Dec (°)', 1], ['width', 'width (″)', 3600], ['height', 'height (″)', 3600], ['angle', 'angle (°)', 1]],
};


function renderShapeFields() {
  const box = $('shape-fields');
  box.replaceChildren();
  const shapes = state.regions[state.tab];
  if (!shapes.length) {
    box.append(el('p', { class: 'muted' }, `No ${state.tab} shape yet.`));
    return;
  }
  shapes.forEach((shape, index) => {
    const row = el('div', { class: 'shape-row', 'data-testid': 'shape-row' }, el('strong', {}, `${shape.exclude ? '−' : ''}${shape.type}`));
    for (const [key, label, scale] of NUMERIC_FIELDS[shape.type] || []) {
      row.append(el('label', {}, `${label} `, el('input', {
        type: 'number', step: 'any', value: regionsIo.shownValue(key, shape[key], scale), 'data-field': key, disabled: !state.canWrite,
        onchange: (event) => { shape[key] = Number(event.target.value) / scale; drawRegions(); },
      })));
    }
    if (state.tab === 'background' && shape.type === 'circle') {
      row.append(el('button', {
        'data-testid': 'make-annulus', disabled: !state.canWrite, title: 'keep this circle as the outer edge, inner radius half of it',
        onclick: () => {
          shapes[index] = { type: 'annulus', ra: shape.ra, dec: shape.dec, inner: shape.radius / 2, outer: shape.radius, ...(shape.exclude ? { exclude: true } : {}) };
          drawRegions(); renderShapeFields();
        },
      }, 'Make annulus'));
    }
    if (shape.type === 'polygon') row.append(` ${shape.vertices.length} vertices`);
    row.append(el('label', {}, el('input', {
      type: 'checkbox', checked: !!shape.exclude, disabled: !state.canWrite,
      onchange: (event) => { shape.exclude = event.target.checked; drawRegions(); renderShapeFields(); },
    }), ' exclude'));
    row.append(el('button', {
      disabled: !state.canWrite, onclick: () => { shapes.splice(index, 1); drawRegions(); renderShapeFields(); },
    }, 'Remove'));
    box.append(row);
  });
}

function viewToSky(x, y) {
  const [ra, dec] = state.aladin.pix2world(x, y);
  return [((ra % 360) + 360) % 360, dec];
}

function addShape(shape) {
  state.regions[state.tab].push(shape);
  drawRegions();
  renderShapeFields();
  say('');
}

function startDrawing(kind) {
  if (!state.aladin) { say('The sky viewer is not available: import a DS9 file instead.'); return; }
  say(kind === 'circle' ? 'Press and drag on the sky to draw a circle.' : 'Click the vertices, then click the first one again.', 'info');
  if (kind === 'polygon') watchTinyPolygon();
  state.aladin.select(kind === 'circle' ? 'circle' : 'poly', (shape) => {
    if (kind === 'circle') {
      const [ra, dec] = viewToSky(shape.x, shape.y);
      const [ra2, dec2] = viewToSky(shape.x + shape.r, shape.y);
      const radius = angularDistance(ra, dec, ra2, dec2);
      if (!(radius > 0)) { say('The circle has no radius: drag further.'); return; }
      if (state.tab === 'background' && $('as-annulus').checked) {
        addShape({ type: 'annulus', ra, dec, inner: radius / 2, outer: radius });
      } else {
        addShape({ type: 'circle', ra, dec, radius });
      }
    } else {
      const vertices = shape.vertices.map((v) => viewToSky(v.x, v.y));
      if (vertices.length < 3) { say('A polygon needs at least 3 vertices.'); return; }
      addShape({ type: 'polygon', vertices });
    }
  });
}

// Aladin Lite (3.8.2) ends a polygon selection of 1 or 2 vertices with a console warning and no
// callback: catch that warning while the polygon tool is active and tell the user.
function watchTinyPolygon() {
  if (console.warn.regioWatch) return;
  const original = console.warn;
  const watch = (...args) => {
    if (String(args[0]).includes('at least a 3 vertices polygon')) {
      say('A polygon needs at least 3 vertices: nothing was added. Click 3 or more points, then the first one.');
      console.warn = original;
    }
    return original.apply(console, args);
  };
  watch.regioWatch = true;
  console.warn = watch;
}

function localProblem() {
  if (!state.regions.source.length) return 'Draw or type a source region first.';
  for (const name of ['source', 'background']) {
    for (const s of state.regions[name]) {
      if (s.type === 'polygon' && s.vertices.length < 3) return `${name}: a polygon needs at least 3 vertices.`;
      for (const key of ['radius', 'inner', 'outer', 'width', 'height']) {
        if (key in s && !(Number(s[key]) > 0)) return `${name} ${s.type}: ${key} must be positive.`;
      }
      if (s.type === 'annulus' && !(s.inner < s.outer)) return `${name} annulus: the inner radius must be smaller than the outer one.`;
      if (!('vertices' in s) && (!(s.dec >= -90 && s.dec <= 90) || !Number.isFinite(s.ra))) return `${name} ${s.type}: bad centre.`;
    }
  }
  return null;
}

async function accept() {
  const problem = localProblem();
  if (problem) { say(problem); return; }
  const body = { source: state.regions.source, background: state.regions.background.length ? state.regions.background : null, frame: regionsIo.currentFrame() };
  try {
    const session = state.sessionId
      ? await api('PUT', `/api/sessions/${state.sessionId}/regions`, body)
      : await api('POST', '/api/sessions', body);
    loadSession(session);
    regionsIo.goToRegion(state.aladin, state.regions.source);
    const observations = new Set(session.coverage.map((r) => `${r.mission}:${r.obsid}`)).size;
    say(`Regions saved: ${session.coverage.length} covering exposure(s) in ${observations} observation(s).`, 'info');
  } catch (error) {
    say(`Not saved: ${error.message}`);
  }
}

async function importDs9(file) {
  if (!file) return;
  if (file.size > 256 * 1024) { say('That file is too large for a region file.'); return; }
  const text = await file.text();
  const form = new FormData();
  const other = state.tab === 'source' ? 'background' : 'source';
  form.append(state.tab, new Blob([text], { type: 'text/plain' }), file.name);
  if (regionsIo.ds9FrameOf(text)) form.append('frame', regionsIo.ds9FrameOf(text)); // the file's frame is the user's
  if (state.session && state.session.regions[`${other}_ds9`]) {
    form.append(other, new Blob([state.session.regions[`${other}_ds9`]], { type: 'text/plain' }), `${other}.reg`);
  }
  try {
    const session = state.sessionId
      ? await api('PUT', `/api/sessions/${state.sessionId}/regions`, form)
      : await api('POST', '/api/sessions', form);
    loadSession(session);
    regionsIo.goToRegion(state.aladin, state.regions.source.length ? state.regions.source : state.regions.background);
    say(`Imported ${file.name} (${session.regions.frame}).`, 'info');
  } catch (error) {
    say(`Import refused: ${error.message}`);
  }
  $('import-ds9').value = '';
}

function exportDs9(event) {
  regionsIo.exportRegion(event, state.session, state.tab); // in the user's frame (regions-io.js)
}

// ------------------------------------------------------------------------- session and selector

function loadSession(session) {
  state.session = session;
  state.sessionId = session.id;
  state.regions.source = structuredClone(session.regions.source || []);
  state.regions.background = structuredClone(session.regions.background || []);
  if (window.location.pathname !== `/sessions/${session.id}`) {
    window.history.replaceState(null, '', `/sessions/${session.id}`);
  }
  $('session-label').textContent = `session ${session.id}`;
  drawRegions();
  renderShapeFields();
  regionsIo.showFrame(session);
  renderObservations();
  showCameraMocs(session.coverage || []);
  updateRunButton();
  loadSharing();
  runHistory.sessionLoaded(session);
  // the regions may have changed the selection: offer the scripts that fit it
  const box = $('observations');
  box.dataset.saved = 'false';
  return loadFittingScripts().finally(() => { if (!state.saving) box.dataset.saved = 'true'; });
}

// The registry (/api/instruments) says which instruments and cameras exist, in which order and
// colour: the page names none itself. A row's group is its (mission, instrument, camera).
const groupKey = (r) => `${r.mission}/${r.instrument}/${r.camera}`;
const instrumentKey = (r) => `${r.mission}/${r.instrument}`;
const KIND_LABELS = { events: 'events', 'exposure-map': 'exposure map only', 'longslit-frame': 'long-slit frame' };
const kindLabel = (kind) => KIND_LABELS[kind] || String(kind || 'events').replace(/-/g, ' ');
const KIND_NOUNS = { events: 'event lists', 'exposure-map': 'exposure maps', 'longslit-frame': 'long-slit frames' };
const kindNoun = (kind) => KIND_NOUNS[kind] || `${kindLabel(kind)} files`;
const OTHER_COLOUR = '#9e9e9e';

function cameraGroups() {
  const groups = new Map();
  for (const ins of state.instruments) {
    for (const cam of ins.cameras) {
      const key = `${ins.mission}/${ins.instrument}/${cam.name}`;
      groups.set(key, {
        key, mission: ins.mission, instrument: ins.instrument, title: ins.title || `${ins.mission} ${ins.instrument}`,
        camera: cam.name, label: cam.label || cam.name, colour: cam.colour || OTHER_COLOUR,
      });
    }
  }
  return groups;
}

function rowColour(row) {
  const group = cameraGroups().get(groupKey(row));
  return group ? group.colour : OTHER_COLOUR;
}

// Tables of covering rows: one per known camera with rows (registry order), then one "other"
// table for rows of cameras the registry does not know (they never vanish).
function coverageTables(coverage) {
  const groups = cameraGroups();
  const tables = [];
  for (const group of groups.values()) {
    const rows = coverage.filter((r) => groupKey(r) === group.key);
    if (rows.length) tables.push({ ...group, rows });
  }
  const others = coverage.filter((r) => !groups.has(groupKey(r)));
  if (others.length) {
    tables.push({
      key: 'other', mission: '', instrument: '', title: 'Other instruments', camera: 'other',
      label: 'other', colour: OTHER_COLOUR, rows: others, other: true,
    });
  }
  return tables;
}

function selectedIds() {
  return new Set((state.session && state.session.selection && state.session.selection.exposures) || []);
}

function renderObservations() {
  const box = $('observations');
  box.replaceChildren();
  const coverage = state.session.coverage || [];
  if (!coverage.length) {
    box.append(el('p', { class: 'muted' }, 'No observation of the archive covers the source region.'));
    return;
  }
  const selected = selectedIds();
  for (const group of coverageTables(coverage)) {
    const { rows } = group;
    const allOff = rows.every((r) => !selected.has(r.exposure_id));
    const heading = group.other ? 'Other instruments (not in the instrument registry)' : group.title;
    const table = el('table', {
      class: 'observations', 'data-testid': 'camera-table', 'data-group': group.key, 'data-camera': group.camera,
      'data-mission': group.mission, 'data-instrument': group.other ? '' : `${group.mission}/${group.instrument}`,
      'data-colour': group.colour, style: `--camera-colour:${group.colour}`,
    },
    el('caption', {},
      el('span', { class: 'camera-dot', style: `background:${group.colour}` }),
      ' ', el('span', { class: 'instrument-title', 'data-testid': 'camera-table-title' }, heading),
      group.other ? null : [' ', el('span', { class: 'camera-label', 'data-testid': 'camera-label' }, group.label)],
      ` (${rows.length}) `,
      el('label', {}, el('input', {
        type: 'checkbox', 'data-testid': 'camera-toggle', 'data-group': group.key, 'data-camera': group.camera,
        checked: allOff, disabled: !state.canWrite,
        onchange: (event) => toggleGroup(group.key, !event.target.checked),
      }), ` disable all ${group.other ? 'other' : group.label}`)),
    el('thead', {}, el('tr', {}, ['', 'Obs ID', 'Object / observer', 'RA / Dec', 'Date', 'Exp. (ks)', 'Filter / mode', 'Coverage', 'Off-axis']
      .map((h) => el('th', {}, h)))),
    el('tbody', {}, rows.map((r) => observationRow(r, group, selected))));
    box.append(table);
  }
}

function observationRow(r, group, selected) {
  const kind = r.kind || 'events';
  return el('tr', {
    'data-testid': 'observation-row', 'data-exposure-id': r.exposure_id, 'data-group': group.key,
    'data-obsid': r.obsid, 'data-camera': r.camera, 'data-mission': r.mission, 'data-kind': kind,
    class: kind === 'events' ? null : 'other-kind',
  },
  el('td', {}, el('input', {
    type: 'checkbox', checked: selected.has(r.exposure_id), disabled: !state.canWrite,
    'data-testid': 'observation-check', 'data-exposure-id': r.exposure_id, onchange: saveSelection,
    'aria-label': `use ${r.mission} ${r.obsid} ${r.camera}`,
  })),
  el('td', { class: 'obsid' }, r.obsid,
    group.other ? el('span', { class: 'sub' }, `${r.mission || '?'} ${r.instrument || ''} ${r.camera || ''}`) : null,
    kind === 'events' ? null : el('span', { class: 'kind', 'data-testid': 'observation-kind', title: 'what the archive holds for this exposure' }, kindLabel(kind))),
  el('td', { class: 'wrap' }, r.object || '', el('span', { class: 'sub' }, r.observer || '')),
  el('td', { class: 'num' }, fmt(r.ra_pnt, 4), el('span', { class: 'sub' }, fmt(r.dec_pnt, 4))),
  el('td', {}, (r.date_obs || '').slice(0, 10)), el('td', { class: 'num' }, fmt((r.exposure || 0) / 1000, 1)),
  el('td', { class: 'wrap' }, r.filter || '', el('span', { class: 'sub' }, r.submode || '')),
  el('td', { class: 'num', title: 'fraction of the source (and background) region on this camera' },
    `${fmt(100 * r.coverage, 0)} %`,
    r.background_coverage !== undefined ? el('span', { class: 'sub' }, `bkg ${fmt(100 * r.background_coverage, 0)} %`) : null),
  el('td', { class: 'num', title: 'distance of the source from the pointing' },
    r.offaxis_arcmin === null || r.offaxis_arcmin === undefined ? '' : `${fmt(r.offaxis_arcmin, 1)}′`));
}

function currentSelection() {
  return [...document.querySelectorAll('[data-testid="observation-check"]')]
    .filter((input) => input.checked)
    .map((input) => input.dataset.exposureId);
}

// Saves are serialised: at most one PUT in flight, and the last state of the checkboxes is the
// one saved. The selector's data-saved is "false" from a change until the selection is saved and
// the script chooser shows the scripts fitting it (tests wait on it).
async function saveSelection() {
  const box = $('observations');
  box.dataset.saved = 'false';
  syncCameraToggles();
  state.selectionDirty = true;
  if (state.saving) return state.saving;
  state.saving = (async () => {
    try {
      while (state.selectionDirty) {
        state.selectionDirty = false;
        try {
          state.session = await api('PUT', `/api/sessions/${state.sessionId}/selection`, { exposures: currentSelection() });
        } catch (error) {
          say(`Selection not saved: ${error.message}`);
          state.selectionDirty = false;
          renderObservations(); // back to the selection last saved
        }
      }
      await loadFittingScripts();
    } finally {
      state.saving = null;
      if (state.selectionDirty) saveSelection();
      else box.dataset.saved = 'true';
    }
  })();
  return state.saving;
}

// "disable all <camera>" is ticked when none of that table's rows is selected.
function syncCameraToggles() {
  for (const toggle of document.querySelectorAll('[data-testid="camera-toggle"]')) {
    const rows = document.querySelectorAll(`[data-testid="observation-row"][data-group="${CSS.escape(toggle.dataset.group)}"] input`);
    toggle.checked = [...rows].every((input) => !input.checked);
  }
}

async function toggleGroup(key, on) {
  for (const row of document.querySelectorAll(`[data-testid="observation-row"][data-group="${CSS.escape(key)}"]`)) {
    row.querySelector('input').checked = on;
  }
  await saveSelection();
}

// ---------------------------------------------------------------------------- process control

async function loadScripts() {
  state.allScripts = await api('GET', '/api/scripts').catch(() => []);
  await loadFittingScripts();
}

function selectedRows() {
  if (!state.session) return [];
  const selected = selectedIds();
  return (state.session.coverage || []).filter((r) => selected.has(r.exposure_id));
}

// The chooser offers the scripts that accept every selected exposure (the server decides:
// GET /api/scripts?session=SID); the latest answer wins.
async function loadFittingScripts() {
  state.scriptsGeneration += 1;
  const generation = state.scriptsGeneration;
  let scripts = state.allScripts;
  if (state.sessionId) {
    try {
      scripts = await api('GET', `/api/scripts?session=${encodeURIComponent(state.sessionId)}`);
    } catch (error) {
      say(`Scripts: ${error.message}`);
      scripts = [];
    }
  }
  if (generation !== state.scriptsGeneration) return;
  state.scripts = scripts;
  state.scriptProblem = scripts.length ? null : explainNoScript(selectedRows());
  renderScriptChooser();
}

function scriptAccepts(script, row) {
  const accepts = script.accepts || {};
  const kinds = accepts.kinds || [];
  const instruments = accepts.instruments || [];
  return (!kinds.length || kinds.includes(row.kind || 'events'))
    && (!instruments.length || instruments.includes(instrumentKey(row)));
}

const andList = (items) => (items.length < 2 ? items.join('') : `${items.slice(0, -1).join(', ')} and ${items[items.length - 1]}`);

function exposureNames(rows) {
  const names = rows.slice(0, 4).map((r) => `${r.obsid} ${(cameraGroups().get(groupKey(r)) || {}).label || r.camera}`);
  return names.join(', ') + (rows.length > 4 ? ` and ${rows.length - 4} more` : '');
}

// Why no installed script accepts the selected rows, in the user's terms.
function explainNoScript(rows) {
  if (!state.allScripts.length) return 'No script is installed.';
  if (!rows.length) return 'No script is offered.';
  const orphans = rows.filter((r) => !state.allScripts.some((sc) => scriptAccepts(sc, r)));
  if (orphans.length) {
    const what = [...new Set(orphans.map((r) => `${instrumentKey(r)} ${kindNoun(r.kind)}`))];
    return `No script accepts ${andList(what)} (${exposureNames(orphans)}): untick them to run a script.`;
  }
  const instruments = [...new Set(rows.map(instrumentKey))];
  if (instruments.length > 1) {
    return `No script accepts this selection: ${andList(instruments)} exposures are selected together. Select the exposures of one instrument.`;
  }
  const kinds = [...new Set(rows.map((r) => kindNoun(r.kind)))];
  if (kinds.length > 1) {
    return `No script accepts this selection: ${andList(kinds)} are selected together.`;
  }
  return 'No script accepts every selected exposure.';
}

function renderScriptChooser() {
  const select = $('script-select');
  const previous = select.value || state.preferredScript;
  if (state.scripts.length) {
    select.replaceChildren(...state.scripts.map((sc) => el('option', { value: sc.name }, sc.title || sc.name)));
    const keep = [previous, state.preferredScript].find((name) => state.scripts.some((sc) => sc.name === name));
    if (keep) select.value = keep;
    select.disabled = false;
  } else {
    select.replaceChildren(el('option', { value: '' }, 'no script fits the selection'));
    select.disabled = true;
  }
  const problem = $('script-problem');
  problem.textContent = state.scriptProblem || '';
  problem.hidden = !state.scriptProblem;
  select.dataset.count = String(state.scripts.length);
  // the same script stays chosen: keep the parameter values the user has typed
  if (select.value !== state.paramsFor) renderParams();
  updateRunButton();
}

function currentScript() {
  return state.scripts.find((s) => s.name === $('script-select').value);
}

function describeAccepts(script) {
  const accepts = script.accepts || {};
  const kinds = (accepts.kinds || []).map(kindNoun);
  const instruments = accepts.instruments || [];
  if (!kinds.length && !instruments.length) return 'Accepts any data.';
  return `Accepts ${kinds.length ? andList(kinds) : 'any data'} of ${instruments.length ? andList(instruments) : 'any instrument'}.`;
}

function renderParams() {
  const script = currentScript();
  state.paramsFor = script ? script.name : '';
  const form = $('params');
  form.replaceChildren();
  $('script-doc').textContent = script ? script.documentation : '';
  $('script-accepts').textContent = script ? describeAccepts(script) : '';
  if (!script) return;
  for (const p of script.parameters) {
    const id = `param-${p.name}`;
    let input;
    if (p.type === 'bool') {
      input = el('input', { type: 'checkbox', id, name: p.name, checked: !!p.default });
    } else if (p.type === 'choice') {
      input = el('select', { id, name: p.name }, p.choices.map((c) => el('option', { value: JSON.stringify(c), selected: c === p.default }, String(c))));
    } else if (p.type === 'int' || p.type === 'float') {
      input = el('input', {
        type: 'number', id, name: p.name, value: p.default ?? '', min: p.min, max: p.max, step: p.type === 'int' ? 1 : 'any', required: p.default === undefined,
      });
    } else {
      input = el('input', { type: 'text', id, name: p.name, value: p.default ?? '' });
    }
    form.append(el('div', { class: 'param' },
      el('label', { for: id }, p.name, p.unit ? ` (${p.unit})` : ''), input,
      el('span', { class: 'hint' }, p.help || '')));
  }
}

function readParams() {
  const script = currentScript();
  const params = {};
  for (const p of script.parameters) {
    const input = $(`param-${p.name}`);
    if (p.type === 'bool') params[p.name] = input.checked;
    else if (p.type === 'choice') params[p.name] = JSON.parse(input.value);
    else if (p.type === 'int' || p.type === 'float') {
      if (input.value === '') throw new Error(`${p.name}: give a number`);
      const value = Number(input.value);
      if (!Number.isFinite(value) || (p.type === 'int' && !Number.isInteger(value))) throw new Error(`${p.name}: must be ${p.type === 'int' ? 'a whole number' : 'a number'}`);
      if (p.min !== undefined && p.min !== null && value < p.min) throw new Error(`${p.name}: at least ${p.min}`);
      if (p.max !== undefined && p.max !== null && value > p.max) throw new Error(`${p.name}: at most ${p.max}`);
      params[p.name] = value;
    } else params[p.name] = input.value;
  }
  return params;
}

// Run is enabled only when a run can start; otherwise the reason is shown beside it.
function runBlocker() {
  const running = state.run && !TERMINAL.includes(state.run.phase);
  if (!state.canWrite) return 'This session is read only.';
  if (!state.sessionId) return 'Accept a source region first.';
  if (!selectedIds().size) return 'Select at least one exposure.';
  if (running) return 'A run is in progress: wait for it or cancel it.';
  if (!currentScript()) return state.scriptProblem || 'No script is installed.';
  return null;
}

function updateRunButton() {
  const running = state.run && !TERMINAL.includes(state.run.phase);
  const blocker = runBlocker();
  const button = $('run-button');
  button.disabled = !!blocker;
  button.title = blocker || '';
  // the script problem is shown in full under the chooser: a short pointer is enough here
  $('run-reason').textContent = blocker && blocker === state.scriptProblem ? 'No script fits the selection (see above).' : blocker || '';
  $('cancel-button').disabled = !state.canWrite || !running;
}

// One click, one run: the button is locked (data-launching) until the service answers, and the
// request carries a fresh client_key, so a repeated request (a retry) makes no second run.
function newClientKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16)); // crypto.randomUUID needs https
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

async function startRun() {
  const button = $('run-button');
  if (button.dataset.launching) return; // a second click while the first is on its way
  let params;
  try { params = readParams(); } catch (error) { say(`Parameters: ${error.message}`); return; }
  button.dataset.launching = 'true';
  button.disabled = true;
  try {
    const body = { script: currentScript().name, params, client_key: newClientKey() };
    const run = await api('POST', `/api/sessions/${state.sessionId}/runs`, body);
    $('run-log').replaceChildren();
    $('products').querySelector('tbody').replaceChildren();
    $('plot').replaceChildren();
    say('');
    follow(run);
  } catch (error) {
    say(`Not started: ${error.message}`);
    refreshSelection(); // the selection may have changed elsewhere: show it and what fits it
  } finally {
    delete button.dataset.launching;
    updateRunButton();
  }
}

// Show the session's selection as the service has it now (another tab or a collaborator may
// have changed it), and the scripts that fit it. Regions being edited are left alone.
async function refreshSelection() {
  const box = $('observations');
  box.dataset.saved = 'false';
  try {
    const session = await api('GET', `/api/sessions/${state.sessionId}`);
    const before = (state.session.coverage || []).map((r) => r.exposure_id).join(' ');
    state.session = session;
    renderObservations();
    if (session.coverage.map((r) => r.exposure_id).join(' ') !== before) showCameraMocs(session.coverage);
    await loadFittingScripts();
  } catch (error) {
    say(`Session: ${error.message}`);
  } finally {
    if (!state.saving) box.dataset.saved = 'true';
    updateRunButton();
  }
}

function elapsed(run) {
  if (!run.started) return '';
  const end = run.ended ? new Date(run.ended) : new Date();
  const seconds = Math.max(0, Math.round((end - new Date(run.started)) / 1000));
  return `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, '0')}`;
}

function renderStatus() {
  const run = state.run;
  const box = $('run-status');
  if (!run) { box.textContent = 'No run yet.'; return; }
  const stages = run.stages || [];
  let text;
  if (run.phase === 'QUEUED') {
    text = `Queued${run.queue_position !== null && run.queue_position !== undefined ? ` (position ${run.queue_position + 1})` : ''}`;
  } else if (run.phase === 'EXECUTING') {
    const progress = run.progress_total ? `, ${run.progress_done}/${run.progress_total}` : '';
    text = `Running: ${stageText(run)}${progress}, ${elapsed(run)} elapsed`;
  } else if (run.phase === 'COMPLETED') {
    text = `Finished in ${elapsed(run)} (${stages.length}${run.stage_count ? ` of ${run.stage_count}` : ''} stages)`;
  } else if (run.phase === 'ABORTED') {
    text = 'Cancelled';
  } else {
    text = `Failed${run.failing_stage ? ` in ${stageText(run)}` : ''}: ${run.error || 'see the log'}`;
  }
  box.textContent = `${run.script} ${run.id}: ${text}`;
  box.dataset.phase = run.phase;
  box.className = `run-status phase-${run.phase.toLowerCase()}`;
  updateRunButton();
  runHistory.shown(run);
}

function appendLog(line) {
  const log = $('run-log');
  const node = el('span', { class: line.startsWith('[STAGE]') ? 'stage' : line.startsWith('[ERROR]') ? 'error' : '' }, `${line}\n`);
  if (line.startsWith('[STAGE]')) node.dataset.testid = 'log-stage';
  log.append(node);
  log.scrollTop = log.scrollHeight;
}

async function refreshRun() {
  if (!state.run) return;
  state.run = await api('GET', `/api/runs/${state.run.id}`).catch(() => state.run);
  renderStatus();
}

function follow(run) {
  state.run = run;
  renderStatus();
  if (state.events) state.events.close();
  clearInterval(state.timer);
  $('run-log').replaceChildren();
  $('bundle').hidden = true;
  $('products').querySelector('tbody').replaceChildren();
  $('plot').replaceChildren();
  const events = new EventSource(`/api/runs/${run.id}/events`);
  state.events = events;
  events.addEventListener('log', (event) => appendLog(event.data));
  events.addEventListener('state', async () => { await refreshRun(); });
  events.addEventListener('end', async () => {
    events.close();
    clearInterval(state.timer);
    await refreshRun();
    await loadProducts(run.id);
  });
  state.timer = setInterval(refreshRun, 2000);
}

// Show a run in the status, log and products panels: live while it runs, else as it ended.
async function showRun(run) {
  if (!TERMINAL.includes(run.phase)) { follow(run); return; }
  if (state.events) state.events.close();
  clearInterval(state.timer);
  state.run = run;
  renderStatus();
  for (const id of ['run-log', 'plot']) $(id).replaceChildren();
  $('products').querySelector('tbody').replaceChildren();
  $('bundle').hidden = true;
  const log = await fetch(`/api/runs/${run.id}/log`).then((r) => r.text(), () => '');
  if (state.run !== run) return; // another run was chosen meanwhile
  log.split('\n').filter(Boolean).forEach(appendLog);
  await loadProducts(run.id);
}

async function cancelRun() {
  if (!state.run) return;
  try {
    state.run = await api('POST', `/api/runs/${state.run.id}/cancel`);
    renderStatus();
  } catch (error) {
    say(`Cancel failed: ${error.message}`);
  }
}

// ----------------------------------------------------------------------------------- products

async function loadProducts(runId) {
  const products = await api('GET', `/api/runs/${runId}/products`).catch(() => []);
  if (state.run && state.run.id !== runId) return; // another run is shown now
  const body = $('products').querySelector('tbody');
  body.replaceChildren();
  const byFile = Object.fromEntries(products.map((p) => [p.file, p]));
  for (const p of products) {
    if (p.kind === 'plot' && Object.values(byFile).some((q) => q.preview === p.file)) continue; // shown as a thumbnail
    const plottable = p.kind === 'spectrum' || p.kind === 'lightcurve';
    const open = plottable ? () => plotProduct($('plot'), runId, p)
      : () => showImage($('plot'), `${byFile[p.preview].url}?inline=1`, p.file); // plots.js
    const preview = p.preview && byFile[p.preview]
      ? el('img', { src: `${byFile[p.preview].url}?inline=1`, alt: `preview of ${p.file}`, title: plottable ? 'Click: interactive plot' : 'Click: full size', class: 'thumb', loading: 'lazy', 'data-testid': 'thumbnail', onclick: open })
      : null;
    const row = el('tr', { 'data-testid': 'product-row', 'data-file': p.file, 'data-kind': p.kind },
      el('td', {}, preview), el('td', {}, el('span', { title: p.description || '' }, p.file)),
      el('td', { class: 'obsid' }, p.obsid || ''), el('td', {}, p.camera || ''),
      el('td', {}, (p.date_obs || '').slice(0, 19)), el('td', { class: 'num' }, fmt(p.exposure, 0)),
      el('td', {}, (p.created || '').slice(0, 19).replace('T', ' ')), el('td', { class: 'num' }, bytes(p.size)),
      el('td', {},
        plottable ? el('button', { 'data-testid': 'plot-button', onclick: open }, 'Plot') : null,
        p.kind === 'image' && preview ? el('button', { onclick: open }, 'View') : null,
        ' ', el('a', { href: p.url, 'data-testid': 'download-link', download: p.file.split('/').pop() }, 'Download')));
    body.append(row);
  }
  const bundle = $('bundle');
  bundle.href = `/api/runs/${runId}/bundle.zip`;
  bundle.hidden = products.length === 0;
}

// ------------------------------------------------------------------------------------ sharing

async function loadSharing() {
  const panel = $('sharing');
  if (!panel || !state.sessionId) return;
  panel.hidden = false;
  const people = await api('GET', `/api/sessions/${state.sessionId}/collaborators`).catch(() => []);
  $('collaborators').replaceChildren(...people.map((c) => el('li', {}, `${c.name} <${c.email}>: ${c.role} `,
    el('button', {
      onclick: async () => {
        await api('DELETE', `/api/sessions/${state.sessionId}/collaborators/${c.user_id}`).catch((e) => say(e.message));
        loadSharing();
      },
    }, 'Remove'))));
}

function bindSharing() {
  if (!$('sharing')) return;
  $('share-link-button').addEventListener('click', async () => {
    try {
      const link = await api('POST', `/api/sessions/${state.sessionId}/share-links`);
      const box = $('share-link');
      box.value = link.url;
      box.hidden = false;
      box.select();
      say('Anyone with this link can see the session, its runs and products (read only).', 'info');
    } catch (error) { say(`No link: ${error.message}`); }
  });
  $('collaborator-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      await api('POST', `/api/sessions/${state.sessionId}/collaborators`, { email: $('collaborator-email').value, role: $('collaborator-role').value });
      $('collaborator-email').value = '';
      loadSharing();
    } catch (error) { say(`Not shared: ${error.message}`); }
  });
}

// --------------------------------------------------------------------------------------- start

function bind() {
  for (const tab of document.querySelectorAll('.tab')) tab.addEventListener('click', () => setTab(tab.dataset.tab));
  $('draw-circle').addEventListener('click', () => startDrawing('circle'));
  $('draw-polygon').addEventListener('click', () => startDrawing('polygon'));
  $('pan').addEventListener('click', () => { if (state.aladin) state.aladin.select(); say(''); });
  $('region-clear').addEventListener('click', () => { state.regions[state.tab] = []; drawRegions(); renderShapeFields(); });
  $('region-accept').addEventListener('click', accept);
  $('import-ds9').addEventListener('change', (event) => importDs9(event.target.files[0]));
  $('export-ds9').addEventListener('click', exportDs9);
  $('moc-order').addEventListener('input', showCoverage);
  $('script-select').addEventListener('change', () => { renderParams(); updateRunButton(); });
  $('run-button').addEventListener('click', startRun);
  $('cancel-button').addEventListener('click', cancelRun);
  $('target').addEventListener('keydown', async (event) => {
    if (event.key !== 'Enter') return;
    const position = parseTarget(event.target.value) || await regionsIo.resolveName(event.target.value); // an object name
    if (!position) return;
    if (parseTarget(event.target.value)) say('');
    app.dataset.target = position.join(' ');
    if (state.aladin) {
      state.aladin.gotoRaDec(position[0], position[1]);
      app.dataset.view = state.aladin.getRaDec().join(' '); // where the viewer really is now
    }
  });
  bindSharing();
  regionsIo.initFrames(() => regionsIo.describeFrame(state.regions.source));
  if (!state.canWrite) {
    for (const id of ['draw-circle', 'draw-polygon', 'region-clear', 'region-accept', 'import-ds9']) $(id).disabled = true;
  }
}

async function main() {
  bind();
  setTab('source');
  await Promise.all([
    initViewer().catch((error) => say(`Sky viewer: ${error.message}`)),
    loadScripts(),
    api('GET', '/api/instruments').then((list) => { state.instruments = list; }, (error) => say(`Instruments: ${error.message}`)),
  ]);
  if (state.sessionId) {
    const session = await api('GET', `/api/sessions/${state.sessionId}`);
    await loadSession(session);
    if (state.aladin) {
      if (session.view) {
        state.aladin.gotoRaDec(session.view.ra, session.view.dec);
        state.aladin.setFoV(session.view.fov);
      } else if (session.regions.source && session.regions.source.length) {
        const s = session.regions.source[0];
        if (s.ra !== undefined) state.aladin.gotoRaDec(s.ra, s.dec);
      }
    }
    const shown = await runHistory.start(); // the run in the URL (#run=ID), else the newest
    if (shown) {
      state.preferredScript = shown.script;
      if (state.scripts.some((sc) => sc.name === shown.script)) {
        $('script-select').value = shown.script;
        renderParams();
      }
      await showRun(shown);
    }
  }
  updateRunButton();
  app.dataset.ready = 'true';
}

main().catch((error) => say(error.message));
