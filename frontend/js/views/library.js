// The vector library: a filterable grid of shared edit vectors with before/after thumbnails, a detail view, and
// applying vectors to an image picked here (or the one open in Edit) with one slider each (mode 1 on a live-apply
// socket, newest slider position wins), refining the composition (mode 2, 10 or 30 steps) and saving it.

import * as api from '../api.js';
import { h, button, replaceChildren, formatTime } from '../ui/dom.js';
import { bindKey } from '../ui/keyboard.js';
import { showError, toast } from '../ui/toast.js';
import { askForm } from '../ui/modal.js';
import { LatestOnly } from '../latest.js';
import { LiveApply, Superseded } from '../live-apply.js';
import { describeJob, finishedEdit, orTimeout, watchEdit } from '../jobs.js';

const EDIT_TIMEOUT_MS = 120_000;
import { CompareView } from './edit.js';
import { matchesFilters } from '../library-filter.js';
import { ImagePicker } from '../panels/image-picker.js';

/**
 * Runs one edit (mode 2) to its end and returns the finished EditOut, from its `edit.result` message
 * (`finishedEdit`). A job that waits for a worker (behind background work) is not lost: the clock for "no answer"
 * starts when a worker runs it.
 */
async function runEdit(body, onProgress) {
  const session = await api.startEdit(body);
  let result = null;
  let started;
  const running = new Promise((resolve) => { started = resolve; });
  const watch = watchEdit(session.id, {
    onProgress,
    onResult: (message) => { result = message; },
    onStatus: (s) => { if (s.status !== 'queued') started(); },
  });
  const final = await Promise.race([watch.done,
    running.then(() => orTimeout(watch.done, EDIT_TIMEOUT_MS, 'the edit'))]);
  watch.close();
  if (final.status !== 'succeeded') throw new Error(`the edit ${describeJob(final)}`);
  return finishedEdit(session, result);
}

// An uploaded vector file carries no pictures: a worker renders them (thumbnails_job_id). While that job waits or
// runs, the library asks for the vector again this often, and shows the pictures once they are there.
const THUMBNAIL_POLL_MS = 2000;
const THUMBNAIL_POLL_LIMIT_MS = 10 * 60_000;

/** Whether a vector's thumbnails are still being rendered. */
export function thumbnailsPending(vector) {
  return vector.thumbnails_status === 'queued' || vector.thumbnails_status === 'running';
}

/** A thumbnail, or a labelled blank where the vector has none (yet). */
function thumb(url, alt, pending = false) {
  if (url) return h('img', { src: url, alt, loading: 'lazy' });
  return h('div', { class: 'no-thumb', title: alt }, pending ? 'rendering preview…' : 'no preview');
}

export class LibraryView {
  constructor(context) {
    this.context = context;
    this.vectors = [];
    this.chosen = new Map(); // vector id → {vector, scale, slider, readout}
    this.following = new Set(); // ids of vectors whose thumbnails are being rendered and asked for again
    this.classes = [];
    this.search = h('input', { type: 'search', placeholder: 'Search name or description', title: 'Search (/)',
      'aria-label': 'Search vectors', oninput: () => this.renderGrid() });
    this.tag = h('select', { title: 'Filter by tag', 'aria-label': 'Tag', onchange: () => this.renderGrid() });
    this.classFilter = h('select', { title: 'Filter by edited class', 'aria-label': 'Class', onchange: () => this.renderGrid() });
    this.author = h('select', { title: 'Filter by author', 'aria-label': 'Author', onchange: () => this.renderGrid() });
    this.grid = h('div', { class: 'grid', 'aria-label': 'Vectors' });
    this.target = h('p', { class: 'who' }, 'No image chosen: pick a sample below or upload a photo.');
    this.picker = new ImagePicker({ onPick: (sample) => this.setSample(sample) });
    this.compare = new CompareView('Pick a sample or upload a photo; vectors are applied to it here.');
    this.sliders = h('div', { class: 'sliders' });
    this.applyState = h('span', { class: 'who apply-state' });
    this.compositions = h('select', { title: 'Load a saved composition', 'aria-label': 'Saved compositions',
      onchange: () => this.loadComposition() });
    this.element = h('div', { class: 'view library-view' },
      h('section', { class: 'library' },
        h('div', { class: 'filters' }, this.search, this.tag, this.classFilter, this.author,
          button('Refresh', { title: 'Reload the library', onclick: () => this.load() })),
        this.grid),
      h('aside', { class: 'sidebar right apply-panel', style: { width: '340px' } },
        h('h2', {}, 'Apply to image'), this.target, this.picker.element,
        h('div', { class: 'compare-box', style: { height: '260px', display: 'flex', flexDirection: 'column' } },
          this.compare.frame), this.compare.slider,
        this.applyState,
        h('h3', {}, 'Vectors (one slider each)'), this.sliders,
        h('div', { class: 'row' },
          button('Refine 10', { title: 'Apply and optimise 10 steps (mode 2)', onclick: () => this.refine(10) }),
          button('Refine 30', { title: 'Apply and optimise 30 steps (mode 2)', onclick: () => this.refine(30) }),
          button('Save composition…', { title: 'Save these vectors and scales', onclick: () => this.saveComposition() })),
        h('h3', {}, 'Saved compositions'), this.compositions));
    this.live = null; // the sample's live-apply socket, open while this view is
    this.applier = new LatestOnly(
      // The image alone (no segmentation: about half of a CPU worker's mode-1 time), as a JPEG (a 1024² PNG takes
      // ~150 ms to encode), on one open socket: no edit session, job or request per position.
      (items) => this.liveFor(this.sample).apply(items),
      (answer, items) => this.showApplied(answer, items),
      (error) => {
        if (error instanceof Superseded) return;
        this.showState('');
        showError(error, 'Apply failed');
      });
    bindKey('/', 'Search the library', () => this.search.focus(), 'library');
  }

  async activate() {
    const opened = this.context.currentSample ?? null; // the image open in Edit, if any
    if (opened && opened.id !== this.sample?.id) await this.setSample(opened);
    await Promise.all([this.load(), this.picker.load(this.sample?.id ?? null)]);
  }

  deactivate() {
    this.live?.close();
    this.live = null;
  }

  /** The socket the sliders' positions go on: one for the sample they apply to, opened when first needed. */
  liveFor(sample) {
    if (this.live?.sampleId !== sample.id) {
      this.live?.close();
      this.live = new LiveApply(sample.id);
    }
    return this.live;
  }

  /** The image the vectors apply to (picked here or opened in Edit); the chosen sliders apply to it at once. */
  async setSample(sample) {
    this.sample = sample;
    this.context.currentSample = sample;
    this.target.textContent = `Sample #${sample.id}`;
    this.compare.setBefore(sample.image_url);
    this.compare.setAfter(sample.image_url);
    if (!this.classes.length) {
      const dataset = (await api.listDatasets()).find((d) => d.id === sample.dataset_id);
      if (dataset) this.classes = (await api.getSchema(dataset.schema_id)).classes;
    }
    if (this.chosen.size) this.applyNow();
  }

  async load() {
    this.vectors = await api.listVectors(this.sample ? { generator_id: undefined } : {});
    const tags = [...new Set(this.vectors.flatMap((v) => v.tags))].sort();
    const authors = [...new Set(this.vectors.map((v) => v.author).filter(Boolean))].sort();
    const classIds = [...new Set(this.vectors.flatMap((v) => v.edited_classes))].sort((a, b) => a - b);
    const keep = (select, options, all) => {
      const value = select.value;
      replaceChildren(select, h('option', { value: '' }, all), options.map(([v, label]) => h('option', { value: v }, label)));
      select.value = options.some(([v]) => String(v) === value) ? value : '';
    };
    keep(this.tag, tags.map((t) => [t, t]), 'All tags');
    keep(this.author, authors.map((a) => [a, a]), 'All authors');
    keep(this.classFilter, classIds.map((c) => [c, this.classes[c]?.name ?? `class ${c}`]), 'All classes');
    this.renderGrid();
    for (const vector of this.vectors.filter(thumbnailsPending)) this.followThumbnails(vector.id);
    const compositions = await api.listCompositions();
    replaceChildren(this.compositions, h('option', { value: '' }, compositions.length ? 'Choose…' : 'none yet'),
      compositions.map((c) => h('option', { value: c.id }, `${c.name} (${c.items.length})`)));
    this.savedCompositions = compositions;
  }

  /** Asks for the vector again until its thumbnails are rendered (or their job ended), then shows them. */
  async followThumbnails(id) {
    if (this.following.has(id)) return;
    this.following.add(id);
    const deadline = Date.now() + THUMBNAIL_POLL_LIMIT_MS;
    try {
      while (Date.now() < deadline) {
        await new Promise((resolve) => { setTimeout(resolve, THUMBNAIL_POLL_MS); });
        let vector;
        try {
          vector = await api.getVector(id);
        } catch (error) {
          if (error.status === 404) return; // deleted meanwhile
          continue; // a dropped request: ask again
        }
        if (thumbnailsPending(vector)) continue;
        this.vectors = this.vectors.map((v) => (v.id === id ? vector : v));
        this.renderGrid();
        return;
      }
    } finally {
      this.following.delete(id);
    }
  }

  renderGrid() {
    const filters = { text: this.search.value, tag: this.tag.value, classIndex: this.classFilter.value,
      author: this.author.value };
    const shown = this.vectors.filter((v) => matchesFilters(v, filters));
    if (!shown.length) {
      replaceChildren(this.grid, h('p', { class: 'empty' }, this.vectors.length ? 'No vector matches the filters.'
        : 'The library is empty: save a vector from the Edit studio.'));
      return;
    }
    replaceChildren(this.grid, shown.map((vector) => h('article', { class: 'card', dataset: { vectorId: vector.id } },
      h('div', { class: 'thumbs' }, thumb(vector.thumb_before_url, `${vector.name} before`, thumbnailsPending(vector)),
        thumb(vector.thumb_after_url, `${vector.name} after`, thumbnailsPending(vector))),
      h('div', { class: 'name' }, vector.name),
      h('div', { class: 'desc' }, vector.description),
      h('div', { class: 'tags' }, vector.tags.map((t) => h('span', { class: 'tag' }, t))),
      h('div', { class: 'row' },
        button('Apply', { className: 'primary', title: `Add “${vector.name}” with a slider`, onclick: () => this.choose(vector) }),
        button('Details', { title: 'Show everything about this vector', onclick: () => this.details(vector) })))));
  }

  details(vector) {
    const close = h('button', { type: 'button', title: 'Close' }, 'Close');
    const backdrop = h('div', { class: 'modal-backdrop' }, h('div', { class: 'modal', role: 'dialog' },
      h('h2', {}, vector.name),
      h('div', { class: 'thumbs', style: { display: 'flex', gap: '8px' } },
        thumb(vector.thumb_before_url, 'before', thumbnailsPending(vector)),
        thumb(vector.thumb_after_url, 'after', thumbnailsPending(vector))),
      h('p', {}, vector.description || '(no description)'),
      h('table', {},
        h('tr', {}, h('td', {}, 'Author'), h('td', {}, vector.author ?? '—')),
        h('tr', {}, h('td', {}, 'Created'), h('td', {}, formatTime(vector.created))),
        h('tr', {}, h('td', {}, 'Tags'), h('td', {}, vector.tags.join(', ') || '—')),
        h('tr', {}, h('td', {}, 'Edited classes'), h('td', {}, vector.edited_classes.map((c) => this.classes[c]?.name ?? c).join(', ') || '—')),
        h('tr', {}, h('td', {}, 'Scale range'), h('td', {}, `${vector.scale_min} … ${vector.scale_max}`)),
        h('tr', {}, h('td', {}, 'Generator'), h('td', {}, `#${vector.generator_id}`))),
      h('p', { class: 'row' }, h('a', { href: vector.file_url, download: '' }, 'Download vector'), ' ', close)));
    const dismiss = () => backdrop.remove();
    close.addEventListener('click', dismiss);
    backdrop.addEventListener('click', (event) => { if (event.target === backdrop) dismiss(); });
    document.body.append(backdrop);
  }

  choose(vector, scale = 1) {
    if (!this.sample) {
      toast('Pick an image first (a sample or an uploaded photo, under "Apply to image")', 'info');
      return;
    }
    if (this.chosen.has(vector.id)) return;
    const slider = h('input', { type: 'range', min: String(vector.scale_min), max: String(vector.scale_max),
      step: '0.05', value: String(scale), title: `Scale of ${vector.name}`, 'aria-label': `Scale of ${vector.name}`,
      dataset: { vectorId: vector.id } });
    const readout = h('span', {}, Number(scale).toFixed(2));
    const remove = button('×', { title: `Remove ${vector.name}`, onclick: () => {
      this.chosen.delete(vector.id);
      row.remove();
      this.applyNow();
    } });
    const row = h('div', { class: 'slider-row' }, h('span', {}, vector.name), h('span', {}, readout, ' ', remove), slider);
    slider.addEventListener('input', () => {
      readout.textContent = Number(slider.value).toFixed(2);
      this.applyNow();
    });
    this.chosen.set(vector.id, { vector, slider });
    this.sliders.append(row);
    this.applyNow();
  }

  items() {
    return [...this.chosen.values()].map(({ vector, slider }) => ({ vector_id: vector.id, scale: Number(slider.value) }));
  }

  applyNow() {
    const items = this.items().filter((item) => item.scale !== 0);
    if (!items.length) { this.compare.setAfter(this.sample.image_url); return; }
    this.applyState.textContent = 'applying…';
    this.applier.request(items);
  }

  showApplied(answer, items) {
    this.compare.setAfter(answer.image);
    this.showState(`applied (${items.length} vectors)`);
  }

  showResult(edit, how) {
    if (edit.result) this.compare.setAfter(edit.result.image_url);
    this.showState(`${how} (${edit.params.vectors?.length ?? 0} vectors)`);
  }

  /** A newer slider position may already be waiting: then what is shown is only a step on the way. */
  showState(done) {
    this.applyState.textContent = this.applier.waiting ? 'applying…' : done;
  }

  async refine(steps) {
    const items = this.items();
    if (!items.length) { toast('Apply at least one vector first', 'info'); return; }
    this.applyState.textContent = `refining ${steps} steps…`;
    try {
      const edit = await runEdit({ sample_id: this.sample.id, mode: 2, vectors: items, steps },
        (p) => { this.applyState.textContent = `refining ${p.step}/${p.total}`; });
      this.showResult(edit, `refined ${steps} steps`);
    } catch (error) {
      this.applyState.textContent = '';
      showError(error, 'Refine failed');
    }
  }

  async saveComposition() {
    const items = this.items();
    if (!items.length) { toast('Apply at least one vector first', 'info'); return; }
    const answer = await askForm('Save composition', [{ name: 'name', label: 'Name', required: true }], 'Save');
    if (!answer) return;
    try {
      const generatorId = [...this.chosen.values()][0].vector.generator_id;
      await api.saveComposition({ name: answer.name, generator_id: generatorId, items });
      toast(`Saved composition “${answer.name}”`, 'success');
      await this.load();
    } catch (error) {
      showError(error, 'Could not save the composition');
    }
  }

  loadComposition() {
    const composition = this.savedCompositions?.find((c) => String(c.id) === this.compositions.value);
    if (!composition) return;
    this.chosen.clear();
    this.sliders.replaceChildren();
    for (const item of composition.items) {
      const vector = this.vectors.find((v) => v.id === item.vector_id);
      if (vector) this.choose(vector, item.scale);
    }
  }
}
