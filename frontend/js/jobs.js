// Following a job live (ws/jobs/<id>/): `job.status` on join and on every change, `job.progress` with step, total
// and losses. A reconnect gets a fresh `job.status`, so a dropped socket loses nothing that matters.

import * as api from './api.js';
import { StudioSocket } from './socket.js';

export const FINISHED = ['succeeded', 'failed', 'cancelled'];
// While a job waits, its place in the queue changes when jobs ahead finish (events of other jobs): re-read it.
const QUEUE_POLL_MS = 2000;

/**
 * @param {number} jobId
 * @param {{onStatus?: (status: object) => void, onProgress?: (progress: object) => void}} handlers
 * @returns {{done: Promise<object>, cancel: () => void, close: () => void}} done resolves with the final status
 */
export function watchJob(jobId, handlers = {}) {
  let socket;
  let queueTimer = null;
  let latest = null;
  const pollQueue = () => {
    clearTimeout(queueTimer);
    queueTimer = setTimeout(async () => {
      try {
        const job = await api.getJob(jobId);
        if (latest?.status === 'queued' && job.status === 'queued') {
          handlers.onStatus?.({ ...latest, jobs_ahead: job.jobs_ahead });
        }
      } catch { /* the socket reports what matters */ }
      if (latest?.status === 'queued') pollQueue();
    }, QUEUE_POLL_MS);
  };
  const done = new Promise((resolve) => {
    socket = new StudioSocket(`/ws/jobs/${jobId}/`, {
      onMessage: (message) => {
        if (message.type === 'job.status') {
          latest = message;
          handlers.onStatus?.(message);
          if (message.status === 'queued') pollQueue();
          if (FINISHED.includes(message.status)) {
            clearTimeout(queueTimer);
            socket.close();
            resolve(message);
          }
        } else if (message.type === 'job.progress') {
          handlers.onProgress?.(message);
        }
      },
      onFatal: (reason) => resolve({ job: jobId, status: 'failed', error: reason }),
    });
  });
  return { done, cancel: () => socket.send({ type: 'cancel' }),
    close: () => { clearTimeout(queueTimer); socket.close(); } };
}

/**
 * Follows a training job in an admin panel: the status line, the progress bar and the live loss chart, then the
 * job's whole metric series (the socket may have missed steps). Throws `<what> <state>` unless it succeeded.
 * @param {number} jobId
 * @param {{status: HTMLElement, bar: HTMLElement, chart: {append: Function, setAll: Function}, what: string}} view
 * @returns {Promise<object>} the final job status
 */
export async function followTrainingJob(jobId, { status, bar, chart, what }) {
  const final = await watchJob(jobId, {
    onStatus: (s) => { status.textContent = `job #${jobId}: ${describeJob(s)}`; },
    onProgress: (p) => {
      bar.style.width = `${Math.round(p.progress * 100)}%`;
      chart.append(p.step, p.losses);
      status.textContent = `job #${jobId}: ${p.stage} ${p.step}/${p.total}`;
    },
  }).done;
  const detail = await api.getJob(jobId);
  if (Object.keys(detail.metrics ?? {}).length) chart.setAll(detail.metrics);
  if (final.status !== 'succeeded') throw new Error(`${what} ${describeJob(final)}`);
  bar.style.width = '100%';
  return final;
}

/** A readable line for a job's state: a queued job says how many jobs of its queue are ahead of it. */
export function describeJob(status) {
  const pct = Math.round((status.progress ?? 0) * 100);
  if (status.status === 'failed') return `failed: ${status.error || 'no reason given'}`;
  if (status.status === 'queued') {
    const ahead = status.jobs_ahead;
    if (!ahead) return 'queued: next for a worker';
    return `queued behind ${ahead} job${ahead === 1 ? '' : 's'}`;
  }
  if (status.status === 'running') return `${status.stage || 'running'} ${pct}%${status.message ? ` — ${status.message}` : ''}`;
  return status.status;
}

/**
 * Following an edit (ws/edits/<id>/): `edit.state` on join (its job's status goes to onStatus too), `edit.preview` {step, total, image, mask} as data URLs,
 * `edit.result`, and its job's `job.status` / `job.progress`.
 * @returns {{done: Promise<object>, cancel: () => void, close: () => void}} done resolves with the final job status
 */
export function watchEdit(sessionId, handlers = {}) {
  let socket;
  const done = new Promise((resolve) => {
    socket = new StudioSocket(`/ws/edits/${sessionId}/`, {
      onMessage: (message) => {
        if (message.type === 'edit.preview') handlers.onPreview?.(message);
        else if (message.type === 'job.progress') handlers.onProgress?.(message);
        else if (message.type === 'edit.result') handlers.onResult?.(message);
        else if (message.type === 'edit.state' && FINISHED.includes(message.job_status)) {
          socket.close();
          resolve({ status: message.job_status });
        } else if (message.type === 'edit.state' && message.job_status) {
          handlers.onStatus?.({ status: message.job_status });
        } else if (message.type === 'job.status') {
          handlers.onStatus?.(message);
          if (FINISHED.includes(message.status)) {
            socket.close();
            resolve(message);
          }
        }
      },
      onFatal: (reason) => resolve({ status: 'failed', error: reason }),
    });
  });
  return { done, cancel: () => socket.send({ type: 'cancel' }), close: () => socket.close() };
}

/**
 * The finished edit, shaped like `GET /edits/{id}`, from its `edit.result` message (URLs, metrics: what the worker
 * stored); the edit is fetched only when there is no message, i.e. the socket joined after it was sent.
 * @param {object} session the edit as `POST /edits` answered it
 * @param {object|null} message the `edit.result` message watchEdit's onResult got
 */
export function finishedEdit(session, message) {
  if (!message) return api.getEdit(session.id);
  const { image_url, mask_url, has_vector, edited_classes, metrics } = message;
  return { ...session, job_status: 'succeeded', result: { image_url, mask_url, has_vector, edited_classes, metrics } };
}

/** Resolves like `promise`, or with a failed status after `ms` (a job whose worker died never reports). */
export function orTimeout(promise, ms, what = 'the job') {
  return Promise.race([promise, new Promise((resolve) => setTimeout(
    () => resolve({ status: 'failed', error: `${what} gave no answer in ${Math.round(ms / 1000)} s` }), ms))]);
}
