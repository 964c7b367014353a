// Library sliders on one open socket (ws/apply/<sample>/): each position goes as an `apply` message and comes back
// as a JPEG (`apply.image`), with no edit session or job per position. The server answers every position once:
// its picture, `apply.superseded` (a newer one came while it waited) or an `error` naming its seq. Positions still
// unanswered when the connection drops are sent again once it is back.

import { StudioSocket } from './socket.js';

/** A position the server dropped for a newer one: not an error to show. */
export class Superseded extends Error {}

export class LiveApply {
  /**
   * @param {number} sampleId
   * @param {(path: string, handlers: object) => {send: Function, close: Function, queue?: object[]}} [openSocket]
   */
  constructor(sampleId, openSocket = (path, handlers) => new StudioSocket(path, handlers)) {
    this.sampleId = sampleId;
    this.seq = 0;
    this.unanswered = new Map(); // seq → {message, resolve, reject}
    this.socket = openSocket(`/ws/apply/${sampleId}/`, {
      onMessage: (message) => this.answer(message),
      onOpen: (isReconnect) => { if (isReconnect) this.resend(); },
      onFatal: (reason) => {
        this.refusal = new Error(reason);
        this.failAll(this.refusal);
      },
    });
  }

  /**
   * Applies `vectors` ([{vector_id, scale}]) to the sample.
   * @returns {Promise<{seq: number, image: string, worker_ms: number}>} rejects with the server's reason, or
   *   with Superseded
   */
  apply(vectors) {
    if (this.refusal) return Promise.reject(this.refusal); // the server closed the socket for good
    const message = { type: 'apply', seq: ++this.seq, vectors };
    return new Promise((resolve, reject) => {
      this.unanswered.set(message.seq, { message, resolve, reject });
      this.socket.send(message);
    });
  }

  answer(message) {
    const waiting = this.unanswered.get(message.seq);
    if (!waiting) return;
    if (message.type === 'apply.image') waiting.resolve(message);
    else if (message.type === 'apply.superseded') waiting.reject(new Superseded(`position ${message.seq} superseded`));
    else if (message.type === 'error' && message.request === 'apply') waiting.reject(new Error(message.error));
    else return;
    this.unanswered.delete(message.seq);
  }

  /** After a reconnect: the server forgot the old connection's positions; those not queued by the socket go again. */
  resend() {
    const queued = new Set(this.socket.queue ?? []);
    for (const { message } of this.unanswered.values()) if (!queued.has(message)) this.socket.send(message);
  }

  failAll(error) {
    for (const { reject } of this.unanswered.values()) reject(error);
    this.unanswered.clear();
  }

  close() {
    this.failAll(new Superseded('closed'));
    this.socket.close();
  }
}
