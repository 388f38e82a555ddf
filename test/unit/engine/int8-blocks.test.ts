import { strict as assert } from 'node:assert';
import { KvCacheSession } from '../../../trainer/compute/engine/inference';
import { quantizeInt8 } from '../../../trainer/compute/engine/weights';
import { INT8_BLOCK } from '../../../trainer/model/precision';
import type { Checkpoint } from '../../../trainer/model/checkpoint';
import { Rng } from '../../../trainer/model/random';
import type { HostTensor } from '../../../trainer/model/tensor';
import { type TinyKind, randomTokens, tinyCheckpoint } from './fixtures';
import { referenceLogits } from './reference';

// The int8 serving path (every weight matrix in 128-blocks through MatMulNBits; the embedding
// gathered from the head's block table and dequantized in the graph) against the plain-loop
// reference run on the same weights quantized and dequantized in JS. What is left between them is
// MatMulNBits quantizing its input per block to int8 (with accuracy_level 1, float compute, they
// agree to 1e-5 of the largest logit).

/** W [N, K] → dequant(quantizeInt8(W)), as float32 [N, K]. */
function roundTrip(weight: HostTensor): HostTensor {
  const [N, K] = weight.shape;
  const q = quantizeInt8(weight);
  const blocks = q.packed.shape[1];
  const codes = q.packed.data as Uint8Array;
  const scales = q.scales.data as Float32Array;
  const data = new Float32Array(N * K);
  for (let n = 0; n < N; n++) {
    for (let k = 0; k < K; k++) {
      const block = n * blocks + Math.floor(k / INT8_BLOCK);
      data[n * K + k] = (codes[block * INT8_BLOCK + (k % INT8_BLOCK)] - 128) * scales[block];
    }
  }
  return { dtype: 'float32', shape: [N, K], data };
}

function dequantizedWeights(checkpoint: Checkpoint): Map<string, HostTensor> {
  const result = new Map<string, HostTensor>();
  for (const [name, tensor] of checkpoint.weights)
    result.set(name, tensor.shape.length === 2 ? roundTrip(tensor) : tensor);
  return result;
}

describe('engine: int8 weights in blocks (MatMulNBits)', () => {
  // Tied and untied heads; hidden sizes below one block (padded, sliced back) and of whole blocks.
  const cases: [TinyKind, Record<string, unknown>][] = [
    ['qwen2-tied', {}],
    ['llama-gqa', {}],
    ['qwen3', {}],
    ['qwen2-tied', { hidden_size: 256, intermediate_size: 384 }],
  ];
  for (const [kind, overrides] of cases) {
    const label = `${kind}${overrides.hidden_size ? `, hidden ${overrides.hidden_size}` : ''}`;
    it(`prefill and decode logits match the reference on the dequantized weights (${label})`, async () => {
      const checkpoint = await tinyCheckpoint(kind, 7, overrides);
      const cfg = checkpoint.config;
      const dequantized = dequantizedWeights(checkpoint);
      const session = await KvCacheSession.create(cfg, checkpoint.weights, { precision: 'int8', threads: 1 });
      try {
        const tokens = randomTokens(new Rng(3), 24, cfg.vocabSize);
        const prompt = tokens.slice(0, 18);
        const reference = referenceLogits(cfg, dequantized, tokens);
        const original = referenceLogits(cfg, checkpoint.weights, tokens);
        let worst = 0;
        let scale = 0;
        let quantization = 0;
        for (let t = prompt.length - 1; t < tokens.length; t++) {
          const logits = await session.append(t === prompt.length - 1 ? prompt : [tokens[t]]);
          for (let v = 0; v < cfg.vocabSize; v++) {
            worst = Math.max(worst, Math.abs(logits[v] - reference[t][v]));
            scale = Math.max(scale, Math.abs(reference[t][v]));
            quantization = Math.max(quantization, Math.abs(original[t][v] - reference[t][v]));
          }
        }
        // MatMulNBits rounds its input to int8 per block, which in these small random models moves
        // the logits about as much as rounding the weights does (up to 18% of the largest logit);
        // a misplaced code, scale or zero point moves them by the logits' own size.
        assert.ok(
          worst < 0.25 * scale,
          `int8 logits differ from the dequantized reference by ${worst} (scale ${scale})`,
        );
        assert.ok(quantization > 0, 'quantization changed nothing');
      } finally {
        await session.dispose();
      }
    });
  }
});
