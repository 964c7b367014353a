// Boots the studio: who am I (or the login form), the workspace router, global shortcuts, and a last-resort error
// handler so a failure shows as a message, never as a blank page.

import * as api from './api.js';
import { h, replaceChildren } from './ui/dom.js';
import { bindKey, installKeyboard, setKeyScope } from './ui/keyboard.js';
import { closeHelp, toggleHelp } from './ui/help.js';
import { showError, toast } from './ui/toast.js';
import { parseRoute, routeHash, VIEWS } from './router.js';
import { AnnotateView } from './views/annotate.js';
import { EditView } from './views/edit.js';
import { LibraryView } from './views/library.js';
import { AdminView } from './views/admin.js';
import { AccountView } from './views/account.js';

const VIEW_CLASSES = { annotate: AnnotateView, edit: EditView, library: LibraryView, admin: AdminView,
  account: AccountView };
// The permission a workspace needs (none: every role); without it its tab is not shown (the server checks again on
// every call). The library applies vectors to images: reading it without running edits is of no use.
const VIEW_PERMISSION = { annotate: 'datasets.view_dataset', edit: 'editing.run_edit',
  library: 'editing.run_edit', admin: 'registry.manage_models', account: null };
// Who may use each workspace, in words, for a deep link to one the user's role cannot open.
const VIEW_ROLES = { annotate: 'every role', edit: 'artists and admins', library: 'artists and admins',
  admin: 'admins', account: 'every role' };
// Where an admin gives a user a role (the Django admin's user page, field "Groups").
const roleAdminPage = (user) => `/admin/auth/user/${user.id}/change/`;

window.addEventListener('error', (event) => {
  // Browsers report a ResizeObserver that needed two passes as an error; it is harmless and not the user's business.
  if (String(event.message).startsWith('ResizeObserver loop')) return;
  showError(event.error ?? event.message, 'Unexpected error');
});
window.addEventListener('unhandledrejection', (event) => showError(event.reason, 'Unexpected error'));

const app = document.getElementById('app');
const connection = document.getElementById('connection');

/** The badge in the top bar: 'open' | 'connecting' | 'closed' | 'offline'. */
function setConnection(status) {
  connection.hidden = false;
  connection.className = `connection ${status}`;
  connection.textContent = { open: 'live', connecting: 'connecting…', closed: 'reconnecting…' }[status] ?? status;
}

function loginForm() {
  return new Promise((resolve) => {
    const username = h('input', { type: 'text', name: 'username', autocomplete: 'username', required: true });
    const password = h('input', { type: 'password', name: 'password', autocomplete: 'current-password',
      required: true });
    const error = h('p', { class: 'login-error', role: 'alert' });
    const form = h('form', { class: 'form panel login' },
      h('h2', {}, 'Sign in to EditGAN Studio'),
      h('label', {}, 'Username', username), h('label', {}, 'Password', password), error,
      h('button', { type: 'submit', class: 'primary', title: 'Sign in' }, 'Sign in'));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      try {
        resolve(await api.login(username.value, password.value));
      } catch (failure) {
        error.textContent = failure.message;
      }
    });
    replaceChildren(app, form);
    username.focus();
  });
}

async function whoAmI() {
  try {
    return await api.me();
  } catch (error) {
    if (error.status === 401) return loginForm();
    throw error;
  }
}

async function signOut() {
  await api.logout().catch(() => {});
  location.reload();
}

/** A signed-in user without a studio role: who they are, who gives them a role and where, and Sign out. */
function noRolePage(user) {
  const page = roleAdminPage(user);
  return h('section', { class: 'panel no-role', 'aria-label': 'No studio role yet' },
    h('h2', {}, `Welcome, ${user.username}`),
    h('p', {}, 'You are signed in, but your account has no studio role yet, so there is nothing you can open here.'),
    h('p', {}, 'An admin of this studio gives you one: in Django admin → Users → ', h('strong', {}, user.username),
      ' → Groups, they add ', h('strong', {}, 'annotator'), ' (paint part masks), ', h('strong', {}, 'artist'),
      ' (edit images, the vector library) or ', h('strong', {}, 'admin'), '. Admins find your page at ',
      h('a', { href: page, target: '_blank', rel: 'noopener' }, page), ' (the Admin tab\'s "User roles" link leads there).'),
    h('p', {}, 'Once you have a role, reload this page.'),
    h('div', { class: 'row' }, h('button', { type: 'button', class: 'primary', onclick: () => location.reload() },
      'Reload'), h('button', { type: 'button', onclick: signOut }, 'Sign out')));
}

async function boot() {
  installKeyboard();
  const user = await whoAmI();
  const context = { me: user, setConnection };
  document.getElementById('user').textContent = `${user.username} · ${user.role ?? 'no role'}`;
  const logout = document.getElementById('logout');
  logout.hidden = false;
  logout.addEventListener('click', signOut);
  // Without a role (or a workspace the role may use) there is nothing to open, the account page included: its
  // token routes need a role too.
  const permitted = (view) => !VIEW_PERMISSION[view] || user.permissions.includes(VIEW_PERMISSION[view]);
  const usable = Boolean(user.role) && VIEWS.some((view) => VIEW_PERMISSION[view] && permitted(view));
  const allowed = usable ? VIEWS.filter(permitted) : [];
  for (const link of document.querySelectorAll('.tabs a')) link.hidden = !allowed.includes(link.dataset.view);
  if (!usable) {
    replaceChildren(app, noRolePage(user));
    return;
  }
  const notice = h('p', { class: 'route-notice', role: 'alert', hidden: true });
  replaceChildren(app, notice);
  const views = {};
  let current = null;

  async function show() {
    const fallback = user.role === 'artist' ? 'edit' : 'annotate';
    const route = parseRoute(location.hash, fallback);
    const refused = !allowed.includes(route.view);
    const view = refused ? (allowed.includes(fallback) ? fallback : allowed[0]) : route.view;
    notice.hidden = !refused;
    notice.textContent = refused ? `${capitalised(route.view)} is for ${VIEW_ROLES[route.view]}; your role `
      + `(${user.role}) cannot open it, so ${capitalised(view)} is shown instead. An admin can change your role.` : '';
    const id = refused ? null : route.id;
    if (!views[view]) {
      views[view] = new VIEW_CLASSES[view](context);
      views[view].element.hidden = true;
      app.append(views[view].element);
    }
    if (current && current !== views[view]) { current.element.hidden = true; current.deactivate?.(); }
    current = views[view];
    current.element.hidden = false;
    setKeyScope(view);
    for (const link of document.querySelectorAll('.tabs a')) link.classList.toggle('current', link.dataset.view === view);
    try {
      await current.activate(id);
    } catch (error) {
      showError(error, `Could not open ${view}`);
    }
  }

  window.addEventListener('hashchange', show);
  document.getElementById('help-button').addEventListener('click', toggleHelp);
  bindKey('?', 'Show or hide this help', toggleHelp);
  bindKey('escape', 'Close dialogs', closeHelp);
  VIEWS.forEach((view, k) => {
    if (allowed.includes(view)) bindKey(`alt+${k + 1}`, `Go to ${view}`, () => { location.hash = routeHash(view); });
  });
  await show();
}

function capitalised(word) {
  return word[0].toUpperCase() + word.slice(1);
}

boot().catch((error) => {
  replaceChildren(app, h('div', { class: 'empty' }, h('h2', {}, 'The studio could not start'),
    h('p', {}, error.message ?? String(error)), h('button', { type: 'button', onclick: () => location.reload() },
      'Try again')));
  toast(error.message ?? String(error), 'error');
});
