// The label mask: one class index per pixel, row-major (flat index y * width + x).

import { applyRuns } from './runs.js';

export class LabelMask {
  /**
   * @param {number} width
   * @param {number} height
   * @param {Uint8Array} [data] width*height labels; a fresh all-background mask when left out
   */
  constructor(width, height, data) {
    if (!Number.isInteger(width) || !Number.isInteger(height) || width <= 0 || height <= 0) {
      throw new RangeError(`a mask needs a positive integer size, got ${width}x${height}`);
    }
    if (data && data.length !== width * height) {
      throw new RangeError(`mask data has ${data.length} labels, a ${width}x${height} mask needs ${width * height}`);
    }
    this.width = width;
    this.height = height;
    this.data = data ?? new Uint8Array(width * height);
  }

  get size() { return this.width * this.height; }

  contains(x, y) { return x >= 0 && y >= 0 && x < this.width && y < this.height; }

  /** Class at integer pixel (x, y); null outside the mask. */
  labelAt(x, y) {
    return this.contains(x, y) ? this.data[y * this.width + x] : null;
  }

  /** Applies an operation's runs, returning its inverse. */
  apply(runs) { return applyRuns(this.data, runs); }

  clone() { return new LabelMask(this.width, this.height, this.data.slice()); }

  /** Copies another mask of the same size into this one. */
  copyFrom(other) {
    if (other.width !== this.width || other.height !== this.height) {
      throw new RangeError(`cannot copy a ${other.width}x${other.height} mask into a ${this.width}x${this.height} one`);
    }
    this.data.set(other.data);
  }
}
