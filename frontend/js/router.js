// Hash routes: #/annotate, #/annotate/12, #/edit/34, #/library, #/admin, #/account. Pure parsing is exported for tests.

export const VIEWS = ['annotate', 'edit', 'library', 'admin', 'account'];

/** '#/annotate/12?x=1' → {view: 'annotate', id: 12}; unknown → the default view. */
export function parseRoute(hash, fallback = 'annotate') {
  const [view, id] = hash.replace(/^#\/?/, '').split('?')[0].split('/');
  return { view: VIEWS.includes(view) ? view : fallback, id: id && /^\d+$/.test(id) ? Number(id) : null };
}

export function routeHash(view, id = null) {
  return id === null || id === undefined ? `#/${view}` : `#/${view}/${id}`;
}
