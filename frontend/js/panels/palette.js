// The class palette: colour, name, number-key hint, show/hide per class; click selects the painting class.

import { h, replaceChildren } from '../ui/dom.js';

export class Palette {
  /** @param {{onSelect: (label: number) => void, onVisibility: (hidden: Set<number>) => void}} handlers */
  constructor(handlers) {
    this.handlers = handlers;
    this.classes = [];
    this.current = 1;
    this.hidden = new Set();
    this.list = h('ul', { class: 'palette', 'aria-label': 'Classes' });
    this.element = h('section', {}, h('h2', {}, 'Classes'), this.list);
  }

  /** @param {Array<{name: string, colour: string}>} classes  index order, 0 = background */
  setClasses(classes) {
    this.classes = classes;
    this.hidden = new Set();
    this.current = Math.min(this.current, classes.length - 1);
    this.render();
  }

  select(label) {
    if (label < 0 || label >= this.classes.length) return;
    this.current = label;
    this.render();
    this.handlers.onSelect(label);
  }

  toggleHidden(label) {
    if (this.hidden.has(label)) this.hidden.delete(label); else this.hidden.add(label);
    this.render();
    this.handlers.onVisibility(new Set(this.hidden));
  }

  /** Hides every class except the current one, or shows all again. */
  soloCurrent() {
    const allOthersHidden = this.classes.every((_, k) => k === 0 || k === this.current || this.hidden.has(k));
    this.hidden = allOthersHidden ? new Set() : new Set(this.classes.map((_, k) => k).filter((k) => k !== this.current));
    this.render();
    this.handlers.onVisibility(new Set(this.hidden));
  }

  render() {
    replaceChildren(this.list, this.classes.map((cls, label) => {
      const eye = h('button', { type: 'button', class: 'eye', title: `${this.hidden.has(label) ? 'Show' : 'Hide'} ${cls.name}`,
        'aria-pressed': String(!this.hidden.has(label)) }, this.hidden.has(label) ? 'show' : 'hide');
      eye.addEventListener('click', (event) => { event.stopPropagation(); this.toggleHidden(label); });
      const item = h('li', {
        class: [label === this.current ? 'current' : '', this.hidden.has(label) ? 'hidden-class' : ''].join(' '),
        title: `Paint ${cls.name}`, dataset: { label },
      }, h('span', { class: 'swatch', style: { background: cls.colour } }), h('span', { class: 'name' }, cls.name),
      eye, h('span', { class: 'key' }, label === 0 ? 'E' : String(label)));
      item.addEventListener('click', () => this.select(label));
      return item;
    }));
  }
}
