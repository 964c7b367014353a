// Training an image → W+ encoder for a generator: settings (steps, time limit, batch, LPIPS weight, a dataset's
// uploaded photos to mix in), the live loss curve, and the new encoder with its reconstruction quality next to the
// encoder that was active, with a button to activate it.

import * as api from '../api.js';
import { h, button, replaceChildren } from '../ui/dom.js';
import { showError, toast } from '../ui/toast.js';
import { LossChart } from '../chart/loss-chart.js';
import { followTrainingJob } from '../jobs.js';
import { encoderQualityRows, scalarMetrics } from '../metrics.js';

const RUN_KEYS = ['steps', 'minutes', 'stopped_by_time', 'batch_size', 'lpips_weight', 'real_images', 'eval_samples'];

export class EncoderTraining {
  /** @param {{onTrained?: () => void}} handlers called when a new encoder was registered or activated */
  constructor(handlers = {}) {
    this.handlers = handlers;
    this.generator = h('select', { title: 'Generator the encoder inverts', 'aria-label': 'Encoder generator' });
    this.steps = h('input', { type: 'number', min: '1', max: '1000000', value: '2000', title: 'Training steps',
      'aria-label': 'Encoder steps' });
    this.minutes = h('input', { type: 'number', min: '0', step: 'any', placeholder: 'no limit',
      title: 'Stop after this many minutes even if fewer steps ran (checked every 100 steps)', 'aria-label': 'Time limit (minutes)' });
    this.batch = h('input', { type: 'number', min: '1', max: '64', value: '4', title: 'Generator samples per step',
      'aria-label': 'Encoder batch size' });
    this.lpips = h('input', { type: 'number', min: '0', step: 'any', value: '10',
      title: 'Weight of the LPIPS loss; 0 trains faster, a little less sharp', 'aria-label': 'LPIPS weight' });
    this.photos = h('select', { title: "Mix in a dataset's uploaded photos (one batch per step)",
      'aria-label': 'Real photos from dataset' });
    this.name = h('input', { type: 'text', placeholder: 'name (optional)', title: 'Name of the new encoder',
      'aria-label': 'Encoder name' });
    this.activateWhenDone = h('input', { type: 'checkbox', title: 'Make it the active encoder when done',
      'aria-label': 'Activate the encoder when done' });
    this.startButton = button('Train encoder', { className: 'primary', title: 'Train a new encoder for the generator',
      onclick: () => this.train() });
    this.status = h('p', { class: 'train-status encoder-status' });
    this.progress = h('div', { class: 'progress' }, h('div', { style: { width: '0%' } }));
    this.chart = new LossChart('Encoder loss', 'The encoder loss curve appears when a run starts.');
    this.result = h('div', { class: 'encoder-result' });
    this.element = h('section', { class: 'panel encoder-panel' }, h('h2', {}, 'Train an encoder'),
      h('div', { class: 'form' },
        h('label', {}, 'Generator', this.generator),
        h('div', { class: 'row' }, h('label', {}, 'Steps', this.steps), h('label', {}, 'Time limit (min)', this.minutes),
          h('label', {}, 'Batch', this.batch), h('label', {}, 'LPIPS weight', this.lpips)),
        h('div', { class: 'row' }, h('label', {}, 'Real photos', this.photos), h('label', {}, 'Name', this.name)),
        h('div', { class: 'row' },
          h('label', { class: 'inline' }, this.activateWhenDone, 'activate when done'), this.startButton)),
      this.status, this.progress, this.chart.element, this.result);
  }

  /** Fills the generator and photo-dataset choices. */
  async load(datasets) {
    const generators = await api.listCheckpoints('generator');
    const previous = this.generator.value;
    replaceChildren(this.generator, generators.map((g) => h('option', { value: g.id }, `${g.name} #${g.id}`)));
    if (generators.some((g) => String(g.id) === previous)) this.generator.value = previous;
    replaceChildren(this.photos, h('option', { value: '' }, 'none (generator samples only)'),
      datasets.map((d) => h('option', { value: d.id }, d.name)));
  }

  settings() {
    const settings = { generator_id: Number(this.generator.value), steps: Number(this.steps.value),
      batch_size: Number(this.batch.value), lpips_weight: Number(this.lpips.value), name: this.name.value,
      activate: this.activateWhenDone.checked };
    if (this.minutes.value) settings.max_minutes = Number(this.minutes.value);
    if (this.photos.value) settings.real_dataset_id = Number(this.photos.value);
    return settings;
  }

  async train() {
    if (!this.generator.value) { toast('Import a generator first', 'info'); return; }
    const bar = this.progress.firstChild;
    this.startButton.disabled = true;
    this.chart.setAll({});
    bar.style.width = '0%';
    replaceChildren(this.result);
    try {
      const job = await api.trainEncoder(this.settings());
      this.status.textContent = `job #${job.id} queued`;
      const final = await followTrainingJob(job.id, { status: this.status, bar, chart: this.chart,
        what: 'encoder training' });
      this.status.textContent = `job #${job.id}: done`;
      this.show(await api.getCheckpoint(final.result.checkpoint_id));
      toast('Encoder training finished', 'success');
      this.handlers.onTrained?.();
    } catch (error) {
      showError(error, 'Encoder training failed');
    } finally {
      this.startButton.disabled = false;
    }
  }

  /** The new encoder: its quality next to the previously active encoder, the run's figures, and Activate. */
  show(checkpoint) {
    const metrics = checkpoint.metrics ?? {};
    const rows = encoderQualityRows(metrics);
    const run = Object.fromEntries(RUN_KEYS.filter((k) => k in metrics).map((k) => [k, metrics[k]]));
    const activate = checkpoint.active ? h('span', { class: 'badge reviewed' }, 'active') : button('Activate', {
      className: 'primary', title: `Make ${checkpoint.name} the active encoder (embedding starts from its guess)`,
      onclick: async () => {
        try {
          this.show(await api.activateCheckpoint(checkpoint.id));
          toast(`${checkpoint.name} is active`, 'success');
          this.handlers.onTrained?.();
        } catch (error) {
          showError(error, 'Activate failed');
        }
      } });
    replaceChildren(this.result, h('div', { class: 'result-card', dataset: { checkpointId: checkpoint.id } },
      h('div', { class: 'row' }, h('strong', {}, `${checkpoint.name} #${checkpoint.id}`), activate),
      rows.length ? h('table', { class: 'data encoder-quality', 'aria-label': 'Encoder quality' },
        h('tr', {}, h('th', {}, `On ${metrics.eval_samples ?? ''} held-out generator samples`), h('th', {}, 'new'),
          h('th', {}, metrics.baseline_checkpoint_id ? `#${metrics.baseline_checkpoint_id} (active before)` : 'active before')),
        rows.map((row) => h('tr', {}, h('td', {}, row.label),
          h('td', { class: row.better === null ? 'num' : `num ${row.better ? 'status-succeeded' : 'status-failed'}` },
            row.value.toFixed(3)),
          h('td', { class: 'num' }, row.baseline === null ? '—' : row.baseline.toFixed(3))))) : null,
      Number.isFinite(metrics.real_psnr) ? h('p', { class: 'who' },
        `On the mixed-in photos (seen in training): PSNR ${metrics.real_psnr.toFixed(2)} dB`) : null,
      h('p', { class: 'metrics-summary' }, scalarMetrics(run).join(' · '))));
  }
}
