import { strict as assert } from 'node:assert';
import * as ort from 'onnxruntime-node';
import { Graph } from '../../../trainer/graph/graph';
import { buildForward } from '../../../trainer/engine/llama';
import { createSession, int64Tensor } from '../../../trainer/engine/session';
import { Rng } from '../../../trainer/model/random';
import { randomTokens, randomWeights, tinyConfig } from './fixtures';
import { referenceLogits } from './reference';

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}

describe('engine/llama buildForward', () => {
  for (const kind of ['llama-gqa', 'qwen2-tied', 'llama-mha'] as const) {
    it(`matches the plain-loop reference within 1e-4 (${kind})`, async () => {
      const cfg = tinyConfig(kind);
      const weights = randomWeights(cfg, 7);
      const tokens = randomTokens(new Rng(3), 9, cfg.vocabSize);
      const expected = referenceLogits(cfg, weights, tokens);
      for (const seqLen of [tokens.length, 'seq'] as const) {
        const g = new Graph('forward');
        const fwd = buildForward(g, cfg, weights, { batch: 1, seqLen });
        g.output(fwd.logits, 'logits');
        const session = await createSession(g, { threads: 1 });
        const T = tokens.length;
        const out = await session.run({
          input_ids: int64Tensor(tokens, [1, T]),
          position_ids: int64Tensor(tokens.map((_, i) => i), [1, T]),
        });
        const logits = out.logits as ort.Tensor;
        assert.deepEqual(logits.dims, [1, T, cfg.vocabSize]);
        const flat = new Float64Array(T * cfg.vocabSize);
        expected.forEach((row, t) => flat.set(row, t * cfg.vocabSize));
        const diff = maxAbsDiff(logits.data as Float32Array, flat);
        assert.ok(diff < 1e-4, `max |logits - reference| = ${diff} (seqLen ${seqLen})`);
        await session.release();
      }
    });
  }
});
