// Who is here: one chip per connected user with their cursor colour.

import { h, replaceChildren } from '../ui/dom.js';

const COLOURS = ['#ff6b6b', '#4dabf7', '#51cf66', '#fcc419', '#cc5de8', '#ff922b', '#20c997', '#f06595'];

/** A stable colour per user name. */
export function colourFor(name) {
  let hash = 0;
  for (const c of String(name)) hash = (hash * 31 + c.charCodeAt(0)) >>> 0;
  return COLOURS[hash % COLOURS.length];
}

export class Presence {
  constructor() {
    this.list = h('div', { class: 'presence', 'aria-label': 'People on this sample' });
    this.element = h('section', {}, h('h2', {}, 'Here now'), this.list);
  }

  /** @param {string[]} usernames */
  setUsers(usernames, me) {
    replaceChildren(this.list, usernames.map((name) => h('span', { class: 'person', title: name },
      h('span', { class: 'dot', style: { background: colourFor(name) } }), name === me ? `${name} (you)` : name)));
  }
}
