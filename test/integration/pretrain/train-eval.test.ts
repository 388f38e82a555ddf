import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { KvCacheSession } from '../../../trainer/compute/engine/inference';
import { loadCheckpoint, saveCheckpoint } from '../../../trainer/model/checkpoint';
import type { CorpusFile } from '../../../trainer/tools/pretrain/corpus';
import { encodeTrainingStream } from '../../../trainer/tools/pretrain/data';
import { Scorer, evaluateModel } from '../../../trainer/tools/pretrain/evaluate';
import {
  DEFAULT_HYPERPARAMETERS,
  initialWeights,
  loadRunWeights,
  trainRun,
} from '../../../trainer/tools/pretrain/train';
import { trainByteLevelBpe } from '../../../trainer/model/tokenizer/bpe-trainer';
import { Tokenizer } from '../../../trainer/model/tokenizer/tokenizer';
import { tinyModelConfig } from '../../fixtures/tiny-config';

// A tiny model trained for a few steps on this repository's own files: resume must reproduce an
// uninterrupted run exactly, and the evaluation's scores must agree with the KV-cache engine.

const ROOT = path.join(__dirname, '..', '..', '..');
const read = (p: string, language: CorpusFile['language']): CorpusFile => ({
  source: 'idiom',
  path: p,
  language,
  text: fs.readFileSync(path.join(ROOT, p), 'utf8'),
});
const train = [
  'trainer/tools/pretrain/corpus.ts',
  'trainer/tools/pretrain/data.ts',
  'trainer/tools/pretrain/train.ts',
].map((p) => read(p, 'typescript'));
const heldOut = [
  read('trainer/tools/pretrain/vocab.ts', 'typescript'),
  read('trainer/tools/pretrain/fetch.ts', 'javascript'),
  read('trainer/tools/pretrain/filters.ts', 'python'),
];
const tokenizer = Tokenizer.fromJson(
  trainByteLevelBpe(
    train.map((f) => f.text),
    { vocabSize: 400 },
  ),
);
const config = tinyModelConfig({
  hidden_size: 32,
  num_attention_heads: 2,
  intermediate_size: 64,
  vocab_size: 400,
  tie_word_embeddings: true,
});
const hyperparameters = {
  ...DEFAULT_HYPERPARAMETERS,
  batch: 2,
  seqLen: 32,
  warmupSteps: 2,
  peakLearningRate: 1e-2,
  threads: 1,
};

describe('pretraining run (tiny model)', function () {
  this.timeout(120_000);
  let dir: string;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-pretrain-'));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('resuming from a checkpoint gives the same weights as an uninterrupted run, and the loss falls', async () => {
    const { tokens: stream } = encodeTrainingStream(train, tokenizer, { fimRate: 0.5, seed: 1 });
    const straight = await trainRun({
      config,
      hyperparameters,
      length: { steps: 30 },
      stream,
      runDir: path.join(dir, 'a'),
      logEvery: 5,
    });
    assert.equal(straight.progress.step, 30);
    assert.ok(straight.progress.done);
    const history = straight.progress.history;
    assert.ok(
      history[history.length - 1][1] < history[0][1] - 0.5,
      `loss ${history[0][1]} → ${history[history.length - 1][1]}`,
    );

    // Stop after ~0 s (one step per sitting), then resume until done.
    const runDir = path.join(dir, 'b');
    let sittings = 0;
    let result: Awaited<ReturnType<typeof trainRun>>;
    do {
      result = await trainRun({
        config,
        hyperparameters,
        length: { steps: 30 },
        stream,
        runDir,
        logEvery: 5,
        sittingSeconds: sittings < 2 ? 1e-9 : undefined,
      });
      sittings++;
    } while (!result.progress.done && sittings < 10);
    assert.equal(result.progress.sittings, 3);
    for (const [name, tensor] of straight.weights) {
      assert.deepEqual(result.weights.get(name)!.data, tensor.data, `${name} differs after resume`);
    }
    assert.deepEqual(
      loadRunWeights(runDir).weights.get('model.norm.weight')!.data,
      straight.weights.get('model.norm.weight')!.data,
    );
    await assert.rejects(
      trainRun({
        config,
        hyperparameters: { ...hyperparameters, peakLearningRate: 1 },
        length: { steps: 30 },
        stream,
        runDir,
      }),
      /different config, hyperparameters or length/,
    );
    // A finished run extends only when asked, only to a longer length.
    await assert.rejects(
      trainRun({ config, hyperparameters, length: { steps: 40 }, stream, runDir }),
      /different config, hyperparameters or length/,
    );
    await assert.rejects(
      trainRun({ config, hyperparameters, length: { steps: 20 }, stream, runDir, extend: true }),
      /must be longer/,
    );
    const extended = await trainRun({
      config,
      hyperparameters,
      length: { steps: 40 },
      stream,
      runDir,
      extend: true,
      logEvery: 5,
    });
    assert.equal(extended.progress.step, 40);
    assert.deepEqual(
      extended.progress.extensions?.map((e) => e.step),
      [30],
    );
    assert.ok(extended.progress.done);
  });

  it('the scorer agrees with the KV-cache engine token by token', async () => {
    const weights = initialWeights(config, 3);
    const tokens = Int32Array.from(tokenizer.encode(train[0].text).slice(0, 33));
    const scorer = await Scorer.create(config, weights, 1, 32, 1);
    const [nll] = await scorer.score([tokens]);
    await scorer.release();
    const kv = await KvCacheSession.create(config, weights, { threads: 1, maxContext: 32 });
    for (let t = 0; t < 32; t++) {
      const logits = await kv.append([tokens[t]]);
      let max = -Infinity;
      for (const v of logits) max = Math.max(max, v);
      let sum = 0;
      for (const v of logits) sum += Math.exp(v - max);
      const expected = -(logits[tokens[t + 1]] - max - Math.log(sum));
      assert.ok(Math.abs(nll[t] - expected) < 1e-3, `position ${t}: ${nll[t]} vs ${expected}`);
    }
    await kv.dispose();
  });

  it('evaluates exported fp16 weights: finite bits per byte next to xz, next-line exact match', async () => {
    const weights = initialWeights(config, 4);
    const out = path.join(dir, 'model');
    await saveCheckpoint(out, config, weights, { dtype: 'float16' });
    const checkpoint = await loadCheckpoint(out);
    const metrics = await evaluateModel(checkpoint.config, checkpoint.weights, tokenizer, heldOut, {
      bytesPerLanguage: 4000,
      linesPerLanguage: 3,
      seqLen: 32,
      threads: 1,
    });
    for (const m of Object.values(metrics)) {
      assert.ok(m.bytes > 0 && m.tokens > 0);
      // An untrained model is close to uniform: log2(400) bits per token.
      assert.ok(
        Math.abs((m.modelBitsPerByte * m.bytes) / m.tokens - Math.log2(400)) < 0.5,
        `bits/token ${(m.modelBitsPerByte * m.bytes) / m.tokens}`,
      );
      assert.ok(m.xzBitsPerByteFileByFile > 0.5 && m.xzBitsPerByteFileByFile < 8);
      assert.equal(m.nextLine.lines, 3);
      assert.equal(m.fimLine?.lines, 3);
    }
  });
});
