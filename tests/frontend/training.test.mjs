// The admin panel's preview of a segmentation retraining's samples (frontend/js/training.js), which must agree with
// the server's rule (webapp/registry/services.py training_split, tested in tests/webapp/test_web_training.py).
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { defaultPick, describePlan, pickable, trainingPlan } from '../../frontend/js/training.js';

const sample = (id, status, { version = 1, latent = true } = {}) => ({
  id, annotation_version: status === 'unlabelled' ? 0 : version, annotation_status: status === 'unlabelled' ? null : status,
  has_latent: latent });
const samples = [sample(1, 'reviewed'), sample(2, 'submitted'), sample(3, 'draft'), sample(4, 'rejected'),
  sample(5, 'submitted', { latent: false }), sample(6, 'unlabelled'), sample(7, 'reviewed'), sample(8, 'submitted')];

test('pickable: saved, not rejected, with a latent; the default is the submitted and reviewed ones', () => {
  assert.deepEqual(pickable(samples).map((s) => s.id), [1, 2, 3, 7, 8]);
  assert.deepEqual(defaultPick(samples), [1, 2, 7, 8]);
});

test('the submitted/reviewed samples left out are held out', () => {
  assert.deepEqual(trainingPlan(samples, [1, 3]), { train: 2, heldOut: 3, evaluatedOn: 'held-out', error: null });
  assert.match(describePlan(trainingPlan(samples, [1, 3])), /IoU on the 3 submitted\/reviewed samples left out/);
});

test('when all are picked a share of them is held out, leaving at least two to train on', () => {
  assert.deepEqual(trainingPlan(samples, [1, 2, 7, 8], 0.2), { train: 3, heldOut: 1, evaluatedOn: 'held-out split', error: null });
  assert.deepEqual(trainingPlan(samples, [1, 2, 3, 7, 8], 0.5), { train: 2, heldOut: 3, evaluatedOn: 'held-out split', error: null });
  assert.equal(trainingPlan(samples, [1, 2, 7, 8], 0).evaluatedOn, 'training');
  const two = [sample(1, 'reviewed'), sample(2, 'reviewed')];
  assert.deepEqual(trainingPlan(two, [1, 2]), { train: 2, heldOut: 0, evaluatedOn: 'training', error: null });
});

test('fewer than two picked is an error the panel shows', () => {
  const plan = trainingPlan(samples, [1]);
  assert.ok(plan.error && describePlan(plan).includes('at least 2'));
});
