// Per-user undo/redo on a shared mask. Each entry is one of MY operations with its inverse; undo writes the inverse
// only where my op's labels are still there (someone else's later paint wins), redo the other way round. The
// produced runs are ordinary operations: the caller sends them like any stroke.

import { guardedRuns } from './runs.js';

export class OpHistory {
  constructor(limit = 200) {
    this.limit = limit;
    this.done = [];
    this.undone = [];
  }

  /** Records an op I applied (runs) and its inverse; a new op clears the redo stack. */
  push(runs, inverse) {
    if (runs.length === 0) return;
    this.done.push({ runs, inverse });
    if (this.done.length > this.limit) this.done.shift();
    this.undone.length = 0;
  }

  get canUndo() { return this.done.length > 0; }

  get canRedo() { return this.undone.length > 0; }

  /**
   * Runs undoing my last op against the current mask, or null when there is nothing to undo. The result may be []
   * when others have painted over all of it; the entry still moves to the redo stack.
   * @param {Uint8Array} data  the displayed mask
   */
  undo(data) {
    const entry = this.done.pop();
    if (!entry) return null;
    this.undone.push(entry);
    return guardedRuns(data, entry.inverse, entry.runs);
  }

  /** Runs redoing my last undone op against the current mask, or null. */
  redo(data) {
    const entry = this.undone.pop();
    if (!entry) return null;
    this.done.push(entry);
    return guardedRuns(data, entry.runs, entry.inverse);
  }

  clear() {
    this.done.length = 0;
    this.undone.length = 0;
  }
}
