// The shared mask as one client sees it: CONFIRMED = the server's mask after every op it has ordered (seq 1, 2, …);
// DISPLAYED = confirmed + my ops the server has not echoed yet (pending), in the order I made them. When the server
// echoes one of mine it moves from pending into confirmed; a remote op goes into confirmed under my pending ones, so
// my unconfirmed paint stays on top until the server says otherwise. Same replay in server order on every client →
// the same confirmed mask everywhere. Ops can reach a client out of order (two server processes numbered them, then
// both broadcast); a later one is held back until the ones before it arrive.

import { LabelMask } from './mask.js';
import { applyRuns } from './runs.js';

export class SharedMask {
  /**
   * @param {LabelMask} confirmed  the server snapshot
   * @param {number | null} seq  the seq of the last op in that snapshot; null = unknown, the next op sets it
   */
  constructor(confirmed, seq = null) {
    this.confirmed = confirmed;
    this.displayed = confirmed.clone();
    this.seq = seq;
    this.pending = []; // [{opId, runs}]
    this.held = new Map(); // seq → op that arrived before its predecessors
    this.nextOpId = 1;
  }

  get width() { return this.confirmed.width; }

  get height() { return this.confirmed.height; }

  /**
   * Applies one of my ops to the displayed mask and queues it until the server echoes it.
   * @returns {{opId: number, inverse: Array}} the id to send with it, and the inverse for my undo history
   */
  applyLocal(runs) {
    const opId = this.nextOpId++;
    const inverse = applyRuns(this.displayed.data, runs);
    this.pending.push({ opId, runs });
    return { opId, inverse };
  }

  /**
   * Takes an op the server has ordered. `mine` marks the echo that completes my op `opId`.
   * @returns {'applied' | 'stale' | 'held'}  stale: already in the snapshot; held: ops before it are missing (if
   *   they do not come, `hasGap` stays true and the caller resyncs from a snapshot)
   */
  applyServer(op) {
    if (this.seq !== null && op.seq <= this.seq) return 'stale';
    if (this.seq !== null && op.seq > this.seq + 1) {
      this.held.set(op.seq, op);
      return 'held';
    }
    this.confirmServer(op);
    while (this.held.has(this.seq + 1)) {
      const next = this.held.get(this.seq + 1);
      this.held.delete(next.seq);
      this.confirmServer(next);
    }
    this.rebuildDisplayed();
    return 'applied';
  }

  confirmServer({ seq, runs, mine = false, opId = null }) {
    applyRuns(this.confirmed.data, runs);
    this.seq = seq;
    if (mine) this.pending = this.pending.filter((op) => op.opId !== opId);
  }

  get hasGap() { return this.held.size > 0; }

  /** Replaces the confirmed state with a server snapshot (after a reconnect); pending ops stay on top. */
  resync(snapshot, seq) {
    this.confirmed.copyFrom(snapshot);
    this.seq = seq;
    this.held.clear();
    this.rebuildDisplayed();
  }

  /** Drops my pending op `opId` (the server refused it) and shows the mask without it. */
  reject(opId) {
    this.pending = this.pending.filter((op) => op.opId !== opId);
    this.rebuildDisplayed();
  }

  rebuildDisplayed() {
    this.displayed.copyFrom(this.confirmed);
    for (const op of this.pending) applyRuns(this.displayed.data, op.runs);
  }
}
