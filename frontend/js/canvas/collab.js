// The shared mask as one client sees it: CONFIRMED = the server's mask after every op it has ordered (seq 1, 2, …);
// DISPLAYED = confirmed + my ops the server has not echoed yet (pending), in the order I made them. When the server
// echoes one of mine it moves from pending into confirmed; a remote op goes into confirmed under my pending ones, so
// my unconfirmed paint stays on top until the server says otherwise. Same replay in server order on every client →
// the same confirmed mask everywhere.

import { LabelMask } from './mask.js';
import { applyRuns } from './runs.js';

export class SharedMask {
  /**
   * @param {LabelMask} confirmed  the server snapshot
   * @param {number} seq  the seq of the last op in that snapshot
   */
  constructor(confirmed, seq = 0) {
    this.confirmed = confirmed;
    this.displayed = confirmed.clone();
    this.seq = seq;
    this.pending = []; // [{opId, runs}]
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
   * Takes an op the server has ordered. `mine` marks the echo of my op `opId`.
   * @returns {'applied' | 'stale' | 'gap'}  stale: already in the snapshot (seq ≤ mine); gap: ops were missed and the
   *   caller must resync from a snapshot
   */
  applyServer({ seq, runs, mine = false, opId = null }) {
    if (seq <= this.seq) return 'stale';
    if (seq !== this.seq + 1) return 'gap';
    applyRuns(this.confirmed.data, runs);
    this.seq = seq;
    if (mine) this.pending = this.pending.filter((op) => op.opId !== opId);
    this.rebuildDisplayed();
    return 'applied';
  }

  /** Replaces the confirmed state with a server snapshot (after a reconnect); pending ops stay on top. */
  resync(snapshot, seq) {
    this.confirmed.copyFrom(snapshot);
    this.seq = seq;
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
