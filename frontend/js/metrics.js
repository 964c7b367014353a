// Reading checkpoint / training metrics for display. Pure, unit-tested.

/**
 * Per-class IoU rows [{index, name, colour, iou, pixels}] from training metrics, or null when they have none.
 * Reads the studio's list of {class, name, colour, iou, pixels}, a class-indexed list of numbers or a {name: value}
 * object; names and colours missing there come from `classes` ([{name, colour}] in index order). `iou` is null for a
 * class that is in neither the prediction nor the masks; `pixels` (the class's pixels in the masks) may be null.
 */
export function classIouRows(metrics, classes = []) {
  const raw = metrics?.per_class_iou ?? metrics?.class_iou ?? null;
  if (!raw) return null;
  const finite = (v) => (v === null || v === undefined || !Number.isFinite(Number(v)) ? null : Number(v));
  const entries = Array.isArray(raw)
    ? raw.map((v, k) => (v !== null && typeof v === 'object' ? { ...v, index: v.class ?? k } : { index: k, iou: v }))
    : Object.entries(raw).map(([name, iou]) => ({ index: classes.findIndex((c) => c.name === name), name, iou }));
  return entries.map((e) => {
    const known = classes[e.index] ?? {};
    return { index: e.index, name: e.name ?? known.name ?? `class ${e.index}`, colour: e.colour ?? known.colour ?? null,
      iou: finite(e.iou), pixels: finite(e.pixels) };
  });
}

/** The scalar metrics as short "name value" strings (numbers rounded), lists and objects left out. */
export function scalarMetrics(metrics) {
  return Object.entries(metrics ?? {})
    .filter(([, v]) => typeof v === 'number' || typeof v === 'boolean' || typeof v === 'string')
    .map(([k, v]) => `${k.replace(/_/g, ' ')} ${typeof v === 'number' ? Number(v.toPrecision(4)) : v}`);
}

const ENCODER_QUALITY = [
  { key: 'psnr', label: 'PSNR (dB)', higherIsBetter: true },
  { key: 'lpips', label: 'LPIPS', higherIsBetter: false },
  { key: 'latent_mse', label: 'W+ error', higherIsBetter: false },
];

/**
 * An encoder's reconstruction quality on the held-out generator samples next to the encoder that was active when it
 * was trained: [{label, value, baseline, better}] (`baseline` null without one; `better` true/false/null).
 */
export function encoderQualityRows(metrics) {
  return ENCODER_QUALITY.filter(({ key }) => Number.isFinite(metrics?.[`eval_${key}`])).map(({ key, label, higherIsBetter }) => {
    const value = metrics[`eval_${key}`];
    const baseline = Number.isFinite(metrics[`baseline_${key}`]) ? metrics[`baseline_${key}`] : null;
    const better = baseline === null || value === baseline ? null : (value > baseline) === higherIsBetter;
    return { label, value, baseline, better };
  });
}
