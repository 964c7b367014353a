// Picking the annotated samples a segmentation retraining learns from: one checkbox per sample (thumbnail, id,
// annotation status), quick picks, and a line that says what will be trained on and what measures the result.

import * as api from '../api.js';
import { h, button, replaceChildren } from '../ui/dom.js';
import { annotationStatus, defaultPick, describePlan, pickable, trainingPlan } from '../training.js';

const PAGE = 500;

export class SamplePicker {
  /** @param {{onChange?: () => void}} handlers */
  constructor(handlers = {}) {
    this.handlers = handlers;
    this.samples = [];
    this.picked = new Set();
    this.fraction = h('input', { type: 'number', min: '0', max: '50', step: '5', value: '20',
      title: 'When every submitted/reviewed sample is picked: the share of them held out to measure the IoU',
      'aria-label': 'Held-out share', onchange: () => this.renderSummary() });
    this.list = h('ul', { class: 'pick-list', 'aria-label': 'Training samples' });
    this.summary = h('p', { class: 'who pick-summary', 'aria-live': 'polite' });
    this.element = h('div', { class: 'sample-picker' },
      h('div', { class: 'row' },
        button('Submitted & reviewed', { title: 'Pick every submitted or reviewed annotation (the default)',
          onclick: () => this.setPicked(defaultPick(this.samples)) }),
        button('All annotated', { title: 'Pick drafts too', onclick: () => this.setPicked(pickable(this.samples).map((s) => s.id)) }),
        button('None', { title: 'Clear the selection', onclick: () => this.setPicked([]) }),
        h('label', { class: 'inline' }, 'held-out %', this.fraction)),
      this.list, this.summary);
  }

  /** Loads the dataset's annotated samples and picks the default ones. */
  async load(datasetId) {
    const samples = [];
    for (let offset = 0; ; offset += PAGE) {
      const page = await api.listSamples(datasetId, offset, PAGE);
      samples.push(...page);
      if (page.length < PAGE) break;
    }
    this.samples = samples.filter((s) => s.annotation_version > 0);
    this.setPicked(defaultPick(this.samples));
  }

  setPicked(ids) {
    this.picked = new Set(ids);
    this.render();
  }

  /** Picked sample ids, in id order. */
  pickedIds() {
    return [...this.picked].sort((a, b) => a - b);
  }

  holdoutFraction() {
    return Math.min(50, Math.max(0, Number(this.fraction.value) || 0)) / 100;
  }

  plan() {
    return trainingPlan(this.samples, this.pickedIds(), this.holdoutFraction());
  }

  render() {
    const usable = new Set(pickable(this.samples).map((s) => s.id));
    if (!this.samples.length) {
      replaceChildren(this.list, h('li', { class: 'empty' }, 'No annotated samples in this dataset yet.'));
    } else {
      replaceChildren(this.list, this.samples.map((sample) => {
        const status = annotationStatus(sample);
        const why = !sample.has_latent ? 'no latent yet: embed it first' : status === 'rejected' ? 'rejected in review' : '';
        const box = h('input', { type: 'checkbox', checked: this.picked.has(sample.id), disabled: !usable.has(sample.id),
          'aria-label': `Train on sample #${sample.id}`,
          onchange: () => { if (box.checked) this.picked.add(sample.id); else this.picked.delete(sample.id); this.renderSummary(); } });
        return h('li', { dataset: { sampleId: sample.id }, title: why || `Sample #${sample.id} (${status})` },
          h('label', {}, box, h('img', { src: sample.image_url, alt: '', loading: 'lazy' }),
            h('span', {}, `#${sample.id}`), h('span', { class: `badge ${status}` }, status)));
      }));
    }
    this.renderSummary();
  }

  renderSummary() {
    const plan = this.plan();
    this.summary.textContent = `${this.picked.size} picked — ${describePlan(plan)}`;
    this.summary.classList.toggle('error', Boolean(plan.error));
    this.handlers.onChange?.(plan);
  }
}
