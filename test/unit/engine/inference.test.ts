import { strict as assert } from 'node:assert';
import * as ort from 'onnxruntime-node';
import { Graph } from '../../../trainer/compute/graph/graph';
import { Generator } from '../../../trainer/compute/engine/generate';
import { KvCacheSession } from '../../../trainer/compute/engine/inference';
import { buildForward } from '../../../trainer/compute/engine/llama';
import { argmax } from '../../../trainer/compute/engine/sampling';
import { createSession, int64Tensor } from '../../../trainer/compute/engine/session';
import { frozenLinear, quantizeInt4, quantizeInt8 } from '../../../trainer/compute/engine/weights';
import { INT4_BLOCK, INT8_BLOCK } from '../../../trainer/model/precision';
import type { Checkpoint } from '../../../trainer/model/checkpoint';
import { PROJECTIONS } from '../../../trainer/model/config';
import { Rng } from '../../../trainer/model/random';
import { TINY_KINDS, maxAbsDiff, randomAdapter, randomTokens, tinyCheckpoint } from './fixtures';
import { referenceLogits } from './reference';
import { randomCheckpointWeights } from '../../../trainer/model/checkpoint';
import { tinyModelConfig } from '../../fixtures/tiny-config';

/** Last-position logits of the full prefix through buildForward: no cache at all. */
async function fullPrefixRunner(checkpoint: Checkpoint) {
  const g = new Graph('forward');
  const fwd = buildForward(g, checkpoint.config, checkpoint.weights, { batch: 1 });
  g.output(fwd.logits, 'logits');
  const session = await createSession(g, { threads: 1 });
  const V = checkpoint.config.vocabSize;
  return {
    async lastLogits(tokens: number[]): Promise<Float32Array> {
      const T = tokens.length;
      const out = await session.run({
        input_ids: int64Tensor(tokens, [1, T]),
        position_ids: int64Tensor(
          tokens.map((_, i) => i),
          [1, T],
        ),
      });
      return (out.logits.data as Float32Array).slice((T - 1) * V);
    },
    release: () => session.release(),
  };
}

describe('engine/inference KvCacheSession', () => {
  for (const kind of TINY_KINDS) {
    it(`greedy decoding with the KV cache yields the tokens of re-running the full prefix (${kind})`, async () => {
      const checkpoint = await tinyCheckpoint(kind);
      const full = await fullPrefixRunner(checkpoint);
      const cached = await KvCacheSession.create(checkpoint.config, checkpoint.weights, { threads: 1 });
      const prompt = randomTokens(new Rng(9), 21, checkpoint.config.vocabSize);
      // 21 + 60 tokens crosses the cache's first growth (64 positions).
      const steps = 60;
      const reference = [...prompt];
      let worst = 0;
      for (let i = 0; i < steps; i++) {
        const logits = await full.lastLogits(reference);
        reference.push(argmax(logits));
      }
      const decoded = [...prompt];
      let logits = await cached.append(prompt);
      for (let i = 0; i < steps; i++) {
        worst = Math.max(worst, maxAbsDiff(logits, await full.lastLogits(decoded)));
        decoded.push(argmax(logits));
        if (i < steps - 1) logits = await cached.append([decoded[decoded.length - 1]]);
      }
      assert.deepEqual(decoded, reference);
      assert.ok(new Set(decoded.slice(prompt.length)).size > 3, 'the test model should not decode one repeated token');
      assert.ok(worst < 1e-4, `cached logits differ from the full prefix by ${worst}`);
      await cached.dispose();
      await full.release();
    });
  }

  it('appends chunks after a cached prefix and truncates back (KV-prefix reuse)', async () => {
    const checkpoint = await tinyCheckpoint('llama-gqa');
    const full = await fullPrefixRunner(checkpoint);
    const session = await KvCacheSession.create(checkpoint.config, checkpoint.weights, { threads: 1 });
    const tokens = randomTokens(new Rng(4), 90, checkpoint.config.vocabSize);
    await session.append(tokens.slice(0, 50));
    let diff = maxAbsDiff(await session.append(tokens.slice(50, 90)), await full.lastLogits(tokens));
    assert.ok(diff < 1e-4, `chunked prefill differs by ${diff}`);
    session.truncate(30);
    assert.equal(session.length, 30);
    diff = maxAbsDiff(await session.append(tokens.slice(30, 33)), await full.lastLogits(tokens.slice(0, 33)));
    assert.ok(diff < 1e-4, `append after truncate differs by ${diff}`);
    assert.throws(() => session.truncate(34), /cannot truncate a cache of 33 tokens to 34/);
    await assert.rejects(session.append(new Array(200).fill(1)), /exceeds the model's limit of 160/);
    await session.dispose();
    await full.release();
  });

  for (const kind of ['qwen2-tied', 'qwen3'] as const) {
    it(`LoRA as inputs: no adapter and B = 0 give the base logits; merged equals unmerged; an adapter changes the logits (${kind})`, async () => {
      const checkpoint = await tinyCheckpoint(kind);
      const cfg = checkpoint.config;
      const prompt = randomTokens(new Rng(6), 12, cfg.vocabSize);
      const adapter = randomAdapter(cfg, PROJECTIONS, 3, 21);
      const run = async (session: KvCacheSession) => {
        const logits = Float32Array.from(await session.append(prompt));
        session.truncate(0);
        return logits;
      };
      const base = await KvCacheSession.create(cfg, checkpoint.weights, { threads: 1 });
      const withInputs = await KvCacheSession.create(cfg, checkpoint.weights, { threads: 1, loraInputs: true });
      const merged = await KvCacheSession.create(cfg, checkpoint.weights, { threads: 1, mergedAdapter: adapter });
      const baseLogits = await run(base);

      const noAdapter = await run(withInputs);
      assert.ok(maxAbsDiff(noAdapter, baseLogits) < 1e-5, 'zero-rank adapter feeds must give the base');
      withInputs.setAdapter(randomAdapter(cfg, PROJECTIONS, 3, 22, true));
      assert.ok(maxAbsDiff(await run(withInputs), baseLogits) < 1e-5, 'B = 0 must give the base');

      withInputs.setAdapter(adapter);
      const unmergedLogits = await run(withInputs);
      const mergedLogits = await run(merged);
      const diff = maxAbsDiff(unmergedLogits, mergedLogits);
      assert.ok(diff < 1e-4, `merged differs from unmerged by ${diff}`);
      assert.ok(maxAbsDiff(unmergedLogits, baseLogits) > 0.1, 'the adapter must change the logits');

      // The same adapter through buildForward's LoRA inputs (the training graph's forward).
      const g = new Graph('forward');
      const fwd = buildForward(g, cfg, checkpoint.weights, {
        batch: 1,
        lora: { targets: PROJECTIONS, rank: 3, scaling: adapter.scaling },
      });
      g.output(fwd.logits, 'logits');
      const session = await createSession(g, { threads: 1 });
      const feeds: Record<string, ort.Tensor> = {
        input_ids: int64Tensor(prompt, [1, prompt.length]),
        position_ids: int64Tensor(
          prompt.map((_, i) => i),
          [1, prompt.length],
        ),
      };
      for (const [module, inputs] of fwd.loraInputs) {
        const lora = adapter.modules.get(module)!;
        feeds[inputs.a.name] = new ort.Tensor('float32', lora.a.data as Float32Array, lora.a.shape);
        feeds[inputs.b.name] = new ort.Tensor('float32', lora.b.data as Float32Array, lora.b.shape);
      }
      const training = (await session.run(feeds)).logits.data as Float32Array;
      const last = training.slice((prompt.length - 1) * cfg.vocabSize);
      assert.ok(maxAbsDiff(last, unmergedLogits) < 1e-4, 'inference LoRA must match the training forward');
      await Promise.all([base.dispose(), withInputs.dispose(), merged.dispose(), session.release()]);
    });
  }

  it('the cache grows past its first capacity and still matches the full prefix', async () => {
    const cfg = tinyModelConfig({
      hidden_size: 32,
      intermediate_size: 40,
      vocab_size: 61,
      max_position_embeddings: 700,
      head_dim: 16,
      rope_theta: 10000,
      tie_word_embeddings: false,
    });
    const checkpoint = { config: cfg, weights: randomCheckpointWeights(cfg, 5, { std: 0.3 }) } as Checkpoint;
    const full = await fullPrefixRunner(checkpoint);
    const session = await KvCacheSession.create(cfg, checkpoint.weights, { threads: 1 });
    const tokens = randomTokens(new Rng(8), 600, cfg.vocabSize);
    await session.append(tokens.slice(0, 250));
    const firstCapacity = session.capacity;
    for (let i = 250; i < 262; i++) await session.append([tokens[i]]); // one token at a time across the growth
    let diff = maxAbsDiff(await session.append(tokens.slice(262, 600)), await full.lastLogits(tokens));
    assert.ok(session.capacity > firstCapacity, `capacity ${session.capacity} should have grown from ${firstCapacity}`);
    assert.ok(diff < 1e-4, `after growing the cache the logits differ by ${diff}`);
    session.truncate(259);
    diff = maxAbsDiff(await session.append([tokens[259]]), await full.lastLogits(tokens.slice(0, 260)));
    assert.ok(diff < 1e-4, `decode after truncating a grown cache differs by ${diff}`);
    session.truncate(0);
    diff = maxAbsDiff(await session.append(tokens), await full.lastLogits(tokens)); // 600 tokens: prefilled in chunks
    assert.ok(diff < 1e-4, `a prompt longer than one prefill chunk differs by ${diff}`);
    assert.equal(session.length, tokens.length);
    await session.dispose();
    await full.release();
  });

  it('nll: per-token NLL equals log-softmax of the plain-loop reference (base, adapter as feeds, vocabulary limit, chunks) and leaves the generation cache alone', async () => {
    const checkpoint = await tinyCheckpoint('qwen2-tied');
    const cfg = checkpoint.config;
    const vocabLimit = cfg.vocabSize - 5; // a tokenizer smaller than the model's padded vocabulary
    const tokens = randomTokens(new Rng(12), 37, vocabLimit);
    const adapter = randomAdapter(cfg, ['q_proj', 'v_proj', 'down_proj'], 2, 31);
    const referenceNll = (withAdapter: boolean) => {
      const logits = referenceLogits(cfg, checkpoint.weights, tokens, withAdapter ? adapter : undefined);
      return tokens.slice(1).map((target, i) => {
        const row = logits[i].subarray(0, vocabLimit);
        const max = Math.max(...row);
        const logSum = Math.log(row.reduce((sum, v) => sum + Math.exp(v - max), 0)) + max;
        return logSum - row[target];
      });
    };
    const base = referenceNll(false);
    const adapted = referenceNll(true);
    assert.ok(maxAbsDiff(base, adapted) > 0.05, 'the adapter should change the NLL');

    const session = await KvCacheSession.create(cfg, checkpoint.weights, { threads: 1, loraInputs: true, vocabLimit });
    const prompt = tokens.slice(0, 10);
    const before = Float32Array.from(await session.append(prompt));
    session.setAdapter(adapter);
    for (const chunkTokens of [undefined, 7, 1]) {
      const nll = await session.nll(tokens, { chunkTokens });
      assert.equal(nll.length, tokens.length - 1);
      assert.ok(
        maxAbsDiff(nll, adapted) < 1e-4,
        `adapter NLL (chunks of ${chunkTokens}) differs by ${maxAbsDiff(nll, adapted)}`,
      );
    }
    const baseNll = await session.nll(tokens, { base: true });
    assert.ok(maxAbsDiff(baseNll, base) < 1e-4, `base NLL differs by ${maxAbsDiff(baseNll, base)}`);
    // The generation cache still holds the prompt (under the base model's keys/values).
    assert.equal(session.length, prompt.length);
    session.setAdapter(undefined);
    session.truncate(prompt.length - 1);
    assert.ok(
      maxAbsDiff(await session.append(prompt.slice(-1)), before) < 1e-5,
      'scoring must not touch the generation cache',
    );

    // Generation and scoring started together (as the worker may receive them) do not disturb each other.
    const generator = new Generator(session);
    generator.reset();
    const alone = await generator.generate(prompt, { maxTokens: 10, vocabSize: vocabLimit });
    generator.reset();
    const [together, nllTogether] = await Promise.all([
      generator.generate(prompt, { maxTokens: 10, vocabSize: vocabLimit }),
      session.nll(tokens, { base: true, chunkTokens: 5 }),
    ]);
    assert.deepEqual(together.tokens, alone.tokens);
    assert.ok(maxAbsDiff(nllTogether, base) < 1e-4, 'NLL computed alongside a generation');

    await assert.rejects(session.nll([1]), /at least 2 tokens/);
    await assert.rejects(
      session.nll([1, vocabLimit]),
      new RegExp(`token id ${vocabLimit} at position 1 is outside the vocabulary \\(${vocabLimit} ids\\)`),
    );
    await assert.rejects(session.nll(new Array(161).fill(1)), /exceeds the model's limit of 160/);
    const merged = await KvCacheSession.create(cfg, checkpoint.weights, {
      threads: 1,
      mergedAdapter: adapter,
      vocabLimit,
    });
    assert.ok(maxAbsDiff(await merged.nll(tokens), adapted) < 1e-4, 'merged adapter NLL');
    await assert.rejects(merged.nll(tokens, { base: true }), /cannot score the base model/);
    await Promise.all([session.dispose(), merged.dispose()]);
  });

  it('quantized weights: int8 and int4 MatMuls compute x · dequant(W)ᵀ', async () => {
    const rng = new Rng(1);
    const N = 48;
    const K = 200; // a multiple of neither block: the last blocks are padded
    const weight = { dtype: 'float32' as const, shape: [N, K], data: rng.fillNormal(new Float32Array(N * K)) };
    const x = rng.fillNormal(new Float32Array(2 * K));
    // Independent dequantization of what the packers produced.
    const q8 = quantizeInt8(weight);
    const blocks8 = Math.ceil(K / INT8_BLOCK);
    const deq8 = (n: number, k: number) =>
      ((q8.packed.data as Uint8Array)[(n * blocks8 + Math.floor(k / INT8_BLOCK)) * INT8_BLOCK + (k % INT8_BLOCK)] -
        128) *
      (q8.scales.data as Float32Array)[n * blocks8 + Math.floor(k / INT8_BLOCK)];
    const q4 = quantizeInt4(weight);
    const blocks = Math.ceil(K / INT4_BLOCK);
    const deq4 = (n: number, k: number) => {
      const byte = (q4.packed.data as Uint8Array)[
        (n * blocks + Math.floor(k / INT4_BLOCK)) * (INT4_BLOCK / 2) + Math.floor((k % INT4_BLOCK) / 2)
      ];
      const nibble = k % 2 === 0 ? byte & 15 : byte >> 4;
      return (nibble - 8) * (q4.scales.data as Float32Array)[n * blocks + Math.floor(k / INT4_BLOCK)];
    };
    for (const [precision, deq, tolerance] of [
      ['int8', deq8, 0.05],
      ['int4', deq4, 0.05],
    ] as const) {
      const g = new Graph('q');
      g.output(frozenLinear(g, g.input('x', 'float32', [2, K]), 'w', weight, precision), 'y');
      const session = await createSession(g, { threads: 1 });
      const y = (await session.run({ x: new ort.Tensor('float32', x, [2, K]) })).y.data as Float32Array;
      let worst = 0;
      let scale = 0;
      let quantizationError = 0;
      for (let row = 0; row < 2; row++) {
        for (let n = 0; n < N; n++) {
          let exact = 0;
          let dequantized = 0;
          for (let k = 0; k < K; k++) {
            exact += (weight.data as Float32Array)[n * K + k] * x[row * K + k];
            dequantized += deq(n, k) * x[row * K + k];
          }
          worst = Math.max(worst, Math.abs(y[row * N + n] - dequantized));
          quantizationError = Math.max(quantizationError, Math.abs(exact - dequantized));
          scale = Math.max(scale, Math.abs(exact));
        }
      }
      // ORT also quantizes x to 8 bits: allow that, relative to the output's scale.
      assert.ok(worst < tolerance * scale, `${precision}: |y − x·dequant(W)ᵀ| = ${worst} (scale ${scale})`);
      assert.ok(quantizationError < 0.25 * scale, `${precision}: quantization error ${quantizationError} too large`);
      await session.release();
    }
  });
});
