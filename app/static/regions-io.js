// Regions in and out of the page, and where the viewer goes (issue 15): the DS9 frame the user
// works in (icrs, fk5, fk4, galactic, ecliptic), DS9 export in that frame, the viewer moved to a
// region after Accept or import, the shape fields rounded, and object names in the target box.
// The server is the authority on frames: conversions go through POST /api/regions/convert and
// names through GET /api/resolve; the page keeps regions as ICRS degrees.

import { $, api, el, say } from './common.js';

export const FRAMES = ['icrs', 'fk5', 'fk4', 'galactic', 'ecliptic'];
const FRAME_LABELS = {
  icrs: 'ICRS', fk5: 'FK5 (J2000)', fk4: 'FK4 (B1950)', galactic: 'Galactic', ecliptic: 'Ecliptic (J2000)',
};
// the names of the two coordinates in each frame
const AXES = { galactic: ['l', 'b'], ecliptic: ['λ', 'β'] };
// DS9 spellings of the frames (as the regions parser reads them)
const DS9_ALIASES = { j2000: 'fk5', b1950: 'fk4', 'fk4-no-e': 'fk4' };

const app = document.getElementById('app');
let current = 'icrs';

// ------------------------------------------------------------------------------------ frames

// The first sky frame a DS9 text names (before its first shape), or null.
export function ds9FrameOf(text) {
  for (const statement of String(text).split(/[\n;]/)) {
    const word = statement.trim().toLowerCase().replace(/^[+-]/, '');
    if (!word || word.startsWith('#')) continue;
    const name = DS9_ALIASES[word] || word;
    if (FRAMES.includes(name)) return name;
    if (/^[a-z]+\s*\(/.test(word)) return null; // a shape before any frame
  }
  return null;
}

export const currentFrame = () => current;

// The frame chooser beside Export DS9 (tool.html): shows and sets the user's frame.
export function initFrames(onChange) {
  const select = $('region-frame');
  if (!select) return;
  select.replaceChildren(...FRAMES.map((f) => el('option', { value: f }, FRAME_LABELS[f])));
  select.value = current;
  select.addEventListener('change', () => {
    current = select.value;
    app.dataset.frame = current;
    if (onChange) onChange(current);
  });
}

// A session was loaded: its frame is the user's; show it and the source centre in it.
export async function showFrame(session) {
  current = (session && session.regions && session.regions.frame) || 'icrs';
  app.dataset.frame = current;
  const select = $('region-frame');
  if (select) select.value = current;
  await describeFrame(session && session.regions && session.regions.source);
}

// The note under the shape fields: fields in ICRS degrees, and the centre in the user's frame.
export async function describeFrame(shapes) {
  const note = $('frame-note');
  if (!note) return;
  const label = FRAME_LABELS[current];
  note.dataset.frame = current;
  if (current === 'icrs' || !shapes || !shapes.length) {
    note.textContent = `Fields in ICRS degrees; DS9 files exported in ${label}.`;
    return;
  }
  try {
    const answer = await api('POST', '/api/regions/convert', { region: shapes, frame: current });
    const [lon, lat] = AXES[current] || ['RA', 'Dec'];
    note.textContent = `Fields in ICRS degrees; your frame is ${label}: centre ${lon} ${answer.frame_centre.lon.toFixed(6)}°, `
      + `${lat} ${answer.frame_centre.lat.toFixed(6)}°. DS9 files are exported in ${label}.`;
  } catch (error) {
    note.textContent = `Fields in ICRS degrees; DS9 files exported in ${label}.`;
  }
}

// The Export DS9 link: the saved region of the tab, written by the server in the user's frame.
export async function exportRegion(event, session, tab) {
  event.preventDefault();
  const shapes = session && session.regions && session.regions[tab];
  if (!shapes || !shapes.length) {
    say(`No saved ${tab} region to export: draw it and press Accept first.`);
    return;
  }
  const stored = session.regions[`${tab}_ds9`]; // the session's own file, ICRS
  let text = current === 'icrs' && stored ? stored : null;
  if (!text) {
    try {
      text = (await api('POST', '/api/regions/convert', { region: shapes, frame: current })).ds9;
    } catch (error) {
      if (!stored) { say(`Not exported: ${error.message}`); return; }
      text = stored; // e.g. a read-only link, which may not call the converter
      say(`Exported in ICRS: the region could not be converted to ${FRAME_LABELS[current]} (${error.message}).`, 'info');
    }
  }
  const link = el('a', {
    href: URL.createObjectURL(new Blob([text], { type: 'text/plain' })),
    download: `regio-${session.id}-${tab}.reg`,
    hidden: true,
  });
  document.body.append(link);
  link.click();
  setTimeout(() => { URL.revokeObjectURL(link.href); link.remove(); }, 1000);
}

// ------------------------------------------------------------------------- numbers as shown

// A shape field as shown: degrees to 6 decimals (0.004″), arcseconds to 2 decimals.
export function shownValue(key, value, scale) {
  if (value === null || value === undefined || !Number.isFinite(Number(value))) return value;
  const digits = scale === 1 ? (key === 'angle' ? 4 : 6) : 2;
  return Number((Number(value) * scale).toFixed(digits));
}

// -------------------------------------------------------------------------- viewer placement

const RAD = Math.PI / 180;

function unit(ra, dec) {
  return [Math.cos(dec * RAD) * Math.cos(ra * RAD), Math.cos(dec * RAD) * Math.sin(ra * RAD), Math.sin(dec * RAD)];
}

function distance(a, b) {
  const [x1, y1, z1] = unit(...a);
  const [x2, y2, z2] = unit(...b);
  const chord = Math.hypot(x1 - x2, y1 - y2, z1 - z2);
  return (2 * Math.asin(Math.min(1, chord / 2))) / RAD;
}

// The centre of the included shapes (mean unit vector) and the radius that holds them [deg].
export function regionExtent(shapes) {
  const included = (shapes || []).filter((s) => !s.exclude);
  if (!included.length) return null;
  const points = included.flatMap((s) => (s.type === 'polygon' ? s.vertices : [[s.ra, s.dec]]));
  const sum = points.map((p) => unit(p[0], p[1])).reduce((a, v) => a.map((x, i) => x + v[i]), [0, 0, 0]);
  const norm = Math.hypot(...sum) || 1;
  const ra = ((Math.atan2(sum[1], sum[0]) / RAD) + 360) % 360;
  const dec = Math.asin(Math.max(-1, Math.min(1, sum[2] / norm))) / RAD;
  let radius = 0;
  for (const s of included) {
    if (s.type === 'polygon') {
      for (const v of s.vertices) radius = Math.max(radius, distance([ra, dec], v));
      continue;
    }
    const half = s.type === 'circle' ? s.radius : s.type === 'annulus' ? s.outer
      : s.type === 'box' ? Math.hypot(s.width, s.height) / 2 : Math.max(s.width, s.height) / 2;
    radius = Math.max(radius, distance([ra, dec], [s.ra, s.dec]) + half);
  }
  return { ra, dec, radius };
}

// Move the viewer to the region: its centre, a field of view of about three times its size.
export function goToRegion(aladin, shapes) {
  const extent = regionExtent(shapes);
  if (!aladin || !extent) return;
  const fov = Math.min(180, Math.max(2 / 60, 3 * 2 * extent.radius));
  aladin.gotoRaDec(extent.ra, extent.dec);
  aladin.setFoV(fov);
  app.dataset.regionView = `${extent.ra} ${extent.dec} ${fov}`;
  app.dataset.view = aladin.getRaDec().join(' ');
}

// ------------------------------------------------------------------------------------- names

// An object name typed in the target box: [ra, dec] from the archive (or Sesame when the site
// allows it), or null after saying why not.
export async function resolveName(text) {
  const name = text.trim();
  if (!name) return null;
  try {
    const answer = await api('GET', `/api/resolve?name=${encodeURIComponent(name)}`);
    const others = answer.matches && answer.matches.length > 1 ? ` (${answer.matches.length - 1} more name(s) match)` : '';
    say(`${answer.name}: ${answer.source === 'archive' ? 'pointing of the archived observations' : 'position from Sesame'}${others}.`, 'info');
    app.dataset.resolved = answer.name;
    return [answer.ra, answer.dec];
  } catch (error) {
    say(`${error.message}. Give coordinates as "RA Dec" in degrees or sexagesimal (09 58 21.6 -11 03 36), or the name of an archived object.`);
    return null;
  }
}
