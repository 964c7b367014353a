// The annotation workspace: sample list (with "label next" by uncertainty), the canvas and its tools, the class
// palette, who is here, live collaboration through the annotation room, pre-label, save/submit and review.

import * as api from '../api.js';
import { h, button, loadImage, replaceChildren } from '../ui/dom.js';
import { bindKey } from '../ui/keyboard.js';
import { DigitPicker, digitHelp } from '../ui/digit-picker.js';
import { showError, toast } from '../ui/toast.js';
import { askForm } from '../ui/modal.js';
import { routeHash } from '../router.js';
import { CanvasView } from '../panels/canvas-view.js';
import { HistoryPanel } from '../panels/history.js';
import { Palette } from '../panels/palette.js';
import { Presence, colourFor } from '../panels/presence.js';
import { SampleList, statusOf } from '../panels/sample-list.js';
import { Toolbar } from '../panels/toolbar.js';
import { AnnotationRoom } from '../rooms/annotation-room.js';
import { OpHistory } from '../canvas/history.js';
import { watchJob, describeJob } from '../jobs.js';
import { decodeIndexPng } from '../png.js';

const CURSOR_INTERVAL_MS = 50;
const PRESENCE_POLL_MS = 5000;
const TOOL_KEYS = { b: 'brush', e: 'eraser', f: 'fill', p: 'polygon', l: 'lasso', i: 'eyedropper' };

export class AnnotateView {
  constructor(context) {
    this.context = context;
    this.me = context.me;
    this.canPaint = this.me.permissions.includes('datasets.annotate');
    this.canReview = this.me.permissions.includes('datasets.review_annotation');
    this.history = new OpHistory();
    this.room = null;
    this.sample = null;
    this.dataset = null;
    this.classes = [];
    this.lastCursorSent = 0;

    this.datasetSelect = h('select', { title: 'Dataset', 'aria-label': 'Dataset',
      onchange: () => this.openDataset(Number(this.datasetSelect.value)) });
    this.samples = new SampleList({
      onOpen: (sample) => { location.hash = routeHash('annotate', sample.id); },
      onOrderChange: () => this.refreshSamples(),
    });
    this.canvas = new CanvasView({
      onOperation: ({ opId, runs }) => { this.room?.send(opId, runs); this.updateSaveState(); },
      onStrokeDone: (runs, inverse) => { this.history.push(runs, inverse); this.updateHistory(); },
      onPick: (label) => { this.palette.select(label); toast(`Picked ${this.classes[label]?.name}`, 'info', 1200); },
      onCursor: (x, y) => this.cursorMoved(x, y),
    });
    this.palette = new Palette({
      onSelect: (label) => { this.canvas.label = label; },
      onVisibility: (hidden) => { this.canvas.hidden = hidden; this.canvas.refreshOverlay(); },
    });
    this.presence = new Presence();
    this.prelabelButton = button('Pre-label', { title: 'Fill the mask with the model prediction', shortcut: 'Shift+P',
      onclick: () => this.prelabel() });
    this.uncertaintyButton = button('Uncertainty', { title: 'Show where the model is unsure', shortcut: 'U',
      onclick: () => this.toggleUncertainty() });
    this.uncertaintyButton.setAttribute('aria-pressed', 'false');
    this.saveButton = button('Save', { className: 'primary', title: 'Save now (autosave runs anyway)',
      shortcut: 'Ctrl+S', onclick: () => this.save() });
    this.toolbar = new Toolbar({
      onTool: (tool) => this.canvas.setTool(tool),
      onBrush: (brush) => { this.canvas.brush = brush; this.canvas.dirty = true; },
      onOpacity: (opacity) => { this.canvas.opacity = opacity; this.canvas.refreshOverlay(); },
      onUndo: () => this.undo(),
      onRedo: () => this.redo(),
    }, [this.prelabelButton, this.uncertaintyButton,
      button('Fit', { title: 'Fit the image in the window', shortcut: 'Z', onclick: () => this.canvas.fit() }),
      this.saveButton]);
    this.saveState = h('span', { class: 'save-state' }, 'no sample');
    this.jobState = h('span', { class: 'job-state' });
    this.cursorInfo = h('span', { class: 'cursor-info' });
    this.reviewPanel = h('section', { class: 'review' });
    this.historyPanel = new HistoryPanel({
      current: () => this.room?.shared?.displayed.data ?? null,
      onDiff: (changed) => this.canvas.setDiff(changed),
      onRestore: (version) => this.restore(version),
    });
    this.element = h('div', { class: 'view annotate-view' },
      h('aside', { class: 'sidebar' }, h('h2', {}, 'Dataset'), this.datasetSelect, this.samples.element),
      h('section', { class: 'workspace' }, this.toolbar.element, this.canvas.element,
        h('footer', { class: 'statusbar' }, this.saveState, this.jobState, this.cursorInfo)),
      h('aside', { class: 'sidebar right' }, this.presence.element, this.palette.element, this.reviewPanel,
        this.historyPanel.element));
    this.bindKeys();
    this.updateHistory();
    window.addEventListener('beforeunload', (event) => {
      if (this.room?.unsaved) event.preventDefault();
    });
  }

  bindKeys() {
    const scope = 'annotate';
    for (const [key, tool] of Object.entries(TOOL_KEYS)) {
      bindKey(key, `${tool[0].toUpperCase()}${tool.slice(1)} tool`, () => this.toolbar.setTool(tool), scope);
    }
    bindKey('[', 'Smaller brush', () => this.toolbar.nudgeSize(-2), scope);
    bindKey(']', 'Bigger brush', () => this.toolbar.nudgeSize(2), scope);
    bindKey('ctrl+z', 'Undo my last change', () => this.undo(), scope);
    bindKey('ctrl+shift+z', 'Redo', () => this.redo(), scope);
    bindKey('ctrl+y', 'Redo', () => this.redo(), scope);
    bindKey('ctrl+s', 'Save now', () => this.save(), scope);
    bindKey('shift+p', 'Pre-label with the model', () => this.prelabel(), scope);
    bindKey('u', 'Show/hide the uncertainty heat-map', () => this.toggleUncertainty(), scope);
    bindKey('h', 'Hide all classes but the current one (again: show all)', () => this.palette.soloCurrent(), scope);
    bindKey('z', 'Fit the image in the window', () => this.canvas.fit(), scope);
    bindKey('n', 'Next sample in the list', () => this.step(1), scope);
    bindKey('shift+n', 'Previous sample', () => this.step(-1), scope);
    this.digits = new DigitPicker(2);
    for (let d = 0; d <= 9; d++) {
      bindKey(String(d), d === 1 ? () => digitHelp(this.classes.length) : '',
        () => { const label = this.digits.push(String(d), performance.now()); if (label !== null) this.palette.select(label); },
        scope);
    }
  }

  async activate(sampleId) {
    if (!this.datasets) {
      this.datasets = await api.listDatasets();
      replaceChildren(this.datasetSelect, this.datasets.map((d) => h('option', { value: d.id }, d.name)));
      if (!this.datasets.length) {
        this.saveState.textContent = 'No datasets yet — an admin creates one (Django admin or the API).';
        return;
      }
    }
    if (sampleId) {
      const sample = await api.getSample(sampleId);
      if (this.dataset?.id !== sample.dataset_id) await this.openDataset(sample.dataset_id);
      await this.openSample(sample);
    } else if (!this.dataset && this.datasets.length) {
      await this.openDataset(this.datasets[0].id);
    }
  }

  deactivate() {}

  async openDataset(datasetId) {
    this.dataset = this.datasets.find((d) => d.id === datasetId);
    this.datasetSelect.value = String(datasetId);
    const schema = await api.getSchema(this.dataset.schema_id);
    this.classes = schema.classes;
    this.palette.setClasses(this.classes);
    this.digits.numClasses = this.classes.length;
    this.palette.select(Math.min(1, this.classes.length - 1));
    await this.refreshSamples();
    this.pollPresence();
  }

  async refreshSamples() {
    if (!this.dataset) return;
    const rows = this.samples.order.value === 'next'
      ? await api.nextToLabel(this.dataset.id, 50) : await api.listSamples(this.dataset.id);
    this.samples.setSamples(rows);
    this.samples.setCurrent(this.sample?.id ?? null);
  }

  // Who is on the other samples (GET /datasets/{id}/presence), polled; the current sample's room reports its own
  // people live. A 404 means the dataset is gone: polling stops.
  async pollPresence() {
    clearTimeout(this.presenceTimer);
    if (!this.dataset) return;
    const datasetId = this.dataset.id;
    try {
      const rooms = await api.datasetPresence(datasetId);
      if (this.dataset?.id !== datasetId) return; // another dataset was opened meanwhile: its own poll runs
      let changed = false;
      for (const sample of this.samples.samples) {
        if (sample.id === this.sample?.id) continue;
        const names = (rooms[sample.id] ?? []).filter((n) => n !== this.me.username);
        const before = this.samples.occupancy.get(sample.id) ?? [];
        if (names.join('\n') !== before.join('\n')) { this.samples.occupancy.set(sample.id, names); changed = true; }
      }
      if (changed) this.samples.render();
    } catch (error) {
      if (error.status === 404) return;
      console.warn('could not read who is on the other samples', error);
    }
    if (this.dataset?.id === datasetId) this.presenceTimer = setTimeout(() => this.pollPresence(), PRESENCE_POLL_MS);
  }

  // Statuses in the list follow saves, at most every few seconds (every flush of the room sends one).
  refreshSamplesSoon() {
    if (this.samplesTimer) return;
    this.samplesTimer = setTimeout(() => {
      this.samplesTimer = null;
      this.refreshSamples().catch((error) => console.warn('could not refresh the sample list', error));
    }, 3000);
  }

  step(delta) {
    const list = this.samples.samples;
    const index = list.findIndex((s) => s.id === this.sample?.id);
    const next = list[Math.min(list.length - 1, Math.max(0, index + delta))];
    if (next && next.id !== this.sample?.id) location.hash = routeHash('annotate', next.id);
  }

  async openSample(sample) {
    if (this.sample?.id === sample.id && this.room) return;
    this.room?.close();
    this.sample = sample;
    this.annotation = null;
    this.history.clear();
    this.updateHistory();
    this.samples.setCurrent(sample.id);
    this.saveState.textContent = 'loading…';
    const image = await loadImage(sample.image_url);
    this.historyPanel.setSample(sample, { image, colours: this.classes.map((c) => c.colour), canRestore: this.canPaint });
    this.canvas.readOnly = !this.canPaint;
    this.canvas.remoteCursors.clear();
    this.room = new AnnotationRoom(sample, this.classes.length, {
      onReady: (shared) => {
        this.canvas.setContent({ image, shared, colours: this.classes.map((c) => c.colour) });
        this.canvas.setUncertainty(null);
        this.setUncertaintyVisible(this.canvas.showUncertainty); // the switch stays as the user left it
        this.updateSaveState();
        this.loadUncertainty(sample.id, () => api.uncertaintyBytes(sample.id));
      },
      onChange: (runs) => {
        if (runs) this.canvas.refreshRuns(runs); else this.canvas.refreshOverlay();
        this.updateSaveState();
      },
      onPresence: (users) => {
        const names = [...new Set(users.map((u) => u.username))];
        this.presence.setUsers(names, this.me.username);
        this.samples.setOccupancy(sample.id, names.filter((n) => n !== this.me.username));
        for (const user of this.canvas.remoteCursors.keys()) {
          if (!names.includes(user)) this.canvas.setRemoteCursor(user, null);
        }
      },
      onCursor: ({ username, x, y }) => {
        if (username !== this.me.username) {
          this.canvas.setRemoteCursor(username, { x, y, name: username, colour: colourFor(username) });
        }
      },
      onSaved: () => { this.updateSaveState(); this.refreshSamplesSoon(); },
      // The stored annotation's version and status, from the room's events (its state on join, then each new
      // version with what made it): the status bar, the review panel and the history all show this one.
      onVersion: (annotation) => {
        const changed = annotation.version !== this.annotation?.version;
        this.annotation = annotation;
        this.updateSaveState();
        this.renderReview();
        if (changed) this.historyPanel.refresh(annotation.version);
      },
      onError: (text) => toast(text, 'error'),
      onStatus: (status) => { this.context.setConnection(status); this.updateSaveState(); },
    });
    this.renderReview();
  }

  cursorMoved(x, y) {
    const label = this.room?.shared?.displayed.labelAt(Math.floor(x), Math.floor(y));
    this.cursorInfo.textContent = label === null || label === undefined ? ''
      : `x ${Math.floor(x)}  y ${Math.floor(y)}  ·  ${this.classes[label]?.name ?? label}  ·  zoom ${Math.round(this.canvas.view.scale * 100)}%`;
    const now = performance.now();
    if (now - this.lastCursorSent >= CURSOR_INTERVAL_MS) {
      this.lastCursorSent = now;
      this.room?.sendCursor(Math.round(x * 10) / 10, Math.round(y * 10) / 10);
    }
  }

  updateSaveState() {
    const room = this.room;
    let text = 'no sample';
    let state = '';
    if (room && !room.socket.isOpen) { text = 'offline — your changes are kept and sent on reconnect'; state = 'error'; }
    else if (room?.unsaved) { text = 'saving…'; state = 'saving'; }
    else if (room?.shared) { text = `saved · version ${this.annotation?.version ?? 0}`; state = 'saved'; }
    this.saveState.textContent = text;
    this.saveState.className = `save-state ${state}`;
  }

  updateHistory() {
    this.toolbar?.setHistory(this.history.canUndo, this.history.canRedo);
  }

  applyMine(runs) {
    const shared = this.room?.shared;
    if (!shared || !runs?.length) return;
    const { opId } = shared.applyLocal(runs);
    this.canvas.refreshRuns(runs);
    this.room.send(opId, runs);
    this.updateSaveState();
  }

  undo() {
    if (!this.room?.shared || !this.canPaint) return;
    const runs = this.history.undo(this.room.shared.displayed.data);
    if (runs === null) { toast('Nothing of yours to undo', 'info', 1500); return; }
    this.applyMine(runs);
    this.updateHistory();
  }

  redo() {
    if (!this.room?.shared || !this.canPaint) return;
    const runs = this.history.redo(this.room.shared.displayed.data);
    if (runs === null) { toast('Nothing to redo', 'info', 1500); return; }
    this.applyMine(runs);
    this.updateHistory();
  }

  async save() {
    if (!this.room) return;
    try {
      const saved = await Promise.race([this.room.save(),
        new Promise((_, reject) => setTimeout(() => reject(new Error('the server did not confirm the save in 15 s')), 15000))]);
      toast(`Saved version ${saved.version}`, 'success', 1500);
    } catch (error) {
      showError(error, 'Save failed');
    }
  }

  async prelabel() {
    if (!this.sample || !this.canPaint) return;
    this.prelabelButton.disabled = true;
    try {
      if (this.room.unsaved) await this.room.save();
      const job = await api.prelabel(this.sample.id);
      this.jobState.textContent = `pre-label: ${describeJob(job)}`;
      const final = await watchJob(job.id, {
        onStatus: (status) => { this.jobState.textContent = `pre-label: ${describeJob(status)}`; },
        onProgress: (progress) => { this.jobState.textContent = `pre-label: ${Math.round(progress.progress * 100)}%`; },
      }).done;
      if (final.status !== 'succeeded') throw new Error(`pre-label ${describeJob(final)}`);
      this.history.clear(); // the room loads the pre-label: the service announced its version
      this.updateHistory();
      const shown = await this.loadUncertainty(this.sample.id, () => api.urlBytes(final.result.uncertainty_url),
        { show: true });
      toast(shown ? 'Pre-label ready: correct it where the heat-map is red' : 'Pre-label ready', 'success');
    } catch (error) {
      showError(error, 'Pre-label failed');
    } finally {
      this.prelabelButton.disabled = false;
    }
  }

  // The uncertainty map of the model's prediction for a sample (GET /samples/{id}/uncertainty.png, or the
  // pre-label job's result.uncertainty_url): a greyscale PNG at the sample's size, 0 = sure … 255 = most unsure.
  // On opening a sample the stored map is loaded and shown only if the overlay is switched on; a pre-label shows
  // its map at once. No map yet (404) leaves the overlay empty. Resolves true when a map was loaded.
  async loadUncertainty(sampleId, fetchBytes, { show } = {}) {
    let decoded;
    try {
      decoded = await decodeIndexPng(await fetchBytes());
    } catch (error) {
      if (error.status !== 404) console.warn(`no uncertainty map for sample ${sampleId}:`, error);
      return false;
    }
    const shared = this.room?.shared;
    // The user may have moved on to another sample while the map was on its way.
    if (this.sample?.id !== sampleId || !shared) return false;
    if (decoded.width !== shared.width || decoded.height !== shared.height) {
      console.warn(`the ${decoded.width}×${decoded.height} uncertainty map does not fit the mask`);
      return false;
    }
    this.canvas.setUncertainty(Float32Array.from(decoded.data, (v) => v / 255));
    this.setUncertaintyVisible(show ?? this.canvas.showUncertainty);
    return true;
  }

  toggleUncertainty() {
    if (!this.canvas.uncertaintyCanvas) {
      toast('No uncertainty map for this sample yet: run Pre-label first', 'info', 2500);
      return;
    }
    this.setUncertaintyVisible(!this.canvas.showUncertainty);
  }

  setUncertaintyVisible(visible) {
    this.canvas.showUncertainty = visible;
    this.uncertaintyButton.setAttribute('aria-pressed', String(visible && Boolean(this.canvas.uncertaintyCanvas)));
    this.canvas.dirty = true;
  }

  renderReview() {
    if (!this.sample || !this.annotation) { replaceChildren(this.reviewPanel); return; }
    const { version, status: stored, author } = this.annotation;
    const status = stored ?? statusOf(this.sample);
    const submit = button('Submit for review', { className: 'primary', title: 'Save and send to a reviewer',
      disabled: !this.canPaint || status === 'submitted', onclick: () => this.submit() });
    const accept = button('Accept', { title: 'Mark reviewed', onclick: () => this.review('reviewed') });
    const reject = button('Reject…', { className: 'danger', title: 'Send back with a comment',
      onclick: () => this.review('rejected') });
    replaceChildren(this.reviewPanel, h('h2', {}, 'Review'),
      h('p', {}, h('span', { class: `badge ${status}` }, status), ` version ${version}`, author ? ` · ${author}` : ''),
      h('div', { class: 'row' }, submit),
      this.canReview && status === 'submitted' ? h('div', { class: 'row' }, accept, reject) : null);
  }

  async submit() {
    try {
      if (this.room.unsaved) await this.room.save();
      await api.submitAnnotation(this.sample.id, this.annotation?.version ?? 0);
      toast('Submitted for review', 'success');
      await this.refreshSamples();
    } catch (error) {
      showError(error, 'Submit failed');
    }
  }

  // Unsaved strokes are stored first, so the restore is based on the version that holds them (and keeps them in
  // the history).
  async restore(version) {
    if (this.room.unsaved) await this.room.save();
    this.history.clear(); // my undo steps were painted on the mask the restore replaces
    this.updateHistory();
    await api.restoreAnnotation(this.sample.id, this.annotation?.version ?? 0, version);
  }

  async review(decision) {
    let note = '';
    if (decision === 'rejected') {
      const answer = await askForm('Reject this annotation', [
        { name: 'note', label: 'What should be fixed?', type: 'textarea', required: true }], 'Reject');
      if (!answer) return;
      note = answer.note;
    }
    try {
      await api.reviewAnnotation(this.sample.id, this.annotation?.version ?? 0, decision, note);
      toast(decision === 'reviewed' ? 'Accepted' : 'Rejected with your comment', 'success');
      await this.refreshSamples();
    } catch (error) {
      showError(error, 'Review failed');
    }
  }
}

