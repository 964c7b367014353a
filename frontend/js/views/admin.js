// Admin: model versions with metrics (import, activate), retraining the segmentation branch on picked annotated
// samples with a live loss curve and the held-out per-class IoU, training an encoder, the job list with
// cancel/retry, and a link to user roles in Django admin.

import * as api from '../api.js';
import { h, button, replaceChildren, formatTime } from '../ui/dom.js';
import { showError, toast } from '../ui/toast.js';
import { LossChart } from '../chart/loss-chart.js';
import { describeJob, followTrainingJob, watchJob } from '../jobs.js';
import { classIouRows, scalarMetrics } from '../metrics.js';
import { EncoderTraining } from '../panels/encoder-training.js';
import { IouTable } from '../panels/iou-table.js';
import { SamplePicker } from '../panels/sample-picker.js';

const JOB_REFRESH_MS = 3000;

export class AdminView {
  constructor(context) {
    this.context = context;
    this.models = h('div', { class: 'models' });
    this.kindFilter = h('select', { title: 'Kind', 'aria-label': 'Checkpoint kind', onchange: () => this.loadModels() },
      ['', 'generator', 'encoder', 'segmentation'].map((k) => h('option', { value: k }, k || 'All kinds')));
    this.importForm = this.buildImportForm();
    this.trainDataset = h('select', { title: 'Dataset to train on', 'aria-label': 'Training dataset',
      onchange: () => this.describeDataset() });
    this.picker = new SamplePicker({ onChange: (plan) => { this.trainButton.disabled = this.training || Boolean(plan.error); } });
    this.trainInfo = h('p', { class: 'who' });
    this.trainSteps = h('input', { type: 'number', min: '1', max: '200000', value: '300', title: 'Training steps',
      'aria-label': 'Training steps' });
    this.trainName = h('input', { type: 'text', placeholder: 'name (optional)', title: 'Name of the new version',
      'aria-label': 'Version name' });
    this.trainActivate = h('input', { type: 'checkbox', checked: true, title: 'Make it the active branch when done',
      'aria-label': 'Activate the branch when done' });
    this.trainEnsemble = h('input', { type: 'number', min: '1', max: '32', value: '10', title: 'MLP classifiers in the ensemble (the paper: 10)',
      'aria-label': 'Ensemble size' });
    this.trainHidden = h('input', { type: 'text', value: '256, 128, 32', title: 'Hidden widths of each MLP, comma separated',
      'aria-label': 'Hidden widths' });
    this.trainPixels = h('input', { type: 'number', min: '64', placeholder: 'auto',
      title: "Pixels sampled per step (empty: the worker's default, 16384 on a GPU, fewer on a CPU)",
      'aria-label': 'Pixels per step' });
    this.trainEarlyStop = h('input', { type: 'checkbox', checked: true, title: 'Stop when the loss stops improving' });
    this.trainButton = button('Start training', { className: 'primary', title: 'Retrain the segmentation branch',
      onclick: () => this.train() });
    this.trainStatus = h('p', { class: 'train-status' });
    this.trainProgress = h('div', { class: 'progress' }, h('div', { style: { width: '0%' } }));
    this.chart = new LossChart('Training loss');
    this.iouTable = new IouTable();
    this.encoder = new EncoderTraining({ onTrained: () => Promise.all([this.loadModels(), this.loadJobs()]) });
    this.jobs = h('div', { class: 'jobs' });
    this.element = h('div', { class: 'view admin-view' }, h('div', { class: 'admin' },
      h('div', { class: 'admin-column' },
        h('section', { class: 'panel' }, h('h2', {}, 'Model versions'), h('div', { class: 'row' }, this.kindFilter),
          this.models, h('h3', {}, 'Import a checkpoint'), this.importForm),
        this.encoder.element),
      h('section', { class: 'panel train-panel' }, h('h2', {}, 'Retrain the segmentation branch'),
        h('div', { class: 'form' },
          h('label', {}, 'Annotated samples of dataset', this.trainDataset), this.trainInfo, this.picker.element,
          h('div', { class: 'row' }, h('label', {}, 'Steps', this.trainSteps), h('label', {}, 'Name', this.trainName)),
          h('div', { class: 'row' }, h('label', {}, 'Ensemble', this.trainEnsemble), h('label', {}, 'Hidden widths', this.trainHidden),
            h('label', {}, 'Pixels/step', this.trainPixels)),
          h('div', { class: 'row' },
            h('label', { style: { flexDirection: 'row', gap: '6px' } }, this.trainActivate, 'activate when done'),
            h('label', { style: { flexDirection: 'row', gap: '6px' } }, this.trainEarlyStop, 'early stopping')),
          h('div', { class: 'row' }, this.trainButton)),
        this.trainStatus, this.trainProgress, this.chart.element, this.iouTable.element),
      h('section', { class: 'panel wide' }, h('h2', {}, 'Jobs'),
        h('div', { class: 'row' }, button('Refresh', { title: 'Reload the job list', onclick: () => this.loadJobs() }),
          h('a', { href: '/admin/auth/user/', target: '_blank', rel: 'noopener', title: 'Users and roles in Django admin' },
            'User roles (Django admin)')),
        this.jobs)));
  }

  buildImportForm() {
    const kind = h('select', { name: 'kind', 'aria-label': 'Kind', title: 'Kind' },
      h('option', { value: 'generator' }, 'generator'), h('option', { value: 'segmentation' }, 'segmentation'));
    const name = h('input', { type: 'text', name: 'name', placeholder: 'name', 'aria-label': 'Name', required: true });
    const path = h('input', { type: 'text', name: 'server_path', placeholder: 'server path, or choose a file',
      'aria-label': 'Server path' });
    const file = h('input', { type: 'file', name: 'file', accept: '.pkl,.pt,.safetensors', 'aria-label': 'Checkpoint file' });
    const generator = h('input', { type: 'number', name: 'generator_id', placeholder: 'generator id (segmentation)',
      'aria-label': 'Generator id' });
    const status = h('p', { class: 'import-status', role: 'status' });
    const form = h('form', { class: 'form' }, h('div', { class: 'row' }, kind, name), path, file, generator,
      h('button', { type: 'submit', title: 'Import the checkpoint' }, 'Import'), status);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const fields = { kind: kind.value, name: name.value, generator_id: generator.value ? Number(generator.value) : null };
      try {
        const job = file.files[0] ? await api.uploadCheckpoint({ ...fields, file: file.files[0] })
          : await api.importCheckpoint({ ...fields, server_path: path.value });
        form.reset();
        await this.followImport(job, fields.name, status);
      } catch (error) {
        showError(error, 'Import failed');
      }
    });
    return form;
  }

  // A worker converts and registers the file: the checkpoint appears when its job succeeds.
  async followImport(job, name, status) {
    const say = (s) => { status.textContent = `importing ${name}: ${describeJob(s)}`; };
    say(job);
    const final = await watchJob(job.id, { onStatus: say }).done;
    await Promise.all([this.loadModels(), this.loadJobs()]);
    if (final.status !== 'succeeded') throw new Error(`${name} ${describeJob(final)}`);
    status.textContent = '';
    toast(`Imported ${name}`, 'success');
  }

  async activate() {
    const datasets = await api.listDatasets();
    this.datasets = datasets;
    replaceChildren(this.trainDataset, datasets.map((d) => h('option', { value: d.id }, d.name)));
    this.describeDataset();
    await Promise.all([this.loadModels(), this.loadJobs(), this.encoder.load(datasets)]);
    clearInterval(this.timer);
    this.timer = setInterval(() => this.loadJobs().catch(() => {}), JOB_REFRESH_MS);
  }

  deactivate() {
    clearInterval(this.timer);
  }

  describeDataset() {
    const dataset = this.datasetById(this.trainDataset.value);
    this.trainInfo.textContent = dataset ? `${dataset.num_labelled} of ${dataset.num_samples} samples annotated` : '';
    if (dataset) this.picker.load(dataset.id).catch((error) => showError(error, 'Loading the samples failed'));
  }

  datasetById(id) {
    return this.datasets?.find((d) => String(d.id) === String(id));
  }

  /** Class names and colours of a label schema (cached: schemas do not change). */
  async schemaClasses(schemaId) {
    this.schemas ??= new Map();
    if (!schemaId) return [];
    if (!this.schemas.has(schemaId)) this.schemas.set(schemaId, (await api.getSchema(schemaId)).classes);
    return this.schemas.get(schemaId);
  }

  async loadModels() {
    const checkpoints = await api.listCheckpoints(this.kindFilter.value || undefined);
    replaceChildren(this.models, h('table', { class: 'data' },
      h('tr', {}, ['', 'Kind', 'Name', 'Metrics', 'Created', ''].map((t) => h('th', {}, t))),
      checkpoints.map((c) => h('tr', { dataset: { checkpointId: c.id } },
        h('td', {}, c.active ? h('span', { class: 'badge reviewed', title: 'active' }, 'active') : ''),
        h('td', {}, c.kind), h('td', {}, `${c.name} #${c.id}`),
        h('td', {}, scalarMetrics(c.metrics).join(' · ')),
        h('td', {}, formatTime(c.created)),
        h('td', {}, classIouRows(c.metrics) ? button('IoU', { title: `Per-class IoU of ${c.name}`,
          onclick: async () => this.iouTable.show(c.metrics, await this.schemaClasses(c.schema_id), `Per-class IoU of ${c.name} #${c.id}`) }) : '',
        c.active || c.kind === 'generator' ? '' : button('Activate', {
          title: `Make ${c.name} the active ${c.kind}`,
          onclick: async () => {
            try {
              const { ranking_job_ids: rankings = [] } = await api.activateCheckpoint(c.id);
              // A segmentation branch: its datasets' predictions and "label next" follow once these jobs finish.
              toast(rankings.length ? `${c.name} is active; ranking ${rankings.length} dataset${rankings.length > 1 ? 's' : ''} with it (jobs ${rankings.map((id) => `#${id}`).join(', ')})`
                : `${c.name} is active`, 'success');
              await this.loadModels();
              await this.loadJobs();
            } catch (error) { showError(error, 'Activate failed'); }
          } }))))));
  }

  async loadJobs() {
    const jobs = await api.listJobs({ limit: 30 });
    replaceChildren(this.jobs, h('table', { class: 'data' },
      h('tr', {}, ['#', 'Kind', 'Status', 'Progress', 'Created', ''].map((t) => h('th', {}, t))),
      jobs.map((job) => h('tr', { dataset: { jobId: job.id } },
        h('td', {}, job.id), h('td', {}, job.kind),
        h('td', { class: `status-${job.status}`, title: job.error || '' }, job.status, job.error ? ` — ${job.error.split('\n')[0]}` : ''),
        h('td', {}, `${Math.round(job.progress * 100)}% ${job.stage}`),
        h('td', {}, formatTime(job.created)),
        h('td', {},
          ['queued', 'running'].includes(job.status) ? button('Cancel', { className: 'danger', title: `Cancel job #${job.id}`,
            onclick: () => this.jobAction(() => api.cancelJob(job.id), 'Cancel') }) : null,
          ['failed', 'cancelled'].includes(job.status) ? button('Retry', { title: `Run job #${job.id} again`,
            onclick: () => this.jobAction(() => api.retryJob(job.id), 'Retry') }) : null)))));
  }

  async jobAction(action, what) {
    try {
      await action();
      await this.loadJobs();
    } catch (error) {
      showError(error, `${what} failed`);
    }
  }

  async train() {
    const datasetId = Number(this.trainDataset.value);
    if (!datasetId) { toast('Choose a dataset first', 'info'); return; }
    const bar = this.trainProgress.firstChild;
    this.training = true;
    this.trainButton.disabled = true;
    this.chart.setAll({});
    this.iouTable.clear();
    try {
      const hidden = this.trainHidden.value.split(',').map((w) => Number(w.trim())).filter((w) => w > 0);
      const job = await api.trainSegmentation({ dataset_id: datasetId, steps: Number(this.trainSteps.value),
        name: this.trainName.value, activate: this.trainActivate.checked,
        ensemble_size: Number(this.trainEnsemble.value), hidden,
        pixels_per_step: this.trainPixels.value ? Number(this.trainPixels.value) : null, // null: the worker's
        early_stopping: this.trainEarlyStop.checked, sample_ids: this.picker.pickedIds(),
        holdout_fraction: this.picker.holdoutFraction() });
      this.trainStatus.textContent = `job #${job.id} queued`;
      await this.loadJobs();
      const final = await followTrainingJob(job.id, { status: this.trainStatus, bar, chart: this.chart,
        what: 'training' });
      const checkpoint = await api.getCheckpoint(final.result?.checkpoint_id);
      const classes = await this.schemaClasses(checkpoint.schema_id ?? this.datasetById(datasetId)?.schema_id);
      this.iouTable.show(checkpoint.metrics ?? final.result?.metrics, classes, `Per-class IoU of ${checkpoint.name} #${checkpoint.id}`);
      toast('Training finished', 'success');
      await this.loadModels();
    } catch (error) {
      showError(error, 'Training failed');
    } finally {
      this.training = false;
      this.trainButton.disabled = Boolean(this.picker.plan().error);
      await this.loadJobs();
    }
  }
}
