// Per-class IoU of a segmentation branch, as measured when it was trained: class colour, name, a bar, the value and
// how many pixels of the measured masks the class covers. Classes absent from both prediction and masks show "—".

import { h, replaceChildren } from '../ui/dom.js';
import { classIouRows, scalarMetrics } from '../metrics.js';

// cached_features: whether the retraining kept every sample's generator features (else it ran slower, re-rendering).
const SUMMARY_KEYS = ['num_samples', 'num_heldout', 'train_mean_iou', 'steps', 'stopped_early', 'cached_features'];

/** The training run's figures beside the IoU, as short "name value" phrases. */
export function trainingSummary(metrics) {
  const shown = SUMMARY_KEYS.filter((k) => k in (metrics ?? {}));
  return scalarMetrics(Object.fromEntries(shown.map((k) => [k, metrics[k]])));
}

/** Where the IoU was measured, in words. */
export function measuredOn(metrics) {
  const n = metrics?.num_heldout;
  const plural = n === 1 ? '' : 's';
  switch (metrics?.evaluated_on) {
    case 'held-out': return `on the ${n} submitted/reviewed sample${plural} left out of training`;
    case 'held-out split': return `on ${n} picked sample${plural} held out of training`;
    case 'training': return `on the ${metrics.num_samples} training samples (nothing was held out)`;
    case 'bundle evaluation': return `on ${n} fresh renders with their true masks (the bundle's evaluation)`;
    default: return metrics?.evaluated_on ? `on ${metrics.evaluated_on} samples` : '';
  }
}

export class IouTable {
  constructor() {
    this.element = h('div', { class: 'iou' });
  }

  clear() {
    replaceChildren(this.element);
  }

  /** @param {object} metrics a segmentation checkpoint's metrics; @param {{name, colour}[]} classes its schema's */
  show(metrics, classes = [], title = 'Per-class IoU') {
    const rows = classIouRows(metrics, classes);
    const mean = metrics?.mean_iou;
    replaceChildren(this.element,
      h('h3', {}, title),
      h('p', { class: 'iou-mean' }, 'mIoU ', h('strong', {}, Number.isFinite(mean) ? mean.toFixed(3) : '—'), ' ',
        measuredOn(metrics)),
      h('p', { class: 'metrics-summary' }, trainingSummary(metrics).join(' · ')),
      rows ? h('table', { class: 'data iou-table', 'aria-label': 'Per-class IoU' },
        h('tr', {}, ['', 'Class', 'IoU', '', 'Pixels'].map((t) => h('th', {}, t))),
        rows.map((row) => h('tr', { dataset: { classIndex: row.index } },
          h('td', {}, h('span', { class: 'swatch', style: { background: row.colour ?? 'transparent' } })),
          h('td', {}, row.name),
          h('td', { class: 'iou-bar' }, h('div', { class: 'bar', style: { width: `${Math.round((row.iou ?? 0) * 100)}%` } })),
          h('td', { class: 'num' }, row.iou === null ? '—' : row.iou.toFixed(3)),
          h('td', { class: 'num' }, row.pixels === null ? '' : String(row.pixels)))))
        : h('p', { class: 'who' }, 'No per-class IoU in these metrics.'));
  }
}
