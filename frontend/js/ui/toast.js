// Toasts: transient messages in a corner. Errors stay until dismissed so nothing is missed.

import { h } from './dom.js';

let container = null;

function region() {
  if (!container) {
    container = h('div', { class: 'toasts', role: 'status', 'aria-live': 'polite' });
    document.body.append(container);
  }
  return container;
}

/**
 * Shows a message. kind: 'info' | 'success' | 'error'. Errors stay until closed; others fade after `ms`.
 * @returns {HTMLElement} the toast (tests find it by its class)
 */
export function toast(message, kind = 'info', ms = 4000) {
  const close = h('button', { type: 'button', class: 'toast-close', title: 'Dismiss', 'aria-label': 'Dismiss' }, '×');
  const element = h('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status' },
    h('span', { class: 'toast-text' }, message), close);
  close.addEventListener('click', () => element.remove());
  region().append(element);
  if (kind !== 'error') setTimeout(() => element.remove(), ms);
  return element;
}

/** Shows an error (an ApiError's readable message, or any Error) as a toast. */
export function showError(error, context = '') {
  const text = error?.message ?? String(error);
  console.error(context, error);
  return toast(context ? `${context}: ${text}` : text, 'error');
}
