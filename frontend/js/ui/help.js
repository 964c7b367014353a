// The help panel: every bound shortcut, grouped by workspace, plus the mouse gestures.

import { h } from './dom.js';
import { listBindings } from './keyboard.js';

const MOUSE = [
  ['Wheel', 'Zoom around the cursor'],
  ['Space + drag, or middle/right drag', 'Pan'],
  ['Polygon: click vertices, double-click or Enter', 'Close and fill'],
  ['Esc', 'Cancel a polygon'],
];

let open = null;

export function toggleHelp() {
  if (open) { open.remove(); open = null; return; }
  const groups = [...listBindings()].map(([scope, items]) => h('section', {},
    h('h3', {}, scope),
    h('table', {}, items.map(({ keys, description }) => h('tr', {},
      h('td', {}, keys.split(' / ').map((k) => h('kbd', {}, k))), h('td', {}, description))))));
  const close = h('button', { type: 'button', title: 'Close (Esc)' }, 'Close');
  const dialog = h('div', { class: 'modal', role: 'dialog', 'aria-label': 'Keyboard shortcuts' },
    h('h2', {}, 'Keyboard shortcuts'), groups,
    h('h3', {}, 'mouse'),
    h('table', {}, MOUSE.map(([keys, what]) => h('tr', {}, h('td', {}, keys), h('td', {}, what)))),
    h('p', {}, close));
  open = h('div', { class: 'modal-backdrop help-panel' }, dialog);
  const dismiss = () => { open?.remove(); open = null; };
  close.addEventListener('click', dismiss);
  open.addEventListener('click', (event) => { if (event.target === open) dismiss(); });
  document.body.append(open);
}

export function closeHelp() {
  if (open) { open.remove(); open = null; }
}
