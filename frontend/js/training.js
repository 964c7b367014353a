// Which annotated samples a segmentation retraining uses, as the admin panel shows it before starting. Pure,
// unit-tested; the server's rule (webapp/registry/services.py training_split) decides, this only previews it.

export const TRAINING_STATUSES = ['submitted', 'reviewed'];
const MIN_TRAINING_SAMPLES = 2;
const MAX_HELDOUT_SAMPLES = 256; // the server measures at most this many left-out samples

/** 'draft' | 'submitted' | 'reviewed' | 'rejected', or 'unlabelled' for a sample never saved. */
export function annotationStatus(sample) {
  return sample.annotation_version > 0 ? (sample.annotation_status ?? 'draft') : 'unlabelled';
}

/** Samples that can be picked: a saved annotation that was not rejected, and a latent. */
export function pickable(samples) {
  return samples.filter((s) => s.annotation_version > 0 && s.has_latent && annotationStatus(s) !== 'rejected');
}

/** The ids picked by default: every submitted or reviewed annotation. */
export function defaultPick(samples) {
  return pickable(samples).filter((s) => TRAINING_STATUSES.includes(annotationStatus(s))).map((s) => s.id);
}

/**
 * What the server will do with `picked` ids: {train, heldOut, evaluatedOn, error}. Submitted/reviewed samples left
 * out are held out; if none are left out, a `fraction` of the picked ones (≥ 1, leaving ≥ 2 to train on); else the
 * IoU is measured on the training samples.
 */
export function trainingPlan(samples, picked, fraction = 0.2) {
  const chosen = new Set(picked);
  const leftOut = defaultPick(samples).filter((id) => !chosen.has(id));
  const n = chosen.size;
  if (n < MIN_TRAINING_SAMPLES) {
    return { train: n, heldOut: 0, evaluatedOn: null, error: `pick at least ${MIN_TRAINING_SAMPLES} annotated samples` };
  }
  if (leftOut.length) {
    return { train: n, heldOut: Math.min(leftOut.length, MAX_HELDOUT_SAMPLES), evaluatedOn: 'held-out', error: null };
  }
  const split = Math.min(Math.max(1, Math.round(n * fraction)), n - MIN_TRAINING_SAMPLES);
  if (fraction > 0 && split >= 1) return { train: n - split, heldOut: split, evaluatedOn: 'held-out split', error: null };
  return { train: n, heldOut: 0, evaluatedOn: 'training', error: null };
}

/** One line for the plan. */
export function describePlan(plan) {
  if (plan.error) return plan.error;
  if (plan.evaluatedOn === 'held-out') {
    return `train on ${plan.train}; IoU on the ${plan.heldOut} submitted/reviewed sample${plan.heldOut === 1 ? '' : 's'} left out`;
  }
  if (plan.evaluatedOn === 'held-out split') return `train on ${plan.train}; ${plan.heldOut} of the picked held out for the IoU`;
  return `train on ${plan.train}; IoU measured on the training samples (nothing held out)`;
}
