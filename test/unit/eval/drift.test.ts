import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  crossesThresholds,
  DEFAULT_DRIFT_THRESHOLDS,
  driftMessage,
  windowsOf,
} from '../../../trainer/training/eval/drift';
import { lineageOf } from '../../../trainer/adapters/lineage';
import { tempDir } from '../../fixtures/mining/git-repo';
import { makeTinyModel } from '../../fixtures/pipeline/tiny-model';

// The drift report's rules (thresholds, the status bar's line), the scoring windows, and lineage.

describe('drift: thresholds and message', () => {
  const t = DEFAULT_DRIFT_THRESHOLDS;

  it('fires past the loss share or past N commits, not at them', () => {
    assert.equal(crossesThresholds({ commitsBehind: t.commitsBehind, lossIncrease: null }, t), false);
    assert.equal(crossesThresholds({ commitsBehind: t.commitsBehind + 1, lossIncrease: null }, t), true);
    assert.equal(crossesThresholds({ commitsBehind: 1, lossIncrease: t.lossIncrease / 2 }, t), false);
    assert.equal(crossesThresholds({ commitsBehind: 1, lossIncrease: t.lossIncrease }, t), true);
    assert.equal(crossesThresholds({ commitsBehind: 0, lossIncrease: null }, t), false);
  });

  it('reads "12 commits behind, +9% loss"', () => {
    assert.equal(driftMessage({ commitsBehind: 12, lossIncrease: 0.091 }), '12 commits behind, +9% loss');
    assert.equal(driftMessage({ commitsBehind: 1, lossIncrease: -0.02 }), '1 commit behind, -2% loss');
    assert.equal(driftMessage({ commitsBehind: 3, lossIncrease: null }), '3 commits behind');
    assert.equal(driftMessage({ commitsBehind: 0, lossIncrease: null }), 'trained at HEAD');
    assert.match(driftMessage({ commitsBehind: null, lossIncrease: null, problem: 'x' }), /^drift unknown: x$/);
  });

  it('cuts text at line ends into windows of at most N tokens, losing nothing', async () => {
    const dir = tempDir('drift-windows');
    const { tokenizer } = await makeTinyModel(path.join(dir, 'model')).finally(() =>
      fs.rmSync(dir, { recursive: true, force: true }),
    );
    const text = Array.from({ length: 40 }, (_, i) => `const value${i} = items.map((item) => item.id);\n`).join('');
    const limit = 3 * tokenizer.encode('const value1 = items.map((item) => item.id);\n').length + 1;
    const pieces = windowsOf(text, tokenizer, limit);
    assert.ok(pieces.length > 1);
    assert.equal(pieces.join(''), text);
    for (const piece of pieces) {
      assert.ok(tokenizer.encode(piece, { specialsAsText: true }).length <= limit);
      assert.ok(piece.endsWith('\n'));
    }
  });
});

describe('lineage', () => {
  it('follows parents to the first one the registry lacks, and stops at a repeat', () => {
    const parents = new Map<string, string | null>([
      ['c', 'b'],
      ['b', 'a'],
      ['a', null],
      ['x', 'gone'],
      ['p', 'q'],
      ['q', 'p'],
    ]);
    assert.deepEqual(lineageOf('c', parents), ['c', 'b', 'a']);
    assert.deepEqual(lineageOf('a', parents), ['a']);
    assert.deepEqual(lineageOf('x', parents), ['x', 'gone']);
    assert.deepEqual(lineageOf('p', parents), ['p', 'q']);
  });
});
