// The revision history of a sample's annotation (GET /samples/{id}/annotation/revisions): who changed it, when and
// why, a preview of each revision, its differences from the mask on the canvas as an overlay, and restore (the
// revision's mask becomes a new version: nothing in between is lost).

import * as api from '../api.js';
import { h, button, replaceChildren, formatTime } from '../ui/dom.js';
import { showError, toast } from '../ui/toast.js';
import { decodeIndexPng } from '../png.js';
import { compositeOverlay, overlayLookup } from '../canvas/overlay.js';
import { maskDiff } from '../canvas/diff.js';

const PREVIEW_SIZE = 160;
const REASONS = { autosave: 'autosave', save: 'save', prelabel: 'pre-label', submit: 'submit', review: 'review',
  restore: 'restore' };

/** One line for a revision: 'v4 · review: rejected · boss' (the status says what a review decided). */
export function describeRevision(revision) {
  const why = REASONS[revision.reason] ?? revision.reason;
  const decided = revision.reason === 'review' ? `: ${revision.status}` : '';
  return `v${revision.version} · ${why}${decided} · ${revision.author ?? 'someone'}`;
}

/** The time of day for today's revisions, the date for older ones (the full time is the tooltip). */
function shortTime(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  return date.toDateString() === new Date().toDateString() ? date.toLocaleTimeString() : date.toLocaleDateString();
}

export class HistoryPanel {
  /**
   * @param {{current: () => ?Uint8Array, onDiff: (changed: ?Uint8Array) => void,
   *          onRestore: (version: number) => Promise<void>}} handlers  `current`: the mask on the canvas now
   */
  constructor(handlers) {
    this.handlers = handlers;
    this.list = h('ol', { class: 'revisions', 'aria-label': 'Revisions' });
    this.detail = h('div', { class: 'revision-detail' });
    this.element = h('section', { class: 'history' }, h('h2', {}, 'History'), this.list, this.detail);
    this.sample = null;
    this.selected = null;
    this.masks = new Map(); // version → Uint8Array (revisions never change)
  }

  /** A new sample: its image (for previews), class colours, and whether this user may restore. */
  setSample(sample, { image, colours, canRestore }) {
    this.sample = sample;
    this.image = image;
    this.colours = colours;
    this.canRestore = canRestore;
    this.selected = null;
    this.masks.clear();
    this.handlers.onDiff(null);
    replaceChildren(this.list);
    replaceChildren(this.detail);
  }

  /** Reloads the list (after every new version the room announced). */
  async refresh(currentVersion) {
    if (!this.sample) return;
    const sampleId = this.sample.id;
    this.currentVersion = currentVersion;
    let revisions;
    try {
      revisions = await api.annotationRevisions(sampleId);
    } catch (error) {
      showError(error, 'Could not read the history');
      return;
    }
    if (this.sample?.id !== sampleId) return; // another sample was opened meanwhile
    this.revisions = revisions;
    replaceChildren(this.list, revisions.length ? revisions.map((revision) => h('li', {
      class: revision.version === this.selected ? 'selected' : '', dataset: { version: revision.version },
      tabindex: '0', title: revision.note || describeRevision(revision),
      onclick: () => this.select(revision.version),
      onkeydown: (event) => { if (event.key === 'Enter') this.select(revision.version); },
    }, h('span', { class: `reason ${revision.reason}` }, describeRevision(revision)),
    h('time', { datetime: revision.created, title: formatTime(revision.created) }, shortTime(revision.created))))
      : h('li', { class: 'who' }, 'No revisions yet'));
    if (this.selected !== null) await this.showDetail(this.selected);
  }

  async select(version) {
    this.selected = this.selected === version ? null : version;
    for (const item of this.list.children) item.classList.toggle('selected', Number(item.dataset.version) === this.selected);
    if (this.selected === null) {
      this.handlers.onDiff(null);
      replaceChildren(this.detail);
      return;
    }
    await this.showDetail(version);
  }

  async revisionMask(version) {
    if (!this.masks.has(version)) {
      const decoded = await decodeIndexPng(await api.annotationMaskBytes(this.sample.id, version));
      this.masks.set(version, decoded.data);
    }
    return this.masks.get(version);
  }

  // The preview and the differences from the canvas's mask, shown on the canvas as an overlay.
  async showDetail(version) {
    const revision = this.revisions?.find((r) => r.version === version);
    if (!revision) return;
    const sampleId = this.sample.id;
    let mask;
    try {
      mask = await this.revisionMask(version);
    } catch (error) {
      showError(error, `Could not load version ${version}`);
      return;
    }
    if (this.sample?.id !== sampleId || this.selected !== version) return;
    const current = this.handlers.current();
    const diff = current ? maskDiff(mask, current) : null;
    this.handlers.onDiff(diff?.count ? diff.changed : null);
    const isCurrent = version === this.currentVersion;
    replaceChildren(this.detail,
      this.preview(mask),
      h('p', { class: 'diff-count' }, diff === null ? '' : diff.count === 0 ? 'Same as the mask on the canvas'
        : `${diff.count} pixels differ from the mask on the canvas (magenta on the canvas)`),
      revision.note ? h('p', { class: 'who' }, revision.note) : null,
      this.canRestore && !isCurrent ? button(`Restore v${version}`, { className: 'primary',
        title: `Make version ${version} the next version (later versions stay in the history)`,
        onclick: () => this.restore(version) }) : null);
  }

  preview(mask) {
    const { width, height } = this.sample;
    const layer = h('canvas', { width, height });
    const layerCtx = layer.getContext('2d');
    const pixels = layerCtx.createImageData(width, height);
    compositeOverlay(pixels.data, mask, width, overlayLookup(this.colours, new Set(), 0.6), 0, height - 1, null);
    layerCtx.putImageData(pixels, 0, 0);
    const scale = PREVIEW_SIZE / Math.max(width, height);
    const canvas = h('canvas', { class: 'revision-preview', width: Math.round(width * scale),
      height: Math.round(height * scale), 'aria-label': 'Preview of the revision' });
    const ctx = canvas.getContext('2d');
    ctx.imageSmoothingEnabled = false;
    if (this.image) ctx.drawImage(this.image, 0, 0, canvas.width, canvas.height);
    ctx.drawImage(layer, 0, 0, canvas.width, canvas.height);
    return canvas;
  }

  async restore(version) {
    try {
      await this.handlers.onRestore(version);
      toast(`Restored version ${version} as a new version`, 'success');
      this.selected = null;
      this.handlers.onDiff(null);
      replaceChildren(this.detail);
    } catch (error) {
      showError(error, 'Restore failed');
    }
  }
}
