// Your account: who you are, and your API tokens for scripts — created (the key is shown once), listed with when
// each was last used and when it expires, and revoked. The server keeps only a hash of each key.

import * as api from '../api.js';
import { h, button, replaceChildren, formatTime } from '../ui/dom.js';
import { showError, toast } from '../ui/toast.js';

const STATUS_BADGE = { active: 'reviewed', expired: 'draft', revoked: 'rejected' };

export class AccountView {
  constructor(context) {
    this.context = context;
    this.tokens = h('div', { class: 'tokens', 'aria-label': 'API tokens' });
    this.tokenName = h('input', { type: 'text', maxlength: '100', required: true, placeholder: 'e.g. nightly export',
      title: 'What the token is for', 'aria-label': 'Token name' });
    this.newKey = h('div', { class: 'new-key', hidden: true });
    const form = h('form', { class: 'token-form' }, h('label', {}, 'New token', this.tokenName),
      h('button', { type: 'submit', class: 'primary', title: 'Create an API token for scripts' }, 'Create token'));
    form.addEventListener('submit', (event) => { event.preventDefault(); this.create(); });
    const { me } = context;
    this.element = h('div', { class: 'view account-view' }, h('section', { class: 'panel' },
      h('h2', {}, 'Your account'),
      h('p', {}, `Signed in as ${me.username} (${me.role ?? 'no role'}).`),
      h('h3', {}, 'API tokens'),
      h('p', { class: 'who' }, 'Scripts send a token as "Authorization: Bearer <key>". A token works until it ' +
        'expires or you revoke it; its key is shown once, when you create it.'),
      form, this.newKey, this.tokens));
  }

  async activate() {
    await this.load();
  }

  async load() {
    const tokens = await api.listTokens();
    replaceChildren(this.tokens, tokens.length ? h('table', { class: 'data' },
      h('tr', {}, ['Name', 'Key starts', 'Created', 'Last used', 'Expires', 'Status', ''].map((t) => h('th', {}, t))),
      tokens.map((token) => h('tr', { dataset: { tokenId: token.id } },
        h('td', {}, token.name), h('td', {}, h('code', {}, `${token.prefix}…`)),
        h('td', {}, formatTime(token.created)), h('td', {}, token.last_used ? formatTime(token.last_used) : 'never'),
        h('td', {}, formatTime(token.expires)),
        h('td', {}, h('span', { class: `badge ${STATUS_BADGE[token.status] ?? ''}`,
          title: token.revoked ? `revoked ${formatTime(token.revoked)}` : token.status }, token.status)),
        h('td', {}, token.status === 'active' ? button('Revoke', { className: 'danger',
          title: `Revoke "${token.name}": scripts using it are refused from now on`,
          onclick: () => this.revoke(token) }) : null))))
      : h('p', { class: 'empty' }, 'You have no API tokens.'));
  }

  async create() {
    try {
      const token = await api.createToken(this.tokenName.value.trim());
      this.tokenName.value = '';
      replaceChildren(this.newKey, h('p', {}, `The key of "${token.name}" — copy it now, it is not shown again:`),
        h('code', { class: 'key' }, token.key));
      this.newKey.hidden = false;
      await this.load();
    } catch (error) {
      showError(error, 'Could not create the token');
    }
  }

  async revoke(token) {
    try {
      await api.revokeToken(token.id);
      toast(`Token "${token.name}" revoked`, 'success');
      await this.load();
    } catch (error) {
      showError(error, 'Could not revoke the token');
    }
  }
}
