// A small modal form: resolves with the form's values on submit, null on cancel.

import { h } from './dom.js';

/**
 * @param {string} title
 * @param {Array<{name: string, label: string, type?: string, value?: string, required?: boolean}>} fields
 * @returns {Promise<Record<string, string> | null>}
 */
export function askForm(title, fields, submitLabel = 'OK') {
  return new Promise((resolve) => {
    const inputs = fields.map((field) => {
      const input = field.type === 'textarea'
        ? h('textarea', { name: field.name }, field.value ?? '')
        : h('input', { type: field.type ?? 'text', name: field.name, value: field.value ?? '',
          required: field.required ?? false });
      return [field, input];
    });
    const form = h('form', { class: 'form' },
      h('h2', {}, title),
      inputs.map(([field, input]) => h('label', {}, field.label, input)),
      h('div', { class: 'row' },
        h('button', { type: 'submit', class: 'primary' }, submitLabel),
        h('button', { type: 'button', class: 'cancel', onclick: () => finish(null) }, 'Cancel')));
    const backdrop = h('div', { class: 'modal-backdrop' }, h('div', { class: 'modal', role: 'dialog' }, form));
    const finish = (value) => { backdrop.remove(); resolve(value); };
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      finish(Object.fromEntries(inputs.map(([field, input]) => [field.name, input.value])));
    });
    form.addEventListener('keydown', (event) => { if (event.key === 'Escape') finish(null); });
    document.body.append(backdrop);
    inputs[0]?.[1].focus();
  });
}
