// The edit studio: start from a generator sample or an uploaded photo (crop → embed with a progress bar, optionally
// tune the generator to it: pivotal tuning), paint the edit on the segmentation, run mode 3 with live previews and
// losses, compare before/after, save the learned vector to the library, download image, mask and vector.

import * as api from '../api.js';
import { h, button, loadImage, replaceChildren } from '../ui/dom.js';
import { bindKey } from '../ui/keyboard.js';
import { showError, toast } from '../ui/toast.js';
import { askForm } from '../ui/modal.js';
import { routeHash } from '../router.js';
import { CanvasView } from '../panels/canvas-view.js';
import { Palette } from '../panels/palette.js';
import { Toolbar } from '../panels/toolbar.js';
import { SampleList } from '../panels/sample-list.js';
import { uploadChosenFile } from '../panels/image-picker.js';
import { LossChart } from '../chart/loss-chart.js';
import { OpHistory } from '../canvas/history.js';
import { LabelMask } from '../canvas/mask.js';
import { SharedMask } from '../canvas/collab.js';
import { decodeIndexPng, encodeIndexPng, toBase64 } from '../png.js';
import { describeJob, finishedEdit, orTimeout, watchEdit, watchJob } from '../jobs.js';

const DEFAULT_STEPS = 60;
const SEGMENT_TIMEOUT_MS = 60_000;

/** A before/after comparison: the after image is clipped at the slider. */
export class CompareView {
  constructor(placeholder = 'Choose a sample on the left, make a random one, or upload a photo.') {
    this.before = h('img', { class: 'before', alt: 'Before' });
    this.after = h('img', { class: 'after', alt: 'After' });
    this.slider = h('input', { type: 'range', min: '0', max: '100', value: '50', class: 'compare-slider',
      title: 'Before / after', 'aria-label': 'Before/after split' });
    this.placeholder = h('p', { class: 'placeholder' }, placeholder);
    this.frame = h('div', { class: 'compare' }, this.placeholder, this.before, this.after);
    this.slider.addEventListener('input', () => this.split());
    this.element = h('div', { class: 'compare-view', style: { display: 'contents' } }, this.frame, this.slider);
    this.split();
  }

  split() { this.frame.style.setProperty('--split', `${this.slider.value}%`); }

  setBefore(url) {
    this.placeholder.hidden = true;
    this.before.src = url;
    if (!this.after.getAttribute('src')) this.after.src = url;
  }

  setAfter(url) { this.after.src = url; }
}

export class EditView {
  constructor(context) {
    this.context = context;
    this.me = context.me;
    this.history = new OpHistory();
    this.sample = null;
    this.edit = null; // the last finished EditOut
    this.running = null; // {watch, session}

    this.datasetSelect = h('select', { title: 'Dataset', 'aria-label': 'Dataset',
      onchange: () => this.openDataset(Number(this.datasetSelect.value)) });
    this.seed = h('input', { type: 'number', min: '0', placeholder: 'seed (random)', title: 'Seed', 'aria-label': 'Seed' });
    this.fileInput = h('input', { type: 'file', accept: 'image/png,image/jpeg,image/webp', hidden: true,
      'aria-label': 'Photo to upload', onchange: () => this.upload() });
    this.embedProgress = h('div', { class: 'progress', hidden: true }, h('div', { style: { width: '0%' } }));
    this.embedText = h('span', { class: 'who' });
    this.tuneButton = button('Tune generator to this image', { onclick: () => this.tune(),
      title: 'Pivotal tuning: fine-tunes a copy of the generator around this image’s latent, so that it reproduces '
        + 'the photo more exactly and edits start from it; takes about 20 s on a CPU' });
    this.tuneButton.hidden = true;
    this.tuneText = h('span', { class: 'who' });
    this.samples = new SampleList({ onOpen: (s) => { location.hash = routeHash('edit', s.id); }, onOrderChange: () => {} });
    this.samples.order.hidden = true;

    this.compare = new CompareView();
    this.previewInfo = h('span', { class: 'loss-readout' }, 'no edit yet');
    this.canvas = new CanvasView({
      onOperation: () => {},
      onStrokeDone: (runs, inverse) => { this.history.push(runs, inverse); },
      onPick: (label) => this.palette.select(label),
    });
    this.palette = new Palette({
      onSelect: (label) => { this.canvas.label = label; },
      onVisibility: (hidden) => { this.canvas.hidden = hidden; this.canvas.refreshOverlay(); },
    });
    this.toolbar = new Toolbar({
      onTool: (tool) => this.canvas.setTool(tool),
      onBrush: (brush) => { this.canvas.brush = brush; this.canvas.dirty = true; },
      onOpacity: (opacity) => { this.canvas.opacity = opacity; this.canvas.refreshOverlay(); },
      onUndo: () => this.undo(), onRedo: () => this.redo(),
    }, [button('Reset mask', { title: 'Back to the predicted segmentation', onclick: () => this.resetMask() })]);

    this.steps = h('input', { type: 'number', min: '1', max: '2000', value: String(DEFAULT_STEPS), title: 'Steps',
      'aria-label': 'Optimisation steps' });
    this.stopFollow = h('input', { type: 'number', min: '1', max: '100', placeholder: 'off',
      title: 'Stop once this % of the painted region follows the mask (the "follow" line of the chart)',
      'aria-label': 'Stop at follow (%)' });
    this.editButton = button('Edit', { className: 'primary', title: 'Optimise the image to follow the painted mask',
      shortcut: 'Ctrl+Enter', onclick: () => this.runEdit() });
    this.cancelButton = button('Cancel', { className: 'danger', title: 'Stop the running edit', disabled: true,
      onclick: () => this.running?.watch.cancel() });
    this.editProgress = h('div', { class: 'progress' }, h('div', { style: { width: '0%' } }));
    this.chart = new LossChart('Edit loss', 'Losses appear during an edit.');
    this.saveVectorButton = button('Save vector…', { title: 'Save the learned edit to the shared library',
      disabled: true, onclick: () => this.saveVector() });
    this.downloads = h('div', { class: 'downloads row' });
    this.element = h('div', { class: 'view edit-view' },
      h('aside', { class: 'sidebar' },
        h('h2', {}, 'Start'), this.datasetSelect,
        h('div', { class: 'row' }, this.seed,
          button('Random sample', { title: 'Generate a new sample (seeded)', onclick: () => this.generate() })),
        h('div', { class: 'row' }, button('Upload photo…', { title: 'Upload a photo, crop it and embed it',
          onclick: () => this.fileInput.click() }), this.fileInput),
        this.embedProgress, this.embedText, h('div', { class: 'row' }, this.tuneButton), this.tuneText,
        this.samples.element),
      h('section', { class: 'workspace' },
        this.toolbar.element,
        h('div', { class: 'pair' },
          h('div', { class: 'image-pane' }, h('div', { class: 'pane-title' }, 'Image — before / after',
            this.compare.slider), this.compare.frame),
          h('div', { class: 'mask-pane' }, h('div', { class: 'pane-title' }, 'Segmentation — paint your edit here'),
            this.canvas.element)),
        h('footer', { class: 'statusbar' }, this.previewInfo)),
      h('aside', { class: 'sidebar right' },
        this.palette.element,
        h('section', {}, h('h2', {}, 'Edit'),
          h('div', { class: 'row' }, h('label', {}, 'Steps '), this.steps),
          h('div', { class: 'row' }, h('label', {}, 'Stop at follow % '), this.stopFollow),
          h('div', { class: 'row' }, this.editButton, this.cancelButton), this.editProgress, this.chart.element,
          h('div', { class: 'row' }, this.saveVectorButton), h('h3', {}, 'Download'), this.downloads)));
    const scope = 'edit';
    bindKey('ctrl+enter', 'Run the edit', () => this.runEdit(), scope);
    bindKey('ctrl+z', 'Undo', () => this.undo(), scope);
    bindKey('ctrl+shift+z', 'Redo', () => this.redo(), scope);
    for (const [key, tool] of Object.entries({ b: 'brush', e: 'eraser', f: 'fill', p: 'polygon', l: 'lasso', i: 'eyedropper' })) {
      bindKey(key, key === 'b' ? 'B E F P L I: the tools, as in Annotate' : '', () => this.toolbar.setTool(tool), scope);
    }
    bindKey('[', '[ ]: brush size', () => this.toolbar.nudgeSize(-2), scope);
    bindKey(']', '', () => this.toolbar.nudgeSize(2), scope);
    this.renderDownloads();
  }

  async activate(sampleId) {
    if (!this.datasets) {
      this.datasets = await api.listDatasets();
      replaceChildren(this.datasetSelect, this.datasets.map((d) => h('option', { value: d.id }, d.name)));
    }
    if (sampleId) {
      const sample = await api.getSample(sampleId);
      if (this.dataset?.id !== sample.dataset_id) await this.openDataset(sample.dataset_id);
      if (this.sample?.id !== sample.id) await this.openSample(sample);
    } else if (!this.dataset && this.datasets.length) {
      await this.openDataset(this.datasets[0].id);
    }
  }

  async openDataset(datasetId) {
    this.dataset = this.datasets.find((d) => d.id === datasetId);
    this.datasetSelect.value = String(datasetId);
    this.classes = (await api.getSchema(this.dataset.schema_id)).classes;
    this.palette.setClasses(this.classes);
    this.palette.select(Math.min(1, this.classes.length - 1));
    this.samples.setSamples(await api.listSamples(this.dataset.id));
  }

  async openSample(sample) {
    this.sample = sample;
    this.context.currentSample = sample;
    this.samples.setCurrent(sample.id);
    this.edit = null;
    this.saveVectorButton.disabled = true;
    this.chart.setAll({});
    this.compare.setBefore(sample.image_url);
    this.compare.setAfter(sample.image_url);
    this.previewInfo.textContent = sample.has_latent ? 'loading the segmentation…'
      : 'this photo is not embedded yet — embedding…';
    this.showTuning();
    this.image = await loadImage(sample.image_url);
    await this.resetMask();
    this.renderDownloads();
    if (!sample.has_latent) await this.embed(sample);
  }

  async resetMask() {
    if (!this.sample) return;
    try {
      const decoded = await decodeIndexPng(await this.predictedMask());
      this.startMask = new LabelMask(decoded.width, decoded.height, decoded.data);
    } catch (error) {
      showError(error, 'Could not load the segmentation');
      this.startMask = new LabelMask(this.sample.width, this.sample.height);
    }
    this.history.clear();
    this.canvas.setContent({ image: this.image, shared: new SharedMask(this.startMask.clone(), 0),
      colours: this.classes.map((c) => c.colour) });
    if (this.sample.has_latent) this.previewInfo.textContent = 'paint on the segmentation, then Edit';
  }

  // The segmentation the edit starts from must be the model's own prediction for this image (mode 3 compares the
  // painted mask with it). Workers store it with every generated, embedded, pre-labelled or ranked sample; a
  // sample older than the active branch (activated without a ranking since) has none yet (404): then a segment
  // job stores it and names it in its result.
  async predictedMask() {
    try {
      return await api.predictedMaskBytes(this.sample.id);
    } catch (error) {
      if (error.status !== 404) throw error;
    }
    if (!this.sample.has_latent) return api.annotationMaskBytes(this.sample.id, null);
    this.previewInfo.textContent = 'segmenting the image…';
    const job = await api.segmentSample(this.sample.id);
    const watch = watchJob(job.id);
    const final = await orTimeout(watch.done, SEGMENT_TIMEOUT_MS, 'the segmentation');
    watch.close();
    if (final.status !== 'succeeded') throw new Error(`segmenting the image ${describeJob(final)}`);
    return api.urlBytes(final.result.prediction_url);
  }

  undo() {
    const shared = this.canvas.shared;
    const runs = shared && this.history.undo(shared.displayed.data);
    if (runs?.length) { shared.applyLocal(runs); this.canvas.refreshRuns(runs); }
  }

  redo() {
    const shared = this.canvas.shared;
    const runs = shared && this.history.redo(shared.displayed.data);
    if (runs?.length) { shared.applyLocal(runs); this.canvas.refreshRuns(runs); }
  }

  async generate() {
    if (!this.dataset) return;
    try {
      const seed = this.seed.value === '' ? Math.floor(Math.random() * 2 ** 31) : Number(this.seed.value);
      const job = await api.generateSamples(this.dataset.id, { count: 1, seed, truncation_psi: 0.7 });
      this.embedText.textContent = `sampling seed ${seed}: ${describeJob(job)}`;
      const final = await watchJob(job.id, {
        onStatus: (status) => { this.embedText.textContent = `sampling seed ${seed}: ${describeJob(status)}`; },
      }).done;
      if (final.status !== 'succeeded') throw new Error(describeJob(final));
      this.embedText.textContent = '';
      const samples = await api.listSamples(this.dataset.id);
      this.samples.setSamples(samples);
      const made = final.result?.sample_ids?.[0] ?? samples.at(-1)?.id;
      if (made) location.hash = routeHash('edit', made);
    } catch (error) {
      this.embedText.textContent = '';
      showError(error, 'Sampling failed');
    }
  }

  async upload() {
    const sample = await uploadChosenFile(this.fileInput, this.dataset, this.samples);
    if (sample) location.hash = routeHash('edit', sample.id);
  }

  async embed(sample) {
    const bar = this.embedProgress.firstChild;
    this.embedProgress.hidden = false;
    try {
      const job = await api.embedSample(sample.id);
      const final = await watchJob(job.id, {
        onStatus: (s) => { this.embedText.textContent = `embedding: ${describeJob(s)}`; },
        onProgress: (p) => { bar.style.width = `${Math.round(p.progress * 100)}%`; this.embedText.textContent = `embedding ${p.step}/${p.total}`; },
      }).done;
      if (final.status !== 'succeeded') throw new Error(`embedding ${describeJob(final)}`);
      this.sample = await api.getSample(sample.id);
      this.compare.setBefore(`${this.sample.image_url}?embedded=1`);
      this.embedText.textContent = 'embedded';
      this.showTuning();
      this.previewInfo.textContent = 'paint on the segmentation, then Edit';
      await this.resetMask();
    } catch (error) {
      showError(error, 'Embedding failed');
    } finally {
      this.embedProgress.hidden = true;
    }
  }

  // A sample with a latent may be tuned; a tuned one says how much closer the tuned generator gets to the photo.
  showTuning() {
    const tuning = this.sample.tuning;
    this.tuneButton.hidden = !this.sample.has_latent;
    this.tuneText.textContent = tuning
      ? `tuned: PSNR ${tuning.psnr_before.toFixed(1)} → ${tuning.psnr_after.toFixed(1)} dB` : '';
  }

  async tune() {
    const bar = this.embedProgress.firstChild;
    this.embedProgress.hidden = false;
    this.tuneButton.disabled = true;
    try {
      const job = await api.tuneSample(this.sample.id);
      const final = await watchJob(job.id, {
        onStatus: (s) => { this.tuneText.textContent = `tuning: ${describeJob(s)}`; },
        onProgress: (p) => { bar.style.width = `${Math.round(p.progress * 100)}%`; this.tuneText.textContent = `tuning ${p.step}/${p.total}`; },
      }).done;
      if (final.status !== 'succeeded') throw new Error(`tuning ${describeJob(final)}`);
      this.sample = await api.getSample(this.sample.id);
      this.showTuning();
      this.compare.setBefore(`${this.sample.image_url}?tuned=${job.id}`);
      await this.resetMask(); // the tuned generator's segmentation
    } catch (error) {
      this.tuneText.textContent = '';
      showError(error, 'Tuning failed');
    } finally {
      this.embedProgress.hidden = true;
      this.tuneButton.disabled = false;
    }
  }

  async runEdit() {
    const shared = this.canvas.shared;
    if (!this.sample || !shared || this.running) {
      if (!shared) toast('Wait for the segmentation to load, then paint your edit', 'info');
      return;
    }
    const changed = shared.displayed.data.some((v, i) => v !== this.startMask.data[i]);
    if (!changed) { toast('Paint a change on the segmentation first', 'info'); return; }
    const bar = this.editProgress.firstChild;
    this.editButton.disabled = true;
    this.cancelButton.disabled = false;
    this.chart.setAll({});
    bar.style.width = '0%';
    try {
      const png = await encodeIndexPng(shared.width, shared.height, shared.displayed.data);
      const stopFollow = Number(this.stopFollow.value);
      const session = await api.startEdit({ sample_id: this.sample.id, mode: 3, target_mask_png: toBase64(png),
        steps: Number(this.steps.value) || DEFAULT_STEPS,
        ...(stopFollow > 0 ? { stop_follow: Math.min(stopFollow, 100) / 100 } : {}) });
      let result = null;
      const watch = watchEdit(session.id, {
        onPreview: (p) => {
          this.compare.setAfter(p.image);
          this.previewInfo.textContent = `step ${p.step}/${p.total}`;
        },
        onProgress: (p) => {
          bar.style.width = `${Math.round(p.progress * 100)}%`;
          this.chart.append(p.step, p.losses);
          const losses = Object.entries(p.losses ?? {}).map(([k, v]) => `${k} ${Number(v).toFixed(4)}`).join('  ');
          this.previewInfo.textContent = `step ${p.step}/${p.total}  ${losses}`;
        },
        onStatus: (s) => { if (s.status === 'queued') this.previewInfo.textContent = 'queued…'; },
        onResult: (message) => { result = message; },
      });
      this.running = { watch, session };
      const final = await watch.done;
      if (final.status === 'cancelled') { toast('Edit cancelled', 'info'); return; }
      if (final.status !== 'succeeded') throw new Error(describeJob(final));
      this.edit = await finishedEdit(session, result);
      if (this.edit.result) this.compare.setAfter(this.edit.result.image_url);
      bar.style.width = '100%';
      this.saveVectorButton.disabled = !this.edit.result?.has_vector;
      this.previewInfo.textContent = 'done — drag the slider over the image to compare';
      this.renderDownloads();
    } catch (error) {
      showError(error, 'Edit failed');
    } finally {
      this.running = null;
      this.editButton.disabled = false;
      this.cancelButton.disabled = true;
    }
  }

  async saveVector() {
    if (!this.edit) return;
    const answer = await askForm('Save to the vector library', [
      { name: 'name', label: 'Name', required: true },
      { name: 'description', label: 'Description', type: 'textarea' },
      { name: 'tags', label: 'Tags (comma separated)' }], 'Save');
    if (!answer) return;
    try {
      this.vector = await api.saveVector({ edit_id: this.edit.id, name: answer.name, description: answer.description,
        tags: answer.tags.split(',').map((t) => t.trim()).filter(Boolean) });
      toast(`Saved “${this.vector.name}” to the library`, 'success');
      this.renderDownloads();
    } catch (error) {
      showError(error, 'Could not save the vector');
    }
  }

  async downloadMask() {
    const shared = this.canvas.shared;
    if (!shared) return;
    const png = await encodeIndexPng(shared.width, shared.height, shared.displayed.data);
    const link = h('a', { href: URL.createObjectURL(new Blob([png], { type: 'image/png' })),
      download: `sample-${this.sample.id}-target-mask.png` });
    link.click();
    URL.revokeObjectURL(link.href);
  }

  renderDownloads() {
    const result = this.edit?.result;
    const link = (href, label, title) => (href
      ? h('a', { href, download: '', class: 'button-link', title }, label)
      : h('span', { class: 'who', title }, label));
    replaceChildren(this.downloads,
      link(result?.image_url ?? this.sample?.image_url, 'Image', 'The edited image (PNG)'),
      link(result?.mask_url, 'Mask', 'The edited image’s segmentation (PNG)'),
      button('Painted mask', { title: 'The mask you painted (index PNG)', onclick: () => this.downloadMask() }),
      link(this.vector?.file_url, 'Vector', this.vector ? 'The saved edit vector (.safetensors)' : 'Save the vector first'));
  }
}
