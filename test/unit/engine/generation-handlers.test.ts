import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Generator } from '../../../trainer/compute/engine/generate';
import { generationHandlers, stopTokenIds } from '../../../trainer/compute/engine/generation-handlers';
import { KvCacheSession } from '../../../trainer/compute/engine/inference';
import { randomCheckpointWeights, saveCheckpoint } from '../../../trainer/model/checkpoint';
import { LM_HEAD_WEIGHT, type ModelConfig } from '../../../trainer/model/config';
import type { HostTensor } from '../../../trainer/model/tensor';
import { trainByteLevelBpe } from '../../../trainer/model/tokenizer/bpe-trainer';
import { Tokenizer } from '../../../trainer/model/tokenizer/tokenizer';
import { maxAbsDiff } from './fixtures';
import { tinyModelConfig } from '../../fixtures/tiny-config';

// The worker's generation handlers, called in this thread: a real checkpoint folder with a real
// tokenizer.json whose vocabulary is smaller than the model's (padded, as Qwen's is).

const corpus = [
  'function add(a, b) {\n  return a + b;\n}\n',
  'const values = [1, 2, 3].map((x) => x * 2);\n',
  'export class Point {\n  constructor(x, y) {\n    this.x = x;\n    this.y = y;\n  }\n}\n',
];

/** lm_head row `to` := factor · row `from`: id `to` then outscores `from` wherever `from`'s logit is positive. */
function boostRow(weights: Map<string, HostTensor>, cfg: ModelConfig, to: number, from: number, factor: number): void {
  const head = weights.get(LM_HEAD_WEIGHT)!.data as Float32Array;
  const D = cfg.hiddenSize;
  for (let i = 0; i < D; i++) head[to * D + i] = factor * head[from * D + i];
}

describe('engine/generation-handlers', () => {
  let root: string;
  let tokenizer: Tokenizer;
  let cfg: ModelConfig;
  const prompt = [5, 40, 41, 42, 60, 61, 70, 80, 90, 100];

  async function writeModel(name: string, edit?: (weights: Map<string, HostTensor>) => void): Promise<string> {
    const dir = path.join(root, name);
    fs.mkdirSync(dir);
    const weights = randomCheckpointWeights(cfg, 3, { std: 0.3 });
    // Logit 0 for special and padded ids, so the plain model's greedy text never meets them.
    const head = weights.get(LM_HEAD_WEIGHT)!.data as Float32Array;
    for (let id = 0; id < cfg.vocabSize; id++) {
      if (id >= tokenizer.vocabSize || tokenizer.specialIds.has(id))
        head.fill(0, id * cfg.hiddenSize, (id + 1) * cfg.hiddenSize);
    }
    edit?.(weights);
    await saveCheckpoint(dir, cfg, weights);
    fs.copyFileSync(path.join(root, 'tokenizer.json'), path.join(dir, 'tokenizer.json'));
    return dir;
  }

  before(async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-gen-handlers-'));
    fs.writeFileSync(path.join(root, 'tokenizer.json'), JSON.stringify(trainByteLevelBpe(corpus, { vocabSize: 290 })));
    tokenizer = await Tokenizer.load(root);
    cfg = tinyModelConfig({
      model_type: 'qwen2',
      hidden_size: 32,
      intermediate_size: 48,
      vocab_size: tokenizer.vocabSize + 11,
      rms_norm_eps: 1e-6,
      max_position_embeddings: 128,
      tie_word_embeddings: false,
    });
  });

  after(() => fs.rmSync(root, { recursive: true, force: true }));

  it('stopTokenIds: every special token (eos, FIM markers, file separator) and config eos', () => {
    const ids = stopTokenIds(tokenizer, [7]);
    for (const name of ['<|endoftext|>', '<|fim_prefix|>', '<|fim_suffix|>', '<|fim_middle|>', '<|file_sep|>']) {
      assert.ok(ids.includes(tokenizer.tokenId(name)!), `${name} must stop generation`);
    }
    assert.ok(ids.includes(7));
    assert.deepEqual(stopTokenIds(null, undefined), []);
  });

  it('never generates ids past the tokenizer, stops at a FIM token and never puts it in the text', async () => {
    const plainDir = await writeModel('plain');
    const plain = await generationHandlers.loadModel(plainDir, { threads: 1 });
    assert.equal(plain.vocabSize, tokenizer.vocabSize);
    const baseline = await generationHandlers.generate(plain.id, { prompt, maxTokens: 8 });
    assert.equal(baseline.tokens.length, 8, `baseline stopped early (${baseline.stopReason})`);
    await generationHandlers.disposeModel(plain.id);

    // A padded id (no text) that outscores the greedy choice at step 0, and <|fim_middle|> that does at step 3.
    const padded = cfg.vocabSize - 2;
    const fimMiddle = tokenizer.fim!.middle;
    const boostedDir = await writeModel('boosted', (weights) => {
      boostRow(weights, cfg, padded, baseline.tokens[0], 4);
      boostRow(weights, cfg, fimMiddle, baseline.tokens[3], 4);
    });

    // Unguarded, this model emits both (so the test can fail).
    const { loadCheckpoint } = await import('../../../trainer/model/checkpoint');
    const checkpoint = await loadCheckpoint(boostedDir);
    const unguarded = new Generator(await KvCacheSession.create(cfg, checkpoint.weights, { threads: 1 }));
    const raw = await unguarded.generate(prompt, { maxTokens: 8 });
    assert.equal(raw.tokens[0], padded);
    const rawAfterMask = await unguarded.generate(prompt, { maxTokens: 8, vocabSize: tokenizer.vocabSize });
    assert.ok(rawAfterMask.tokens.includes(fimMiddle), 'without stop ids the FIM token is generated');
    assert.ok(tokenizer.decode(rawAfterMask.tokens).includes('<|fim_middle|>'));
    await unguarded.session.dispose();

    const boosted = await generationHandlers.loadModel(boostedDir, { threads: 1 });
    const guarded = await generationHandlers.generate(boosted.id, { prompt, maxTokens: 8 });
    assert.equal(guarded.stopReason, 'eos');
    assert.ok(
      guarded.tokens.every((t) => t < tokenizer.vocabSize && !tokenizer.specialIds.has(t)),
      `tokens ${guarded.tokens}`,
    );
    assert.deepEqual(guarded.tokens, baseline.tokens.slice(0, guarded.tokens.length));
    assert.ok(guarded.tokens.length <= 3);
    assert.ok(!guarded.text!.includes('<|'), `text ${JSON.stringify(guarded.text)}`);
    // A request's own stop ids add to the special ones; they cannot remove them.
    const withExtra = await generationHandlers.generate(boosted.id, { prompt, maxTokens: 8, eosTokenIds: [] });
    assert.deepEqual(withExtra.tokens, guarded.tokens);
    // Sampling obeys the same limits.
    for (let seed = 0; seed < 5; seed++) {
      const sampled = await generationHandlers.generate(boosted.id, {
        prompt,
        maxTokens: 8,
        sampling: { temperature: 1.5, seed },
      });
      assert.ok(
        sampled.tokens.every((t) => t < tokenizer.vocabSize && !tokenizer.specialIds.has(t)),
        `sampled ${sampled.tokens}`,
      );
    }
    await generationHandlers.disposeModel(boosted.id);
  });

  it('score: per-token NLL of fixed-length windows, base or adapter, equal to the session NLL', async () => {
    const dir = await writeModel('score');
    const loaded = await generationHandlers.loadModel(dir, { threads: 1, loraInputs: true });
    const windows = [prompt, prompt.map((t) => t + 3), prompt.map((t) => (t * 7) % tokenizer.vocabSize)];
    const base = await generationHandlers.score(loaded.id, windows);
    assert.equal(base.length, windows.length * (prompt.length - 1));
    const { loadCheckpoint } = await import('../../../trainer/model/checkpoint');
    const checkpoint = await loadCheckpoint(dir);
    const session = await KvCacheSession.create(cfg, checkpoint.weights, {
      threads: 1,
      vocabLimit: tokenizer.vocabSize,
    });
    for (const [w, window] of windows.entries()) {
      const expected = await session.nll(window);
      assert.ok(maxAbsDiff(base.subarray(w * 9, (w + 1) * 9), expected) < 1e-5, `window ${w}`);
    }
    const modules: Record<string, { a: HostTensor; b: HostTensor }> = {};
    for (let layer = 0; layer < 2; layer++) {
      modules[`model.layers.${layer}.self_attn.v_proj`] = {
        a: { dtype: 'float32', shape: [2, 32], data: Float32Array.from({ length: 64 }, (_, i) => Math.sin(i + layer)) },
        b: {
          dtype: 'float32',
          shape: [16, 2],
          data: Float32Array.from({ length: 32 }, (_, i) => Math.cos(i * 3 + layer)),
        },
      };
    }
    await generationHandlers.setAdapter(loaded.id, { scaling: 2, modules });
    const adapted = await generationHandlers.score(loaded.id, windows);
    assert.ok(maxAbsDiff(adapted, base) > 0.01, 'the adapter should change the NLL');
    assert.ok(
      maxAbsDiff(await generationHandlers.score(loaded.id, windows, { base: true }), base) < 1e-5,
      'base: true ignores the adapter',
    );
    await assert.rejects(
      generationHandlers.score(loaded.id, [prompt, prompt.slice(1)]),
      /one length: window 1 has 9 tokens, window 0 has 10/,
    );
    await generationHandlers.disposeModel(loaded.id);
    await session.dispose();
  });
});
