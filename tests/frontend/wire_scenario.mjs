// A painting session with the studio's real tools (brush, polygon, flood fill, eraser, lasso, per-user undo/redo)
// on one shared mask, printed as JSON: the server ops the annotation room would send for each change (in the order
// made, several ops where a change has more runs than one op takes) and the mask every client ends with.
// test_wire_server.py applies the ops with the server's code (webapp/datasets/masks.py) and compares.

import { brushRuns, eraserRuns } from '../../frontend/js/canvas/brush.js';
import { floodRuns, polygonRuns } from '../../frontend/js/canvas/fill.js';
import { OpHistory } from '../../frontend/js/canvas/history.js';
import { LabelMask } from '../../frontend/js/canvas/mask.js';
import { runsToServerOps } from '../../frontend/js/canvas/wire.js';

const width = 40;
const height = 24;
const RUNS_PER_OP = 5; // small, so that most changes travel as several ops
const mask = new LabelMask(width, height);
const histories = { alice: new OpHistory(), bob: new OpHistory() };
const ops = [];

function change(user, runs, { record = true } = {}) {
  const inverse = mask.apply(runs);
  if (record) histories[user].push(runs, inverse);
  ops.push(...runsToServerOps(runs, RUNS_PER_OP));
}

change('alice', brushRuns(width, height, [[3.5, 3.5], [30.5, 5.5]], { size: 5, shape: 'round' }, 1));
change('bob', polygonRuns(width, height, [[10, 8], [35, 10], [20, 22]], 2));
change('alice', floodRuns(mask, 0, 23, 3));
change('bob', eraserRuns(width, height, [[5.5, 12.5], [38.5, 12.5]], { size: 3, shape: 'square' }));
change('alice', polygonRuns(width, height, [[2, 2], [38, 20], [38, 2], [2, 20]], 1)); // a self-crossing lasso
change('alice', histories.alice.undo(mask.data), { record: false }); // undo the lasso where it is still hers
change('bob', histories.bob.undo(mask.data), { record: false }); // undo the eraser
change('alice', histories.alice.redo(mask.data), { record: false });
change('bob', eraserRuns(width, height, [[20.5, 1.5], [26.5, 3.5]], { size: 2, shape: 'round' }));

process.stdout.write(JSON.stringify({ width, height, ops, mask: Array.from(mask.data) }));
