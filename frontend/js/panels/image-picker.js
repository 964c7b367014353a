// Choosing the image a panel works on without leaving it: a dataset, its samples, or a photo uploaded, cropped and
// embedded into W+ here (the library applies vectors to the latent, so an upload must be embedded first).

import * as api from '../api.js';
import { h, button, replaceChildren } from '../ui/dom.js';
import { showError, toast } from '../ui/toast.js';
import { fileToUpload } from '../ui/crop-dialog.js';
import { describeJob, watchJob } from '../jobs.js';
import { SampleList } from './sample-list.js';

/**
 * Uploads the photo chosen in `fileInput` to `dataset` (cropped as the user chooses) and refreshes `samples` (a
 * SampleList); resolves with the new sample, or null when nothing was sent or the upload failed (the error is shown).
 */
export async function uploadChosenFile(fileInput, dataset, samples) {
  const file = fileInput.files[0];
  fileInput.value = '';
  if (!file || !dataset) return null;
  const toSend = await fileToUpload(file);
  if (!toSend) return null;
  try {
    const sample = await api.uploadSample(dataset.id, toSend);
    toast(`Uploaded as sample #${sample.id}`, 'success');
    samples.setSamples(await api.listSamples(dataset.id));
    return sample;
  } catch (error) {
    showError(error, 'Upload failed');
    return null;
  }
}

export class ImagePicker {
  /** @param {{onPick: (sample: object) => void}} handlers  called with a sample that has a latent */
  constructor(handlers) {
    this.handlers = handlers;
    this.datasets = null;
    this.dataset = null;
    this.datasetSelect = h('select', { title: 'Dataset', 'aria-label': 'Image dataset',
      onchange: () => this.openDataset(Number(this.datasetSelect.value)) });
    this.fileInput = h('input', { type: 'file', accept: 'image/png,image/jpeg,image/webp', hidden: true,
      'aria-label': 'Photo to apply vectors to', onchange: () => this.upload() });
    this.state = h('span', { class: 'who picker-state' });
    this.samples = new SampleList({ onOpen: (sample) => this.pick(sample), onOrderChange: () => {} });
    this.samples.order.hidden = true;
    this.element = h('section', { class: 'image-picker' },
      h('div', { class: 'row' }, this.datasetSelect,
        button('Upload photo…', { title: 'Upload a photo, crop it and embed it', onclick: () => this.fileInput.click() }),
        this.fileInput),
      this.state, this.samples.list);
  }

  async load(currentId = null) {
    if (!this.datasets) {
      this.datasets = await api.listDatasets();
      replaceChildren(this.datasetSelect, this.datasets.map((d) => h('option', { value: d.id }, d.name)));
    }
    if (!this.dataset && this.datasets.length) await this.openDataset(this.datasets[0].id);
    this.samples.setCurrent(currentId);
  }

  async openDataset(datasetId) {
    this.dataset = this.datasets.find((d) => d.id === datasetId);
    this.datasetSelect.value = String(datasetId);
    this.samples.setSamples(await api.listSamples(datasetId));
  }

  async pick(sample) {
    this.samples.setCurrent(sample.id);
    if (!sample.has_latent) {
      sample = await this.embed(sample);
      if (!sample) return;
    }
    this.handlers.onPick(sample);
  }

  async upload() {
    const sample = await uploadChosenFile(this.fileInput, this.dataset, this.samples);
    if (!sample) return;
    try {
      await this.pick(sample);
    } catch (error) {
      showError(error, 'Upload failed');
    }
  }

  /** Embeds an uploaded photo; resolves with the sample as it is then, or null when embedding failed. */
  async embed(sample) {
    try {
      const job = await api.embedSample(sample.id);
      const final = await watchJob(job.id, {
        onStatus: (s) => { this.state.textContent = `embedding #${sample.id}: ${describeJob(s)}`; },
        onProgress: (p) => { this.state.textContent = `embedding #${sample.id}: ${p.step}/${p.total}`; },
      }).done;
      if (final.status !== 'succeeded') throw new Error(`embedding ${describeJob(final)}`);
      this.state.textContent = '';
      return await api.getSample(sample.id);
    } catch (error) {
      this.state.textContent = '';
      showError(error, 'Embedding failed');
      return null;
    }
  }
}
