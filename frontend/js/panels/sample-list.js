// The sample list: thumbnail, status and who is on each sample now, in id order or "label next" order (most
// uncertain unlabelled samples first, from the active segmentation branch).

import { h, replaceChildren } from '../ui/dom.js';

export function statusOf(sample) {
  return sample.annotation_status ?? (sample.annotation_version > 0 ? 'draft' : 'unlabelled');
}

export class SampleList {
  /** @param {{onOpen: (sample: object) => void, onOrderChange: (order: string) => void}} handlers */
  constructor(handlers) {
    this.handlers = handlers;
    this.samples = [];
    this.currentId = null;
    this.occupancy = new Map(); // sample id → [usernames]
    this.order = h('select', { title: 'Order of the samples', 'aria-label': 'Sample order',
      onchange: () => handlers.onOrderChange(this.order.value) },
    h('option', { value: 'all' }, 'All samples'),
    h('option', { value: 'next' }, 'Label next (most uncertain)'));
    this.list = h('ul', { class: 'sample-list', 'aria-label': 'Samples' });
    this.element = h('section', {}, h('h2', {}, 'Samples'), this.order, this.list);
  }

  setSamples(samples) {
    this.samples = samples;
    this.render();
  }

  setCurrent(id) {
    this.currentId = id;
    this.render();
  }

  setOccupancy(sampleId, usernames) {
    this.occupancy.set(sampleId, usernames);
    this.render();
  }

  render() {
    if (!this.samples.length) {
      replaceChildren(this.list, h('li', { class: 'empty' }, 'No samples here yet.'));
      return;
    }
    replaceChildren(this.list, this.samples.map((sample) => {
      const status = statusOf(sample);
      const who = this.occupancy.get(sample.id) ?? [];
      const item = h('li', { class: sample.id === this.currentId ? 'current' : '', dataset: { sampleId: sample.id },
        title: `Open sample #${sample.id}`, tabindex: '0' },
      h('img', { src: sample.image_url, alt: '', loading: 'lazy' }),
      h('div', { class: 'meta' },
        h('span', {}, `#${sample.id}`, sample.seed !== null && sample.seed !== undefined ? ` · seed ${sample.seed}` : ''),
        h('span', {}, h('span', { class: `badge ${status}` }, status),
          sample.uncertainty !== null && sample.uncertainty !== undefined
            ? h('span', { class: 'who', title: 'model uncertainty' }, ` u=${sample.uncertainty.toFixed(3)}`) : null),
        who.length ? h('span', { class: 'who' }, `● ${who.join(', ')}`) : null));
      item.addEventListener('click', () => this.handlers.onOpen(sample));
      item.addEventListener('keydown', (event) => { if (event.key === 'Enter') this.handlers.onOpen(sample); });
      return item;
    }));
  }
}
