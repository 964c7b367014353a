// Every REST call of the studio goes through here: session cookie + CSRF header, JSON in and out, and failures
// turned into ApiError with a readable message (see errors.js). Route paths live only in this file.

import { ApiError } from './errors.js';

let csrfToken = null;

function cookie(name) {
  const match = document.cookie.split('; ').find((c) => c.startsWith(`${name}=`));
  return match ? decodeURIComponent(match.slice(name.length + 1)) : null;
}

async function ensureCsrf() {
  csrfToken = cookie('csrftoken') ?? csrfToken;
  if (!csrfToken) {
    const body = await request('GET', '/auth/csrf');
    csrfToken = body.csrftoken;
  }
  return csrfToken;
}

/**
 * One API call. `json` is sent as a JSON body, `form` (FormData) as multipart.
 * @returns {Promise<any>} the parsed JSON answer (null for 204)
 */
export async function request(method, path, { json, form, query, signal } = {}) {
  const headers = { Accept: 'application/json' };
  let body;
  if (json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(json);
  } else if (form) {
    body = form;
  }
  if (!['GET', 'HEAD'].includes(method)) headers['X-CSRFToken'] = await ensureCsrf();
  const url = new URL(`/api${path}`, location.origin);
  for (const [key, value] of Object.entries(query ?? {})) {
    if (value !== undefined && value !== null && value !== '') url.searchParams.set(key, value);
  }
  let response;
  try {
    response = await fetch(url, { method, headers, body, signal, credentials: 'same-origin' });
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    throw new ApiError(0, 'the network request failed — check your connection');
  }
  const text = await response.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = text;
  }
  if (!response.ok) throw new ApiError(response.status, parsed);
  return parsed;
}

/** Fetches raw bytes (mask PNGs). */
export async function requestBytes(path) {
  const response = await fetch(`/api${path}`, { credentials: 'same-origin' });
  if (!response.ok) {
    const text = await response.text();
    let parsed = text;
    try { parsed = JSON.parse(text); } catch { /* not JSON: keep the text */ }
    throw new ApiError(response.status, parsed);
  }
  return new Uint8Array(await response.arrayBuffer());
}

const get = (path, query) => request('GET', path, { query });
const post = (path, json) => request('POST', path, { json: json ?? {} });

// --- accounts ---
export const me = () => get('/me');
export const login = async (username, password) => {
  await ensureCsrf();
  return post('/auth/login', { username, password });
};
export const logout = () => post('/auth/logout');
/** Your API tokens, newest first: {id, name, prefix, created, last_used, expires, revoked, status}; never keys. */
export const listTokens = () => get('/tokens');
/** A new token; its `key` is in this answer only. */
export const createToken = (name) => post('/tokens', { name });
export const revokeToken = (id) => request('DELETE', `/tokens/${id}`);

// --- datasets, samples, annotations ---
export const getSchema = (id) => get(`/schemas/${id}`);
export const listDatasets = () => get('/datasets');
export const listSamples = (datasetId, offset = 0, limit = 500) =>
  get(`/datasets/${datasetId}/samples`, { offset, limit });
export const nextToLabel = (datasetId, limit = 20) => get(`/datasets/${datasetId}/next-to-label`, { limit });
export const generateSamples = (datasetId, { count, seed, truncation_psi }) =>
  post(`/datasets/${datasetId}/samples/generate`, { count, seed, truncation_psi });
export function uploadSample(datasetId, file) {
  const form = new FormData();
  form.append('file', file);
  return request('POST', `/datasets/${datasetId}/samples/upload`, { form });
}
export const getSample = (id) => get(`/samples/${id}`);
export const embedSample = (id) => post(`/samples/${id}/embed`);
export const tuneSample = (id) => post(`/samples/${id}/tune`);
export const getAnnotation = (sampleId) => get(`/samples/${sampleId}/annotation`);
export const annotationMaskBytes = (sampleId, version) =>
  requestBytes(`/samples/${sampleId}/annotation/mask.png${version ? `?version=${version}` : ''}`);
export const submitAnnotation = (sampleId, baseVersion) =>
  post(`/samples/${sampleId}/annotation/submit`, { base_version: baseVersion });
export const reviewAnnotation = (sampleId, baseVersion, decision, note) =>
  post(`/samples/${sampleId}/annotation/review`, { base_version: baseVersion, decision, note });
export const annotationRevisions = (sampleId) => get(`/samples/${sampleId}/annotation/revisions`);
/** Revision `version`'s mask becomes the next version (reason 'restore'); 409 when `baseVersion` is stale. */
export const restoreAnnotation = (sampleId, baseVersion, version) =>
  post(`/samples/${sampleId}/annotation/restore`, { base_version: baseVersion, version });
export const prelabel = (sampleId) => post(`/samples/${sampleId}/prelabel`);
/** Who is in each live annotation room of a dataset: {sample_id: [username, …]}, occupied rooms only. */
export const datasetPresence = (datasetId) => get(`/datasets/${datasetId}/presence`);

// --- models ---
export const listCheckpoints = (kind) => get('/checkpoints', { kind });
export const getCheckpoint = (id) => get(`/checkpoints/${id}`);
export const activateCheckpoint = (id) => post(`/checkpoints/${id}/activate`);
/** Import (a server file) and upload answer the queued import job; its result names the new checkpoint. */
export const importCheckpoint = ({ kind, name, server_path, generator_id }) =>
  post('/checkpoints/import', { kind, name, server_path, generator_id });
export function uploadCheckpoint({ file, kind, name, generator_id }) {
  const form = new FormData();
  form.append('file', file);
  form.append('kind', kind);
  form.append('name', name);
  if (generator_id) form.append('generator_id', generator_id);
  return request('POST', '/checkpoints/upload', { form });
}
/**
 * settings: {dataset_id, steps, name, activate, ensemble_size, hidden: [widths], pixels_per_step (null: the
 * worker's), early_stopping, sample_ids (default: the submitted and reviewed annotations), holdout_fraction}
 */
export const trainSegmentation = (settings) => post('/train/segmentation', settings);
/** settings: {generator_id, steps, max_minutes, batch_size, lpips_weight, real_dataset_id, name, activate} */
export const trainEncoder = (settings) => post('/train/encoder', settings);

// --- jobs ---
export const listJobs = (query) => get('/jobs', query);
export const getJob = (id) => get(`/jobs/${id}`);
export const cancelJob = (id) => post(`/jobs/${id}/cancel`);
export const retryJob = (id) => post(`/jobs/${id}/retry`);

// --- editing ---
/** mode 1: vectors [{vector_id, scale}], with_mask (false: the image alone, sooner), image_format ('png' or
 * 'jpeg', a slider's preview); mode 2: + steps; mode 3:
 * target_mask_png (base64), edited_classes, roi_png, steps, stop_follow */
export const startEdit = (body) => post('/edits', body);
export const getEdit = (id) => get(`/edits/${id}`);
export const listVectors = (query) => get('/vectors', query);
export const getVector = (id) => get(`/vectors/${id}`);
export const saveVector = ({ edit_id, name, description, tags }) =>
  post('/vectors', { edit_id, name, description, tags });
export const listCompositions = (generatorId) => get('/compositions', { generator_id: generatorId });
export const saveComposition = ({ name, generator_id, items }) => post('/compositions', { name, generator_id, items });

/**
 * The active segmentation branch's prediction for a sample (index PNG, like annotation masks); ApiError 404 (with
 * the reason) until a worker has stored one: when the sample is generated, embedded, pre-labelled or ranked.
 */
export const predictedMaskBytes = (sampleId) => requestBytes(`/samples/${sampleId}/segmentation.png`);
/** Where that prediction is unsure: greyscale PNG, 0 = the members agree … 255 = most unsure; 404 likewise. */
export const uncertaintyBytes = (sampleId) => requestBytes(`/samples/${sampleId}/uncertainty.png`);
/** A job that stores the active branch's prediction for a sample that has none (404 above); its result's
 * `prediction_url` serves it. */
export const segmentSample = (sampleId) => post(`/samples/${sampleId}/segment`);

/** Bytes of a media URL the API handed out (edit results). */
export async function urlBytes(url) {
  const response = await fetch(url, { credentials: 'same-origin' });
  if (!response.ok) throw new ApiError(response.status, await response.text());
  return new Uint8Array(await response.arrayBuffer());
}
