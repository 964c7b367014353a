// The painting toolbar: tools, brush size and shape, overlay opacity, undo/redo, and the view's own actions.

import { h, button } from '../ui/dom.js';

const TOOL_LABELS = {
  brush: ['Brush', 'b'], eraser: ['Eraser', 'e'], fill: ['Fill', 'f'], polygon: ['Polygon', 'p'],
  lasso: ['Lasso', 'l'], eyedropper: ['Pick class', 'i'],
};

export class Toolbar {
  /**
   * @param {{onTool, onBrush, onOpacity, onUndo, onRedo}} handlers
   * @param {HTMLElement[]} extra  buttons of the view (pre-label, save, …), shown after the tools
   */
  constructor(handlers, extra = []) {
    this.handlers = handlers;
    this.toolButtons = Object.entries(TOOL_LABELS).map(([tool, [label, key]]) =>
      button(label, { title: label, shortcut: key.toUpperCase(), onclick: () => this.setTool(tool) }));
    this.toolButtons.forEach((b, k) => { b.dataset.tool = Object.keys(TOOL_LABELS)[k]; });
    this.size = h('input', { type: 'range', min: '1', max: '64', value: '9', title: 'Brush size ([ and ])',
      'aria-label': 'Brush size', oninput: () => this.emitBrush() });
    this.sizeLabel = h('span', { class: 'size-label' }, '9 px');
    this.shape = h('select', { title: 'Brush shape', 'aria-label': 'Brush shape', onchange: () => this.emitBrush() },
      h('option', { value: 'round' }, 'Round'), h('option', { value: 'square' }, 'Square'));
    this.opacity = h('input', { type: 'range', min: '0', max: '100', value: '55', title: 'Overlay opacity',
      'aria-label': 'Overlay opacity', oninput: () => handlers.onOpacity(Number(this.opacity.value) / 100) });
    this.undoButton = button('Undo', { title: 'Undo my last change', shortcut: 'Ctrl+Z', onclick: handlers.onUndo });
    this.redoButton = button('Redo', { title: 'Redo', shortcut: 'Ctrl+Shift+Z', onclick: handlers.onRedo });
    this.element = h('div', { class: 'toolbar', role: 'toolbar', 'aria-label': 'Painting tools' },
      h('div', { class: 'group' }, this.toolButtons),
      h('div', { class: 'group' }, h('label', {}, 'Size'), this.size, this.sizeLabel, this.shape),
      h('div', { class: 'group' }, h('label', {}, 'Opacity'), this.opacity),
      h('div', { class: 'group' }, this.undoButton, this.redoButton),
      h('div', { class: 'group' }, extra));
    this.setTool('brush', false);
  }

  setTool(tool, emit = true) {
    for (const b of this.toolButtons) b.setAttribute('aria-pressed', String(b.dataset.tool === tool));
    if (emit) this.handlers.onTool(tool);
  }

  /** Changes the brush size by `delta` pixels (the [ and ] keys). */
  nudgeSize(delta) {
    this.size.value = String(Math.min(64, Math.max(1, Number(this.size.value) + delta)));
    this.emitBrush();
  }

  emitBrush() {
    this.sizeLabel.textContent = `${this.size.value} px`;
    this.handlers.onBrush({ size: Number(this.size.value), shape: this.shape.value });
  }

  setHistory(canUndo, canRedo) {
    this.undoButton.disabled = !canUndo;
    this.redoButton.disabled = !canRedo;
  }
}
