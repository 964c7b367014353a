// The painting canvas: the image, the mask overlay, the uncertainty heat-map, remote cursors, and the tools. All
// pixel work is done by the pure modules in ../canvas/; this panel turns pointer and wheel events into their calls
// and draws the result. Finished operations go to `onOperation({runs, inverse, source})`, where `source` says what
// made them (brush points, polygon vertices, …) so the owner can send them to the server in its vocabulary.

import { h } from '../ui/dom.js';
import { sweepBrush, snapToBrushCentre } from '../canvas/brush.js';
import { floodRuns, pickLabel, polygonRuns } from '../canvas/fill.js';
import { compositeDiff } from '../canvas/diff.js';
import { compositeOverlay, compositeUncertainty, overlayLookup } from '../canvas/overlay.js';
import { coverageToRuns, mergeDisjointRuns, runsRowSpan } from '../canvas/runs.js';
import { fitView, panBy, screenToMask, maskToScreen, wheelZoomFactor, zoomAt } from '../canvas/view.js';

export const TOOLS = ['brush', 'eraser', 'fill', 'polygon', 'lasso', 'eyedropper'];

// A stroke is sent in chunks this often while it is drawn, so collaborators see it grow.
const STROKE_CHUNK_MS = 120;

export class CanvasView {
  /**
   * @param {{onOperation: (op: object) => void, onPick?: (label: number) => void,
   *          onCursor?: (x: number, y: number) => void}} handlers
   */
  constructor(handlers) {
    this.handlers = handlers;
    this.canvas = h('canvas', { class: 'paint-canvas', tabindex: '0', 'aria-label': 'Image and mask canvas' });
    this.element = h('div', { class: 'canvas-view' }, this.canvas);
    this.ctx = this.canvas.getContext('2d');
    this.shared = null; // SharedMask
    this.image = null;
    this.colours = [];
    this.hidden = new Set();
    this.opacity = 0.55;
    this.tool = 'brush';
    this.label = 1;
    this.brush = { size: 9, shape: 'round' };
    this.readOnly = false;
    this.showUncertainty = false;
    this.view = { scale: 1, offsetX: 0, offsetY: 0 };
    this.pointer = null; // last pointer position in mask coordinates
    this.remoteCursors = new Map(); // user → {x, y, name, colour, at}
    this.spaceHeld = false;
    this.gesture = null;
    this.polygon = []; // vertices of a polygon being placed
    this.dirty = true;
    this.bindEvents();
    new ResizeObserver(() => this.resize()).observe(this.element);
    const loop = () => {
      if (this.dirty) this.draw();
      this.frame = requestAnimationFrame(loop);
    };
    this.frame = requestAnimationFrame(loop);
  }

  /** Shows an image and its shared mask; `colours` = '#rrggbb' per class. */
  setContent({ image, shared, colours }) {
    this.image = image;
    this.shared = shared;
    this.colours = colours;
    this.overlayCanvas = h('canvas', { width: shared.width, height: shared.height });
    this.overlayCtx = this.overlayCanvas.getContext('2d');
    this.overlayPixels = this.overlayCtx.createImageData(shared.width, shared.height);
    this.uncertaintyCanvas = null;
    this.diffCanvas = null;
    this.polygon = [];
    this.fit();
    this.refreshOverlay();
  }

  setUncertainty(values) {
    if (!values) { this.uncertaintyCanvas = null; this.dirty = true; return; }
    const { width, height } = this.shared;
    const canvas = h('canvas', { width, height });
    const ctx = canvas.getContext('2d');
    const pixels = ctx.createImageData(width, height);
    compositeUncertainty(pixels.data, values);
    ctx.putImageData(pixels, 0, 0);
    this.uncertaintyCanvas = canvas;
    this.dirty = true;
  }

  /** Marks pixels (`changed`: 1 per differing pixel, or null for none) above the mask: a revision's differences. */
  setDiff(changed) {
    if (!changed || !this.shared) { this.diffCanvas = null; this.dirty = true; return; }
    const { width, height } = this.shared;
    const canvas = h('canvas', { width, height });
    const ctx = canvas.getContext('2d');
    const pixels = ctx.createImageData(width, height);
    compositeDiff(pixels.data, changed);
    ctx.putImageData(pixels, 0, 0);
    this.diffCanvas = canvas;
    this.dirty = true;
  }

  /** Recomposites overlay rows y0..y1 (all by default), e.g. after an operation or a visibility change. */
  refreshOverlay(y0 = 0, y1 = this.shared ? this.shared.height - 1 : 0) {
    if (!this.shared) return;
    const lookup = overlayLookup(this.colours, this.hidden, this.opacity);
    compositeOverlay(this.overlayPixels.data, this.shared.displayed.data, this.shared.width, lookup, y0, y1,
      this.gesture?.coverage ? { coverage: this.gesture.coverage, label: this.gesture.label } : null);
    this.overlayCtx.putImageData(this.overlayPixels, 0, 0, 0, y0, this.shared.width, y1 - y0 + 1);
    this.dirty = true;
  }

  /** Recomposites after runs changed the displayed mask. */
  refreshRuns(runs) {
    const span = runsRowSpan(runs, this.shared.width);
    if (span) this.refreshOverlay(span.y0, span.y1);
  }

  setTool(tool) {
    if (!TOOLS.includes(tool)) throw new RangeError(`unknown tool ${tool}`);
    this.tool = tool;
    this.polygon = [];
    this.dirty = true;
  }

  fit() {
    if (!this.shared) return;
    const { clientWidth, clientHeight } = this.element;
    this.view = fitView(this.shared.width, this.shared.height, clientWidth || 600, clientHeight || 600);
    this.dirty = true;
  }

  resize() {
    const ratio = window.devicePixelRatio || 1;
    const { clientWidth, clientHeight } = this.element;
    this.canvas.width = Math.max(1, Math.round(clientWidth * ratio));
    this.canvas.height = Math.max(1, Math.round(clientHeight * ratio));
    this.canvas.style.width = `${clientWidth}px`;
    this.canvas.style.height = `${clientHeight}px`;
    if (!this.fitted && this.shared && clientWidth > 0) { this.fit(); this.fitted = true; }
    this.dirty = true;
  }

  setRemoteCursor(user, cursor) {
    if (cursor) this.remoteCursors.set(user, { ...cursor, at: Date.now() });
    else this.remoteCursors.delete(user);
    this.dirty = true;
  }

  // --- events ---------------------------------------------------------------------------------------------------

  bindEvents() {
    const canvas = this.canvas;
    canvas.addEventListener('pointerdown', (event) => this.pointerDown(event));
    canvas.addEventListener('pointermove', (event) => this.pointerMove(event));
    canvas.addEventListener('pointerup', (event) => this.pointerUp(event));
    canvas.addEventListener('pointercancel', () => this.cancelGesture());
    canvas.addEventListener('pointerleave', () => { this.pointer = null; this.dirty = true; });
    canvas.addEventListener('dblclick', () => this.closePolygon());
    canvas.addEventListener('contextmenu', (event) => event.preventDefault());
    canvas.addEventListener('wheel', (event) => {
      event.preventDefault();
      const [sx, sy] = this.screenPoint(event);
      this.view = zoomAt(this.view, wheelZoomFactor(event.deltaY), sx, sy);
      this.dirty = true;
    }, { passive: false });
    window.addEventListener('keydown', (event) => {
      if (event.key === ' ' && document.activeElement === canvas) { this.spaceHeld = true; event.preventDefault(); }
      if (event.key === 'Escape') { this.polygon = []; this.cancelGesture(); }
      if (event.key === 'Enter' && this.polygon.length) this.closePolygon();
    });
    window.addEventListener('keyup', (event) => { if (event.key === ' ') this.spaceHeld = false; });
  }

  screenPoint(event) {
    const rect = this.canvas.getBoundingClientRect();
    return [event.clientX - rect.left, event.clientY - rect.top];
  }

  maskPoint(event) {
    return screenToMask(this.view, ...this.screenPoint(event));
  }

  pointerDown(event) {
    if (!this.shared) return;
    this.canvas.focus();
    this.canvas.setPointerCapture(event.pointerId);
    const [x, y] = this.maskPoint(event);
    if (this.spaceHeld || event.button === 1 || event.button === 2) {
      this.gesture = { kind: 'pan', last: this.screenPoint(event) };
      return;
    }
    if (event.button !== 0) return;
    if (this.tool === 'eyedropper') {
      const label = pickLabel(this.shared.displayed, x, y);
      if (label !== null) this.handlers.onPick?.(label);
      return;
    }
    if (this.readOnly) return;
    if (this.tool === 'fill') {
      const runs = floodRuns(this.shared.displayed, Math.floor(x), Math.floor(y), this.label);
      this.commit(runs, { kind: 'fill', label: this.label, point: [x, y] });
      return;
    }
    if (this.tool === 'polygon') {
      this.polygon.push([x, y]);
      this.dirty = true;
      return;
    }
    if (this.tool === 'lasso') {
      this.gesture = { kind: 'lasso', points: [[x, y]] };
      return;
    }
    const label = this.tool === 'eraser' ? 0 : this.label;
    const { width, height } = this.shared;
    this.gesture = {
      kind: 'stroke', label, points: [[x, y]], sentPoints: 0, chunks: [], inverses: [],
      coverage: new Uint8Array(width * height), sentCoverage: new Uint8Array(width * height), lastSent: Date.now(),
    };
    sweepBrush(this.gesture.coverage, width, height, [[x, y]], this.brush);
    this.refreshPoints([[x, y]]);
  }

  pointerMove(event) {
    if (!this.shared) return;
    const [x, y] = this.maskPoint(event);
    this.pointer = [x, y];
    this.handlers.onCursor?.(x, y);
    this.dirty = true;
    const gesture = this.gesture;
    if (!gesture) return;
    if (gesture.kind === 'pan') {
      const [sx, sy] = this.screenPoint(event);
      this.view = panBy(this.view, sx - gesture.last[0], sy - gesture.last[1]);
      gesture.last = [sx, sy];
    } else if (gesture.kind === 'lasso') {
      gesture.points.push([x, y]);
    } else if (gesture.kind === 'stroke') {
      // Coalesced events keep fast strokes smooth; sweepBrush fills between them anyway.
      const events = event.getCoalescedEvents?.() ?? [event];
      const fresh = events.map((e) => this.maskPoint(e));
      const previous = gesture.points[gesture.points.length - 1];
      gesture.points.push(...fresh);
      sweepBrush(gesture.coverage, this.shared.width, this.shared.height, [previous, ...fresh], this.brush);
      this.refreshPoints([previous, ...fresh]);
      if (Date.now() - gesture.lastSent >= STROKE_CHUNK_MS) this.flushStroke(false);
    }
  }

  pointerUp() {
    const gesture = this.gesture;
    if (!gesture) return;
    if (gesture.kind === 'stroke') this.flushStroke(true);
    else if (gesture.kind === 'lasso') {
      this.gesture = null;
      this.commit(polygonRuns(this.shared.width, this.shared.height, gesture.points, this.label),
        { kind: 'polygon', label: this.label, points: gesture.points });
    }
    this.gesture = null;
    this.dirty = true;
  }

  cancelGesture() {
    if (this.gesture?.kind === 'stroke') this.flushStroke(true);
    this.gesture = null;
    this.dirty = true;
  }

  // Sends the part of the stroke not sent yet as one operation (its new pixels only, so chunks are disjoint).
  // `final` also records the whole stroke as one undo step.
  flushStroke(final) {
    const gesture = this.gesture;
    const fresh = gesture.coverage.map((covered, i) => (covered && !gesture.sentCoverage[i] ? 1 : 0));
    const runs = coverageToRuns(fresh, gesture.label);
    gesture.sentCoverage.set(gesture.coverage);
    // The chunk's points overlap the previous chunk by one so the polyline stays connected on the server too.
    const points = gesture.points.slice(Math.max(0, gesture.sentPoints - 1));
    gesture.sentPoints = gesture.points.length;
    gesture.lastSent = Date.now();
    if (runs.length) {
      const op = this.apply(runs, { kind: 'stroke', label: gesture.label, points, brush: { ...this.brush } });
      gesture.chunks.push(runs);
      gesture.inverses.push(op.inverse);
    }
    if (final) {
      this.handlers.onStrokeDone?.(mergeDisjointRuns(...gesture.chunks), mergeDisjointRuns(...gesture.inverses));
      this.gesture = null;
      this.refreshOverlay();
    }
  }

  closePolygon() {
    if (this.tool !== 'polygon' || this.polygon.length < 3) return;
    const vertices = this.polygon;
    this.polygon = [];
    this.commit(polygonRuns(this.shared.width, this.shared.height, vertices, this.label),
      { kind: 'polygon', label: this.label, points: vertices });
  }

  // A one-shot operation (fill, polygon): applied, recorded for undo, sent.
  commit(runs, source) {
    if (!runs.length) return;
    const { inverse } = this.apply(runs, source);
    this.handlers.onStrokeDone?.(runs, inverse);
  }

  apply(runs, source) {
    const { opId, inverse } = this.shared.applyLocal(runs);
    this.refreshRuns(runs);
    this.handlers.onOperation({ opId, runs, inverse, source });
    return { opId, inverse };
  }

  // Repaints the rows a stroke segment touched (its preview is in gesture.coverage).
  refreshPoints(points) {
    const r = this.brush.size / 2 + 1;
    const ys = points.map((p) => p[1]);
    const y0 = Math.max(0, Math.floor(Math.min(...ys) - r));
    const y1 = Math.min(this.shared.height - 1, Math.ceil(Math.max(...ys) + r));
    if (y1 >= y0) this.refreshOverlay(y0, y1);
  }

  // --- drawing --------------------------------------------------------------------------------------------------

  draw() {
    this.dirty = false;
    const ratio = window.devicePixelRatio || 1;
    const ctx = this.ctx;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    if (!this.shared) return;
    const { scale, offsetX, offsetY } = this.view;
    ctx.setTransform(ratio * scale, 0, 0, ratio * scale, ratio * offsetX, ratio * offsetY);
    ctx.imageSmoothingEnabled = scale < 2;
    if (this.image) ctx.drawImage(this.image, 0, 0, this.shared.width, this.shared.height);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(this.overlayCanvas, 0, 0);
    if (this.showUncertainty && this.uncertaintyCanvas) ctx.drawImage(this.uncertaintyCanvas, 0, 0);
    if (this.diffCanvas) ctx.drawImage(this.diffCanvas, 0, 0);
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    this.drawPolygonInProgress(ctx);
    this.drawBrushCursor(ctx);
    this.drawRemoteCursors(ctx);
  }

  drawPolygonInProgress(ctx) {
    const points = this.gesture?.kind === 'lasso' ? this.gesture.points : this.polygon;
    if (!points.length) return;
    ctx.beginPath();
    points.forEach(([x, y], k) => {
      const [sx, sy] = maskToScreen(this.view, x, y);
      if (k === 0) ctx.moveTo(sx, sy); else ctx.lineTo(sx, sy);
    });
    if (this.pointer && this.tool === 'polygon') ctx.lineTo(...maskToScreen(this.view, ...this.pointer));
    ctx.strokeStyle = '#fff';
    ctx.setLineDash([4, 3]);
    ctx.lineWidth = 1.5;
    ctx.stroke();
    ctx.setLineDash([]);
  }

  drawBrushCursor(ctx) {
    if (!this.pointer || !['brush', 'eraser'].includes(this.tool)) return;
    const [cx, cy] = snapToBrushCentre(...this.pointer, this.brush.size);
    const [sx, sy] = maskToScreen(this.view, cx, cy);
    const half = (this.brush.size / 2) * this.view.scale;
    ctx.beginPath();
    if (this.brush.shape === 'round') ctx.arc(sx, sy, half, 0, 2 * Math.PI);
    else ctx.rect(sx - half, sy - half, 2 * half, 2 * half);
    ctx.lineWidth = 1;
    ctx.strokeStyle = '#000';
    ctx.stroke();
    ctx.setLineDash([3, 3]);
    ctx.strokeStyle = '#fff';
    ctx.stroke();
    ctx.setLineDash([]);
  }

  drawRemoteCursors(ctx) {
    ctx.font = '12px system-ui, sans-serif';
    for (const { x, y, name, colour } of this.remoteCursors.values()) {
      const [sx, sy] = maskToScreen(this.view, x, y);
      ctx.fillStyle = colour;
      ctx.beginPath();
      ctx.moveTo(sx, sy);
      ctx.lineTo(sx + 12, sy + 4);
      ctx.lineTo(sx + 4, sy + 12);
      ctx.closePath();
      ctx.fill();
      const width = ctx.measureText(name).width + 8;
      ctx.fillRect(sx + 10, sy + 12, width, 16);
      ctx.fillStyle = '#fff';
      ctx.fillText(name, sx + 14, sy + 24);
    }
  }

  destroy() {
    cancelAnimationFrame(this.frame);
  }
}
