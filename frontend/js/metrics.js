// Reading checkpoint / training metrics for display. Pure, unit-tested.

/**
 * Per-class IoU as [[name, value], …] from metrics that hold it as {name: value} or as a list indexed by class
 * (names from `classNames`); null when the metrics have none.
 */
export function perClassIou(metrics, classNames = []) {
  const raw = metrics?.per_class_iou ?? metrics?.class_iou ?? null;
  if (!raw) return null;
  const pairs = Array.isArray(raw) ? raw.map((v, k) => [classNames[k] ?? `class ${k}`, v]) : Object.entries(raw);
  return pairs.filter(([, v]) => v !== null && Number.isFinite(Number(v))).map(([n, v]) => [n, Number(v)]);
}

/** The scalar metrics as short "name value" strings (numbers rounded), lists and objects left out. */
export function scalarMetrics(metrics) {
  return Object.entries(metrics ?? {})
    .filter(([, v]) => typeof v === 'number' || typeof v === 'boolean' || typeof v === 'string')
    .map(([k, v]) => `${k.replace(/_/g, ' ')} ${typeof v === 'number' ? Number(v.toPrecision(4)) : v}`);
}
