// Keyboard shortcuts: one registry so the help panel lists exactly what is bound. Shortcuts are ignored while the
// user types in a text field. Keys are written like 'ctrl+z', 'ctrl+shift+z', 'b', '1', 'space', '?'.

import { parseShortcut, eventMatches } from './shortcut-keys.js';

const bindings = []; // {keys, description, handler, scope, parsed}
let activeScope = null;

/**
 * Binds a shortcut. `scope` = the view it belongs to ('annotate', 'edit', …) or 'global'. `description` may be a
 * function: the help panel then asks it each time (text that depends on the open dataset's schema).
 * @returns {() => void} unbind
 */
export function bindKey(keys, description, handler, scope = 'global') {
  const binding = { keys, description, handler, scope, parsed: parseShortcut(keys) };
  bindings.push(binding);
  return () => bindings.splice(bindings.indexOf(binding), 1);
}

export function setKeyScope(scope) { activeScope = scope; }

/** Bindings grouped by scope for the help panel. */
export function listBindings() {
  const groups = new Map();
  for (const { keys, description: describe, scope } of bindings) {
    const description = typeof describe === 'function' ? describe() : describe;
    if (!description) continue; // bound, but summarised by another entry
    if (!groups.has(scope)) groups.set(scope, []);
    groups.get(scope).push({ keys, description });
  }
  return groups;
}

function isTyping(target) {
  if (!(target instanceof HTMLElement)) return false;
  if (target.isContentEditable) return true;
  if (target.tagName === 'TEXTAREA' || target.tagName === 'SELECT') return true;
  return target.tagName === 'INPUT' && !['range', 'checkbox', 'radio', 'button'].includes(target.type);
}

export function installKeyboard() {
  window.addEventListener('keydown', (event) => {
    if (isTyping(event.target)) return;
    for (const binding of bindings) {
      if ((binding.scope === 'global' || binding.scope === activeScope) && eventMatches(binding.parsed, event)) {
        event.preventDefault();
        binding.handler(event);
        return;
      }
    }
  });
}
