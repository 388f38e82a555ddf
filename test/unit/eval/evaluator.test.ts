import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { KvCacheSession } from '../../../trainer/compute/engine/inference';
import type { LoraAdapter } from '../../../trainer/compute/engine/weights';
import { Evaluator } from '../../../trainer/training/eval/evaluator';
import type { HeldOutSet } from '../../../trainer/training/eval/held-out';
import { evenlySpaced, newlineTokenIds } from '../../../trainer/training/eval/held-out';
import { editSimilarity, heldOutMetrics, normalizeLine } from '../../../trainer/training/eval/metrics';
import { loadCheckpoint } from '../../../trainer/model/checkpoint';
import { PROJECTIONS, projectionModule, projectionShape } from '../../../trainer/model/config';
import { Rng } from '../../../trainer/model/random';
import { EngineWorker } from '../../../trainer/compute/runtime/client';
import { makeTinyModel, type TinyModel } from '../../fixtures/pipeline/tiny-model';

function randomAdapter(model: TinyModel, seed: number): LoraAdapter {
  const rng = new Rng(seed);
  const modules = new Map<
    string,
    {
      a: { dtype: 'float32'; shape: number[]; data: Float32Array };
      b: { dtype: 'float32'; shape: number[]; data: Float32Array };
    }
  >();
  for (let layer = 0; layer < model.config.numLayers; layer++) {
    for (const projection of PROJECTIONS) {
      const [out, inFeatures] = projectionShape(model.config, projection);
      modules.set(projectionModule(layer, projection), {
        a: { dtype: 'float32', shape: [4, inFeatures], data: rng.fillNormal(new Float32Array(4 * inFeatures), 0, 0.2) },
        b: { dtype: 'float32', shape: [out, 4], data: rng.fillNormal(new Float32Array(out * 4), 0, 0.2) },
      });
    }
  }
  return { scaling: 1.5, modules };
}

/** Σ −log p(token_i | tokens_<i) for i ≥ from, through the KV-cache inference graph (an independent path). */
async function referenceNll(session: KvCacheSession, tokens: number[], from: number): Promise<number> {
  session.truncate(0);
  let total = 0;
  for (let i = 0; i + 1 < tokens.length; i++) {
    const logits = await session.append([tokens[i]]);
    if (i + 1 < from) continue;
    let max = -Infinity;
    for (const x of logits) max = Math.max(max, x);
    let sum = 0;
    for (const x of logits) sum += Math.exp(x - max);
    total += -(logits[tokens[i + 1]] - max - Math.log(sum));
  }
  return total;
}

describe('eval: scoring and greedy line completion in the engine worker', function () {
  this.timeout(60_000);
  let dir: string;
  let model: TinyModel;
  let worker: EngineWorker;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-eval-'));
    model = await makeTinyModel(dir);
    worker = EngineWorker.start();
  });
  after(async () => {
    await worker.terminate();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('scores the base and a LoRA adapter like the KV-cache decoder does, window by window', async () => {
    const rng = new Rng(5);
    const long = Array.from({ length: 70 }, () => rng.int(model.config.vocabSize)); // spans three windows of T = 32
    const short = Array.from({ length: 20 }, () => rng.int(model.config.vocabSize));
    const heldOut: HeldOutSet = {
      sequences: [
        { tokens: long, lossStart: 0 },
        { tokens: short, lossStart: 6 },
      ],
      bytes: 100,
      tokens: 69 + 14,
      lines: [],
      commits: 1,
      changedLines: 0,
      files: 1,
      examples: 2,
      exampleTokens: 90,
      sha256: '',
    };
    const evaluator = await Evaluator.create(
      worker,
      { checkpointDir: dir },
      { seqLen: 32, maxContext: 128, loraInputs: true, threads: 1 },
      model.tokenizer,
      [],
    );
    const checkpoint = await loadCheckpoint(dir);
    const adapter = randomAdapter(model, 9);
    try {
      for (const which of [null, adapter]) {
        await evaluator.setAdapter(which);
        const metrics = await evaluator.evaluate(heldOut);
        assert.equal(metrics.tokens, 69 + 14);
        const reference = await KvCacheSession.create(checkpoint.config, checkpoint.weights, {
          threads: 1,
          mergedAdapter: which ?? undefined,
        });
        // Window starts see no earlier context: score each window of 33 tokens on its own.
        let expected = 0;
        for (let from = 0; from + 1 < long.length; from += 32)
          expected += await referenceNll(reference, long.slice(from, from + 33), 1);
        expected += await referenceNll(reference, short, 6);
        await reference.dispose();
        assert.ok(
          Math.abs(metrics.loss * metrics.tokens! - expected) < 1e-3 * expected,
          `${metrics.loss * metrics.tokens!} vs ${expected}`,
        );
        assert.ok(Math.abs(metrics.bitsPerByte - expected / Math.LN2 / 100) < 1e-3);
      }
    } finally {
      await evaluator.release();
    }
  });

  it('completes a line greedily, stopping after a newline token, the same way for base and adapter', async () => {
    const prompt = model.tokenizer.encode('function add(a, b) {\n  return');
    const newlineIds = newlineTokenIds(model.tokenizer);
    assert.ok(newlineIds.length > 0);
    const evaluator = await Evaluator.create(
      worker,
      { checkpointDir: dir },
      { seqLen: 32, maxContext: 128, loraInputs: true, threads: 1 },
      model.tokenizer,
      newlineIds,
    );
    const checkpoint = await loadCheckpoint(dir);
    try {
      for (const which of [null, randomAdapter(model, 4)]) {
        await evaluator.setAdapter(which);
        const [generated] = await worker.call(
          'evalComplete',
          (evaluator as unknown as { id: number }).id,
          [{ prompt, maxTokens: 12 }],
          [],
          newlineIds,
        );
        // Reference: argmax step by step through a fresh decoder.
        const reference = await KvCacheSession.create(checkpoint.config, checkpoint.weights, {
          threads: 1,
          mergedAdapter: which ?? undefined,
        });
        const expected: number[] = [];
        let logits = await reference.append(prompt);
        while (expected.length < 12) {
          let best = 0;
          for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
          expected.push(best);
          if (newlineIds.includes(best)) break;
          logits = await reference.append([best]);
        }
        await reference.dispose();
        assert.deepEqual(generated, expected);
      }
    } finally {
      await evaluator.release();
    }
  });

  it('metrics: edit similarity, line normalisation, sums to means', () => {
    assert.equal(editSimilarity('', ''), 1);
    assert.equal(editSimilarity('abc', 'abc'), 1);
    assert.equal(editSimilarity('abc', ''), 0);
    assert.equal(editSimilarity('kitten', 'sitting'), 1 - 3 / 7);
    assert.equal(normalizeLine('return x;  \n  next'), 'return x;');
    const m = heldOutMetrics({ nll: 20, tokens: 10, bytes: 40 }, { lines: 4, exact: 1, similarity: 3 });
    assert.equal(m.loss, 2);
    assert.equal(m.perplexity, Math.exp(2));
    assert.equal(m.bitsPerByte, 20 / Math.LN2 / 40);
    assert.equal(m.exactMatch, 0.25);
    assert.equal(m.editSimilarity, 0.75);
    assert.deepEqual(evenlySpaced(10, 3), [0, 3, 6]);
    assert.throws(
      () => heldOutMetrics({ nll: 0, tokens: 0, bytes: 0 }, { lines: 0, exact: 0, similarity: 0 }),
      /no held-out tokens/,
    );
  });
});
