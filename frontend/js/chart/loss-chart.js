// A small live line chart for loss curves: series name → [[step, value], …], redrawn on every append.

import { h } from '../ui/dom.js';
import { extent, formatTick, linearScale, niceTicks } from './scale.js';

const COLOURS = ['#4f8cff', '#ff922b', '#51cf66', '#f06595', '#fcc419', '#20c997'];
const PAD = { left: 48, right: 12, top: 10, bottom: 22 };

export class LossChart {
  constructor(title = 'Loss', emptyText = 'The loss curve appears when a run starts.') {
    this.emptyText = emptyText;
    this.series = new Map();
    this.canvas = h('canvas', { class: 'chart', role: 'img', 'aria-label': `${title} curve` });
    this.legend = h('div', { class: 'tags' });
    this.element = h('div', { class: 'loss-chart' }, this.canvas, this.legend);
    new ResizeObserver(() => this.draw()).observe(this.canvas);
  }

  /** Replaces all series (e.g. from a job's stored metrics). */
  setAll(metrics) {
    this.series = new Map(Object.entries(metrics ?? {}).map(([name, points]) => [name, [...points]]));
    this.draw();
  }

  /** Appends one step's losses {name: value}. */
  append(step, losses) {
    for (const [name, value] of Object.entries(losses ?? {})) {
      if (!this.series.has(name)) this.series.set(name, []);
      this.series.get(name).push([step, value]);
    }
    this.draw();
  }

  draw() {
    const ratio = window.devicePixelRatio || 1;
    const width = this.canvas.clientWidth || 400;
    const height = this.canvas.clientHeight || 220;
    this.canvas.width = width * ratio;
    this.canvas.height = height * ratio;
    const ctx = this.canvas.getContext('2d');
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const all = [...this.series.values()];
    this.legend.replaceChildren(...[...this.series.keys()].map((name, k) => {
      const last = this.series.get(name).at(-1);
      return h('span', { class: 'tag', style: { color: COLOURS[k % COLOURS.length] } },
        `${name}${last ? ` ${formatTick(last[1])}` : ''}`);
    }));
    ctx.font = '11px system-ui, sans-serif';
    ctx.fillStyle = '#9aa3af';
    if (!all.some((s) => s.length)) {
      ctx.textAlign = 'center';
      ctx.fillText(this.emptyText, width / 2, height / 2);
      ctx.textAlign = 'start';
      return;
    }
    const [x0, x1] = extent(all, 0);
    const [y0, y1] = extent(all, 1);
    const x = linearScale(x0, x1, PAD.left, width - PAD.right);
    const y = linearScale(y0, y1, height - PAD.bottom, PAD.top);
    ctx.strokeStyle = '#353b46';
    ctx.lineWidth = 1;
    for (const tick of niceTicks(y0, y1, 4)) {
      ctx.beginPath();
      ctx.moveTo(PAD.left, y(tick));
      ctx.lineTo(width - PAD.right, y(tick));
      ctx.stroke();
      ctx.fillText(formatTick(tick), 4, y(tick) + 4);
    }
    for (const tick of niceTicks(x0, x1, 5)) ctx.fillText(formatTick(tick), x(tick) - 8, height - 6);
    [...this.series.values()].forEach((points, k) => {
      ctx.strokeStyle = COLOURS[k % COLOURS.length];
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      points.forEach(([step, value], i) => {
        if (i === 0) ctx.moveTo(x(step), y(value)); else ctx.lineTo(x(step), y(value));
      });
      ctx.stroke();
    });
  }
}
