// Tiny DOM helpers: build elements without innerHTML (no injection from server strings) and without inline handlers.

/**
 * h('button', {class: 'primary', title: 'Save', onclick: save}, 'Save') → HTMLButtonElement.
 * Attributes starting with "on" become event listeners; `dataset` and `style` objects are merged; null/false skip.
 */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') element.addEventListener(key.slice(2), value);
    else if (key === 'dataset') Object.assign(element.dataset, value);
    else if (key === 'style' && typeof value === 'object') Object.assign(element.style, value);
    else if (key in element && typeof value !== 'string') element[key] = value;
    else element.setAttribute(key, value === true ? '' : value);
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces all children of `element`. */
export function replaceChildren(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

/** A labelled button with a title (tooltip) and an optional keyboard hint. */
export function button(label, { title = label, onclick, className = '', shortcut = null, disabled = false } = {}) {
  return h('button', {
    type: 'button', class: className, title: shortcut ? `${title} (${shortcut})` : title, onclick, disabled,
  }, label);
}

/** Formats an ISO time as a short local date-time. */
export function formatTime(iso) {
  if (!iso) return '';
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

/** Resolves with the loaded HTMLImageElement of `url`; rejects with a readable error. */
export function loadImage(url) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error(`could not load the image ${url}`));
    image.src = url;
  });
}
