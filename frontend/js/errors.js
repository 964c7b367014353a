// Turning server answers into sentences a person can act on. Pure, so it is unit-tested.

const STATUS_TEXT = {
  400: 'The server could not use that input',
  401: 'You are not logged in',
  403: 'You are not allowed to do that',
  404: 'Not found — it may have been deleted',
  409: 'Someone changed this meanwhile',
  413: 'That file is too large',
  415: 'That file type is not supported',
  422: 'Some fields are not valid',
  429: 'Too many requests — wait a moment',
  500: 'The server hit an error',
  502: 'The server is not reachable',
  503: 'The server is busy or restarting',
};

function describeField(item) {
  const where = Array.isArray(item.loc) ? item.loc.filter((p) => !['body', 'query', 'path', 'payload', 'form']
    .includes(p)).join('.') : '';
  const what = item.msg ?? item.message ?? JSON.stringify(item);
  return where ? `${where}: ${what}` : what;
}

/**
 * A readable message for a failed response. `body` is the parsed JSON (or text) the server sent: django-ninja gives
 * {"detail": "…"} for errors we raise and {"detail": [{loc, msg}, …]} for schema validation.
 */
export function errorMessage(status, body) {
  let detail = null;
  if (body && typeof body === 'object') {
    const d = body.detail ?? body.error ?? body.message;
    if (typeof d === 'string') detail = d;
    else if (Array.isArray(d)) detail = d.map(describeField).join('; ');
  } else if (typeof body === 'string' && body.trim() && !/^\s*</.test(body)) {
    detail = body.trim().slice(0, 300); // plain text, never an HTML error page
  }
  const base = STATUS_TEXT[status] ?? (status ? `Request failed (HTTP ${status})` : 'The server did not answer');
  return detail ? `${base}: ${detail}` : `${base}.`;
}

export class ApiError extends Error {
  constructor(status, body) {
    super(errorMessage(status, body));
    this.name = 'ApiError';
    this.status = status;
    this.body = body;
  }
}
