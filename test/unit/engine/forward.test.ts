import { strict as assert } from 'node:assert';
import * as ort from 'onnxruntime-node';
import { Graph } from '../../../trainer/compute/graph/graph';
import { type ForwardOptions, buildForward, loraInputName } from '../../../trainer/compute/engine/llama';
import { createSession, int64Tensor } from '../../../trainer/compute/engine/session';
import type { LoraAdapter } from '../../../trainer/compute/engine/weights';
import type { Checkpoint } from '../../../trainer/model/checkpoint';
import { Rng } from '../../../trainer/model/random';
import { TINY_KINDS, maxAbsDiff, randomAdapter, randomTokens, tinyCheckpoint } from './fixtures';
import { referenceLogits } from './reference';

/** Logits [T·V] of buildForward's graph for one sequence. */
async function forwardLogits(
  checkpoint: Checkpoint,
  tokens: number[],
  options: ForwardOptions,
  adapter?: LoraAdapter,
): Promise<Float32Array> {
  const g = new Graph('forward');
  const fwd = buildForward(g, checkpoint.config, checkpoint.weights, { batch: 1, ...options });
  g.output(fwd.logits, 'logits');
  const session = await createSession(g, { threads: 1 });
  const T = tokens.length;
  const feeds: Record<string, ort.Tensor> = {
    input_ids: int64Tensor(tokens, [1, T]),
    position_ids: int64Tensor(
      tokens.map((_, i) => i),
      [1, T],
    ),
  };
  for (const [module, inputs] of fwd.loraInputs) {
    const lora = adapter?.modules.get(module);
    if (!lora) throw new Error(`test adapter lacks ${module}`);
    feeds[inputs.a.name] = new ort.Tensor('float32', lora.a.data as Float32Array, lora.a.shape);
    feeds[inputs.b.name] = new ort.Tensor('float32', lora.b.data as Float32Array, lora.b.shape);
  }
  const out = await session.run(feeds);
  await session.release();
  assert.deepEqual(out.logits.dims, [1, T, checkpoint.config.vocabSize]);
  return out.logits.data as Float32Array;
}

function flatten(rows: Float64Array[]): Float64Array {
  const out = new Float64Array(rows.length * rows[0].length);
  rows.forEach((row, t) => out.set(row, t * row.length));
  return out;
}

describe('engine/llama buildForward', () => {
  for (const kind of TINY_KINDS) {
    it(`matches a plain-loop reference within 1e-4 (${kind}), static and symbolic T, plain and fused kernels`, async () => {
      const checkpoint = await tinyCheckpoint(kind);
      // Positions up to 120 reach the long wavelengths that rope_scaling stretches.
      const tokens = randomTokens(new Rng(3), kind.endsWith('rope') ? 120 : 9, checkpoint.config.vocabSize);
      const expected = flatten(referenceLogits(checkpoint.config, checkpoint.weights, tokens));
      assert.ok(Math.max(...expected.map(Math.abs)) > 1, 'reference logits are not trivially small');
      for (const options of [{ seqLen: tokens.length }, { seqLen: 'seq' }, { fusedKernels: true }] as const) {
        const diff = maxAbsDiff(await forwardLogits(checkpoint, tokens, options), expected);
        assert.ok(diff < 1e-4, `max |logits − reference| = ${diff} (${JSON.stringify(options)})`);
      }
    });
  }

  it('rope_scaling and the q/k norms change the logits (the reference would not notice a dropped step)', async () => {
    const tokens = randomTokens(new Rng(3), 120, 61);
    for (const kind of ['llama3-rope', 'linear-rope', 'qwen3'] as const) {
      const checkpoint = await tinyCheckpoint(kind);
      const cfg = checkpoint.config;
      const plain = { ...cfg, ropeScaling: undefined, qkNorm: false };
      const weights = new Map([...checkpoint.weights].filter(([name]) => !/[qk]_norm/.test(name)));
      const changed = maxAbsDiff(
        flatten(referenceLogits(cfg, checkpoint.weights, tokens)),
        flatten(referenceLogits(plain, weights, tokens)),
      );
      assert.ok(changed > 0.1, `${kind}: logits move by only ${changed} without its feature`);
    }
  });

  it('LoRA: B = 0 gives the base logits exactly; a nonzero adapter matches the reference and changes the logits', async () => {
    const checkpoint = await tinyCheckpoint('llama-gqa');
    const cfg = checkpoint.config;
    const targets = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
    const tokens = randomTokens(new Rng(5), 7, cfg.vocabSize);
    const base = await forwardLogits(checkpoint, tokens, {});
    const lora = (adapter: LoraAdapter) =>
      forwardLogits(checkpoint, tokens, { lora: { targets, rank: 'r', scaling: adapter.scaling } }, adapter);

    const zero = await lora(randomAdapter(cfg, targets, 4, 11, true));
    assert.deepEqual(zero, base);

    const adapter = randomAdapter(cfg, targets, 4, 12);
    const adapted = await lora(adapter);
    const expected = flatten(referenceLogits(cfg, checkpoint.weights, tokens, adapter));
    const diff = maxAbsDiff(adapted, expected);
    assert.ok(diff < 1e-4, `adapter logits differ from the reference by ${diff}`);
    assert.ok(maxAbsDiff(adapted, base) > 0.1, 'a nonzero adapter must change the logits');
  });

  it('makes trainable weights graph inputs under their HF names and LoRA inputs under PEFT names', () => {
    return tinyCheckpoint('qwen2-tied').then((checkpoint) => {
      const g = new Graph('train');
      const fwd = buildForward(g, checkpoint.config, checkpoint.weights, {
        batch: 2,
        seqLen: 8,
        trainableWeights: (name) => name.includes('layers.1.'),
        lora: { targets: ['q_proj', 'v_proj'], rank: 4, scaling: 2 },
      });
      assert.deepEqual(fwd.logits.shape, [2, 8, checkpoint.config.vocabSize]);
      assert.deepEqual(fwd.hidden.shape, [2, 8, checkpoint.config.hiddenSize]);
      assert.ok(fwd.weightInputs.has('model.layers.1.self_attn.q_proj.bias'));
      assert.ok(!fwd.weightInputs.has('model.layers.0.self_attn.q_proj.weight'));
      const q0 = fwd.loraInputs.get('model.layers.0.self_attn.q_proj')!;
      assert.equal(q0.a.name, loraInputName('model.layers.0.self_attn.q_proj', 'A'));
      assert.equal(q0.a.name, 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight');
      assert.deepEqual(q0.b.shape, [checkpoint.config.numHeads * checkpoint.config.headDim, 4]);
      assert.equal(fwd.loraInputs.size, 2 * checkpoint.config.numLayers);
    });
  });

  it('rejects a checkpoint with a missing or misshapen weight in one line', async () => {
    const checkpoint = await tinyCheckpoint('llama-gqa');
    const weights = new Map(checkpoint.weights);
    weights.delete('model.layers.1.mlp.up_proj.weight');
    assert.throws(
      () => buildForward(new Graph(), checkpoint.config, weights),
      /missing weight model\.layers\.1\.mlp\.up_proj\.weight/,
    );
    weights.set('model.layers.1.mlp.up_proj.weight', { dtype: 'float32', shape: [3, 3], data: new Float32Array(9) });
    assert.throws(
      () => buildForward(new Graph(), checkpoint.config, weights),
      /has shape \[3, 3\], expected \[40, 32\]/,
    );
  });
});
