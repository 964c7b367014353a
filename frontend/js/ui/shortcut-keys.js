// Parsing and matching shortcut strings; pure (works on plain event-like objects) so it is unit-tested.

/** 'ctrl+shift+z' → {ctrl: true, shift: true, alt: false, key: 'z'}. 'mod' = Ctrl, or Cmd on a Mac. */
export function parseShortcut(keys) {
  const parts = keys.toLowerCase().split('+');
  const key = parts.pop();
  if (!key) throw new SyntaxError(`shortcut ${JSON.stringify(keys)} has no key`);
  const modifiers = new Set(parts);
  for (const m of modifiers) {
    if (!['ctrl', 'shift', 'alt', 'mod'].includes(m)) throw new SyntaxError(`unknown modifier ${m} in ${keys}`);
  }
  return { ctrl: modifiers.has('ctrl') || modifiers.has('mod'), shift: modifiers.has('shift'),
    alt: modifiers.has('alt'), key: key === 'space' ? ' ' : key };
}

/** Does a keydown event ({key, ctrlKey, metaKey, shiftKey, altKey}) match a parsed shortcut? */
export function eventMatches(parsed, event) {
  const ctrl = Boolean(event.ctrlKey || event.metaKey);
  if (ctrl !== parsed.ctrl || Boolean(event.altKey) !== parsed.alt) return false;
  const key = event.key.toLowerCase();
  // Shifted symbols ('?', '{') already carry the shift in the key itself; letters and digits do not.
  const shiftMatters = /^[a-z0-9 ]$|^arrow|^page/.test(key) || key.length > 1;
  if (shiftMatters && Boolean(event.shiftKey) !== parsed.shift) return false;
  return key === parsed.key;
}
