// The live annotation room of one sample (ws/annotate/<id>/, webapp/realtime/consumers.py AnnotationConsumer),
// wrapped around a SharedMask. It loads the snapshot (mask PNG at the room's version + the ops queued after it),
// sends my operations, applies everybody's in server order, and after a reconnect resyncs and resends what the
// server had not confirmed, so nothing painted is lost.

import * as api from '../api.js';
import { StudioSocket } from '../socket.js';
import { decodeIndexPng } from '../png.js';
import { LabelMask } from '../canvas/mask.js';
import { SharedMask } from '../canvas/collab.js';
import { runsToServerOps, serverOpToRuns } from '../canvas/wire.js';

// A held-back op whose predecessors do not arrive within this time means the stream lost something: resync.
const GAP_TIMEOUT_MS = 1500;

/** 'tab7f3:12:3/5' → {session: 'tab7f3', opId: 12, part: 3, parts: 5}; null for other clients' ids. */
export function parseClientId(clientId) {
  const match = /^([a-z0-9]+):(\d+):(\d+)\/(\d+)$/.exec(clientId ?? '');
  return match ? { session: match[1], opId: Number(match[2]), part: Number(match[3]), parts: Number(match[4]) } : null;
}

/** What the room's `state` and `saved` messages say about the stored annotation: {version, status, author}. */
export function annotationState(message) {
  return { version: message.version, status: message.version ? message.status ?? null : null,
    author: message.author ?? null };
}

export class AnnotationRoom {
  /**
   * @param {object} sample  SampleOut
   * @param {number} numClasses
   * @param {{onReady: (shared: SharedMask) => void, onChange: (runs: Array) => void,
   *          onPresence: (users: object[]) => void, onCursor: (msg: object) => void,
   *          onSaved: (msg: object) => void, onError: (text: string) => void, onStatus: (status: string) => void,
   *          onVersion: (annotation: {version: number, status: ?string, author: ?string}) => void}} handlers
   */
  constructor(sample, numClasses, handlers) {
    this.sample = sample;
    this.numClasses = numClasses;
    this.handlers = handlers;
    this.session = Math.random().toString(36).slice(2, 8);
    this.shared = null;
    this.version = 0;
    this.lastMySeq = 0; // the highest seq the server gave one of my ops
    this.savedSeq = 0;
    this.gapTimer = null;
    this.socket = new StudioSocket(`/ws/annotate/${sample.id}/`, {
      onMessage: (message) => this.receive(message).catch((error) => handlers.onError(error.message)),
      onStatus: handlers.onStatus,
      onFatal: (reason) => handlers.onError(`live connection refused: ${reason}`),
    });
  }

  get unsaved() {
    return Boolean(this.shared && (this.shared.pending.length > 0 || this.lastMySeq > this.savedSeq));
  }

  async receive(message) {
    switch (message.type) {
      case 'state': return this.loadState(message);
      case 'op': return this.receiveOp(message);
      case 'presence': return this.handlers.onPresence(message.users);
      case 'cursor': return this.handlers.onCursor(message);
      case 'saved':
        // A new version that is not a flush of this room's ops and replaced the stored mask under us (a pre-label,
        // a restore, a REST save): load it again. Submit and review change only the status.
        if ((message.seq === null || message.seq === undefined) && message.version > this.version
            && message.mask_changed !== false) {
          this.reload();
          return undefined;
        }
        if (message.seq !== null && message.seq !== undefined) this.savedSeq = Math.max(this.savedSeq, message.seq);
        if (message.version >= this.version) {
          this.version = message.version;
          this.handlers.onVersion(annotationState(message));
        }
        return this.handlers.onSaved(message);
      case 'error':
        if (message.request === 'op' && this.shared) this.refused(parseClientId(message.client_id));
        return this.handlers.onError(message.error);
      default: return undefined;
    }
  }

  // On join and after every reconnect: the stored mask at `version` plus the queued ops is the confirmed state.
  async loadState(state) {
    const png = await api.annotationMaskBytes(this.sample.id, state.version || null);
    const decoded = await decodeIndexPng(png);
    if (decoded.width !== this.sample.width || decoded.height !== this.sample.height) {
      throw new Error(`the stored mask is ${decoded.width}×${decoded.height}, the sample ${this.sample.width}×${this.sample.height}`);
    }
    const snapshot = new LabelMask(decoded.width, decoded.height, decoded.data);
    const { width, height } = snapshot;
    let seq = null;
    const confirmedByServer = new Set();
    for (const entry of state.pending) {
      snapshot.apply(serverOpToRuns(entry.op, width, height));
      seq = entry.seq;
      const id = parseClientId(entry.client_id);
      if (id?.session === this.session && id.part === id.parts - 1) confirmedByServer.add(id.opId);
    }
    this.version = state.version;
    this.savedSeq = state.pending.length ? state.pending[0].seq - 1 : this.lastMySeq;
    this.handlers.onVersion(annotationState(state));
    if (!this.shared) {
      this.shared = new SharedMask(snapshot, seq);
      this.handlers.onReady(this.shared);
    } else {
      this.shared.pending = this.shared.pending.filter((op) => !confirmedByServer.has(op.opId));
      this.shared.resync(snapshot, seq);
      for (const op of this.shared.pending) this.transmit(op.opId, op.runs);
      this.handlers.onChange(null);
    }
    this.handlers.onPresence(state.presence);
  }

  receiveOp(message) {
    if (!this.shared) return;
    const runs = serverOpToRuns(message.op, this.shared.width, this.shared.height);
    const id = parseClientId(message.client_id);
    const mineComplete = id?.session === this.session && id.part === id.parts - 1;
    if (id?.session === this.session) this.lastMySeq = Math.max(this.lastMySeq, message.seq);
    const outcome = this.shared.applyServer({ seq: message.seq, runs, mine: mineComplete, opId: id?.opId });
    if (outcome === 'held' && !this.gapTimer) {
      this.gapTimer = setTimeout(() => this.resyncIfGap(), GAP_TIMEOUT_MS);
    }
    if (outcome === 'applied') this.handlers.onChange(runs, message);
  }

  // The server refused one of my ops (resending it would be refused the same way). It names the op by client id:
  // drop that op from my pending ones (parts of it the server took are in the confirmed mask, as on the server).
  // Without a usable id: drop them all and load the server's state again.
  refused(id) {
    if (id?.session === this.session) {
      this.shared.reject(id.opId);
      this.handlers.onChange(null);
      return;
    }
    for (const op of [...this.shared.pending]) this.shared.reject(op.opId);
    this.handlers.onChange(null);
    this.reload();
  }

  resyncIfGap() {
    this.gapTimer = null;
    if (this.shared?.hasGap) this.reload();
  }

  /** Sends one of my operations (already applied locally with shared.applyLocal). */
  send(opId, runs) {
    this.transmit(opId, runs);
  }

  transmit(opId, runs) {
    if (!this.socket.isOpen) return; // resent from shared.pending after the reconnect's state message
    const ops = runsToServerOps(runs);
    ops.forEach((op, part) => {
      this.socket.sendIfOpen({ type: 'op', op, client_id: `${this.session}:${opId}:${part}/${ops.length}` });
    });
  }

  sendCursor(x, y) {
    this.socket.sendIfOpen({ type: 'cursor', x, y });
  }

  /**
   * Asks the server to store the queued ops now; resolves with the answer: the `saved` message of the revision the
   * save stored (reason 'save'), or, when nothing was waiting, the server's reply without a reason. An autosave or
   * another change that lands meanwhile is not the answer.
   */
  save() {
    return new Promise((resolve) => {
      const previous = this.handlers.onSaved;
      this.handlers.onSaved = (message) => {
        previous(message);
        if (message.reason !== undefined && message.reason !== 'save') return;
        this.handlers.onSaved = previous;
        resolve(message);
      };
      this.socket.send({ type: 'save' });
    });
  }

  /** Drops the live state and loads it again (after a pre-label or a review changed the stored mask). */
  reload() {
    this.socket.ws?.close(); // the socket reconnects by itself and the server sends a fresh state
  }

  close() {
    clearTimeout(this.gapTimer);
    this.socket.close();
  }
}
