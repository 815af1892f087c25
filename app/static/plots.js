// Interactive plots of the page's products (uPlot, loaded by the page as a global): spectra with
// error bars, rebinned on the server to a minimum number of counts a bin, in the instrument's
// energy range, log/linear axes; light curves with error bars, in MJD or mission time, good time
// intervals shaded and the bin size shown; optical 1-D spectra with their error. Values in the
// legend are rounded to what the data resolve (x: the server's x_decimals; y: the error's two
// significant digits). The arrays come from GET /runs/<id>/plot/<file> (app/plots.py).

import { api, el } from './common.js';

const COLOURS = { source: '#1f77b4', 'net rate': '#1f77b4', rate: '#1f77b4', flux: '#1f77b4', background: '#ff7f0e' };
const GTI_FILL = 'rgba(44,160,44,0.12)';
const TITLES = {
  spectrum: 'source and scaled background',
  'optical-spectrum': 'flux with its error',
  lightcurve: 'count rate and background',
};

// "value ± error" with the error to two significant digits and the value to the same decimals.
export function withError(value, error, fallbackDecimals = 4) {
  if (value === null || value === undefined || !Number.isFinite(value)) return '–';
  if (error === null || error === undefined || !Number.isFinite(error) || error <= 0) {
    return Math.abs(value) >= 1e-3 && Math.abs(value) < 1e6 ? value.toFixed(Math.min(fallbackDecimals, 10)) : value.toPrecision(3);
  }
  const decimals = Math.max(0, Math.min(12, 1 - Math.floor(Math.log10(error))));
  if (Math.abs(value) < 1e-3 || Math.abs(value) >= 1e6) return `${value.toPrecision(3)} ± ${error.toPrecision(2)}`;
  return `${value.toFixed(decimals)} ± ${error.toFixed(decimals)}`;
}

// The product's plot in `box`: controls above it, the uPlot chart at the panel's full width.
export async function plotProduct(box, runId, product, options = {}) {
  const view = { minCounts: options.minCounts || 20, logX: options.logX, logY: options.logY, time: options.time || 'mjd' };
  box.replaceChildren(el('p', { class: 'muted' }, 'Loading…'));
  let data;
  try {
    const query = product.kind === 'spectrum' ? `?min_counts=${encodeURIComponent(view.minCounts)}` : '';
    data = await api('GET', `/runs/${runId}/plot/${product.file}${query}`);
  } catch (error) {
    box.replaceChildren(el('p', { class: 'problem', 'data-testid': 'plot-problem' }, `Cannot plot ${product.file}: ${error.message}`));
    return null;
  }
  if (view.logX === undefined) view.logX = data.kind === 'spectrum';
  if (view.logY === undefined) view.logY = data.kind === 'spectrum';
  const holder = el('div', { 'data-testid': 'plot-canvas', class: 'plot-canvas' });
  const redraw = () => draw(holder, product, data, view);
  box.replaceChildren(controls(data, view, redraw, () => plotProduct(box, runId, product, view)), holder);
  box.dataset.kind = data.kind;
  box.scrollIntoView({ block: 'nearest' });
  return redraw();
}

// A full-size image product in `box` (clicking a preview of an image).
export function showImage(box, url, alt) {
  box.replaceChildren(el('img', { src: url, class: 'large', alt, 'data-testid': 'plot-image' }));
  box.dataset.kind = 'image';
  box.scrollIntoView({ block: 'nearest' });
}

function controls(data, view, redraw, reload) {
  const bar = el('div', { class: 'plot-controls', 'data-testid': 'plot-controls' });
  const toggle = (label, key, testid) => el('label', {},
    el('input', { type: 'checkbox', 'data-testid': testid, checked: view[key], onchange: (e) => { view[key] = e.target.checked; redraw(); } }),
    ` ${label}`);
  if (data.kind === 'spectrum') {
    const input = el('input', { type: 'number', min: 1, max: 10000, step: 1, value: view.minCounts, 'data-testid': 'min-counts', class: 'narrow' });
    const rebin = () => {
      const n = Number(input.value);
      if (!Number.isInteger(n) || n < 1 || n > 10000) { input.setCustomValidity('a whole number from 1 to 10000'); input.reportValidity(); return; }
      view.minCounts = n;
      reload();
    };
    input.addEventListener('keydown', (e) => { if (e.key === 'Enter') rebin(); });
    bar.append(
      el('label', { title: 'Adjacent channels are grouped until each bin holds at least this many source counts' }, 'Min. counts per bin ', input),
      el('button', { type: 'button', 'data-testid': 'rebin', onclick: rebin }, 'Rebin'),
      toggle('log energy', 'logX', 'log-x'), toggle('log rate', 'logY', 'log-y'),
      el('span', { class: 'muted' }, [
        `${data.x.length} bins`,
        data.energy_range ? `, ${data.instrument || 'instrument'} band ${data.energy_range[0]}–${data.energy_range[1]} keV` : '',
        `, exposure ${(data.exposure / 1000).toFixed(1)} ks`,
      ].join('')),
    );
  } else if (data.kind === 'lightcurve') {
    const select = el('select', { 'data-testid': 'time-axis', onchange: (e) => { view.time = e.target.value; redraw(); } },
      el('option', { value: 'mjd', selected: view.time === 'mjd' }, `MJD (${data.timesys})`),
      el('option', { value: 'mission', selected: view.time === 'mission' }, 'mission time (s)'));
    bar.append(
      el('label', {}, 'Time ', select), toggle('log rate', 'logY', 'log-y'),
      el('span', { 'data-testid': 'bin-size', class: 'muted' },
        `bin ${seconds(data.timedel)}${data.bins_per_point > 1 ? ` (every ${data.bins_per_point}th bin shown)` : ''}; shaded: good time intervals`
        + (data.flagged ? `; ${data.flagged} low-exposure bins left out` : '')),
    );
  } else {
    bar.append(toggle('log flux', 'logY', 'log-y'));
  }
  return bar;
}

function colour(name, i) {
  return COLOURS[name] || ['#2ca02c', '#9467bd'][i % 2];
}

function seconds(s) {
  if (!Number.isFinite(s) || s <= 0) return 'unknown';
  return s >= 1 ? `${Number(s.toPrecision(6))} s` : `${Number((s * 1000).toPrecision(4))} ms`;
}

// Tick labels as astronomers write them: no thousands separators (MJD 52404.3, not 52,404.3),
// as many decimals as the tick spacing needs.
function plainTicks(log) {
  return (u, splits, axis, space, incr) => splits.map((v) => {
    if (v === null || v === undefined) return '';
    if (log || !(incr > 0)) return String(Number(v.toPrecision(6)));
    return v.toFixed(Math.min(10, Math.max(0, -Math.floor(Math.log10(incr) + 1e-9))));
  });
}

function draw(holder, product, data, view) {
  if (holder.uplot) holder.uplot.destroy();
  const mjd = data.kind === 'lightcurve' && view.time === 'mjd';
  const x = mjd ? data.x_mjd : data.x;
  const xDecimals = mjd ? data.x_decimals_mjd : data.x_decimals;
  const names = Object.keys(data.series).filter((n) => !n.endsWith('_error'));
  const positive = (values) => values.map((v) => (v !== null && v > 0 ? v : null));
  const ys = names.map((n) => (view.logY ? positive(data.series[n]) : data.series[n]));
  const errors = names.map((n) => data.series[`${n}_error`] || null);
  const gti = (mjd ? data.gti_mjd : data.gti) || [];
  const xBand = data.kind === 'spectrum' && data.energy_range ? data.energy_range : null;
  const width = Math.max(320, holder.parentElement.clientWidth || 900);
  const options = {
    title: `${product.file} (${TITLES[data.kind] || ''})`,
    width,
    height: Math.round(Math.min(480, Math.max(300, width * 0.4))),
    scales: {
      x: { time: false, distr: view.logX ? 3 : 1, ...(xBand ? { range: () => xRange(xBand, data) } : {}) },
      y: { distr: view.logY ? 3 : 1 },
    },
    axes: [{ label: mjd ? data.x_label_mjd : data.x_label, values: plainTicks(view.logX) }, { label: data.y_label, size: 80 }],
    series: [
      { label: mjd ? 'MJD' : { lightcurve: 'time (s)', spectrum: 'energy (keV)', 'optical-spectrum': 'wavelength (Å)' }[data.kind] || 'x', value: (u, v) => (v === null || v === undefined ? '' : v.toFixed(xDecimals)) },
      ...names.map((n, i) => ({
        label: n,
        stroke: colour(n, i),
        width: data.kind === 'optical-spectrum' ? 1 : 0,
        points: { show: data.kind !== 'optical-spectrum', size: 4, fill: colour(n, i) },
        value: (u, v, si, idx) => (idx === null || idx === undefined ? '' : withError(data.series[n][idx], errors[i] ? errors[i][idx] : null)),
      })),
    ],
    hooks: {
      drawClear: [(u) => shade(u, gti)],
      draw: [(u) => { holder.dataset.errorBars = String(errorBars(u, data, errors, view)); }],
    },
  };
  // eslint-disable-next-line no-undef
  const u = new uPlot(options, [x, ...ys], holder);
  holder.uplot = u;
  holder.dataset.x = mjd ? 'mjd' : data.kind === 'lightcurve' ? 'mission' : 'x';
  if (!holder.resizer) {
    holder.resizer = new ResizeObserver(() => {
      if (!holder.isConnected) { holder.resizer.disconnect(); return; } // replaced by a new plot
      const w = Math.max(320, holder.parentElement ? holder.parentElement.clientWidth : 0);
      if (holder.uplot && Math.abs(holder.uplot.width - w) > 4) holder.uplot.setSize({ width: w, height: holder.uplot.height });
    });
    holder.resizer.observe(holder.parentElement);
  }
  return u;
}

// The instrument's band, narrowed to the bins there are (with a margin of half a bin).
function xRange(band, data) {
  const lows = data.x_low.filter((v) => v !== null);
  const highs = data.x_high.filter((v) => v !== null);
  if (!lows.length) return band;
  return [Math.max(band[0], Math.min(...lows)), Math.min(band[1], Math.max(...highs))];
}

function shade(u, intervals) {
  if (!intervals.length) return;
  const { ctx } = u;
  ctx.save();
  ctx.fillStyle = GTI_FILL;
  for (const [a, b] of intervals) {
    const x0 = Math.max(u.bbox.left, u.valToPos(a, 'x', true));
    const x1 = Math.min(u.bbox.left + u.bbox.width, u.valToPos(b, 'x', true));
    if (x1 > x0) ctx.fillRect(x0, u.bbox.top, x1 - x0, u.bbox.height);
  }
  ctx.restore();
}

// Vertical error bars (and the bin widths of spectra as horizontal bars); returns how many.
function errorBars(u, data, errors, view) {
  const { ctx } = u;
  const xs = u.data[0];
  const [yMin, yMax] = [u.scales.y.min, u.scales.y.max];
  let drawn = 0;
  ctx.save();
  ctx.lineWidth = Math.max(1, devicePixelRatio);
  errors.forEach((err, i) => {
    const series = u.series[i + 1];
    if (!series.show) return;
    const ys = u.data[i + 1];
    ctx.strokeStyle = colour(u.series[i + 1].label, i);
    ctx.globalAlpha = data.kind === 'optical-spectrum' ? 0.3 : 0.8;
    ctx.beginPath();
    for (let k = 0; k < xs.length; k += 1) {
      const x = xs[k]; const y = ys[k];
      if (x === null || y === null || x < u.scales.x.min || x > u.scales.x.max) continue;
      const px = u.valToPos(x, 'x', true);
      if (err && err[k] !== null && err[k] > 0) {
        let lo = y - err[k];
        if (view.logY && lo <= 0) lo = yMin;
        const top = u.valToPos(Math.min(y + err[k], yMax), 'y', true);
        const bottom = u.valToPos(Math.max(lo, yMin), 'y', true);
        ctx.moveTo(px, top); ctx.lineTo(px, bottom);
        drawn += 1;
      }
      if (data.x_low && data.x_high && data.x_low[k] !== null) {
        const py = u.valToPos(y, 'y', true);
        ctx.moveTo(u.valToPos(data.x_low[k], 'x', true), py); ctx.lineTo(u.valToPos(data.x_high[k], 'x', true), py);
      }
    }
    ctx.stroke();
  });
  ctx.restore();
  return drawn;
}
