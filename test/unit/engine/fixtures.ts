import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  type Checkpoint,
  loadCheckpoint,
  randomCheckpointWeights,
  saveCheckpoint,
} from '../../../trainer/model/checkpoint';
import { type ModelConfig, parseModelConfig, toHfConfigJson } from '../../../trainer/model/config';
import { Rng } from '../../../trainer/model/random';
import type { HostTensor } from '../../../trainer/model/tensor';
import type { LoraAdapter } from '../../../trainer/compute/engine/weights';
import { type Projection, projectionModule, projectionShape } from '../../../trainer/model/config';
import { tinyModelConfig } from '../../fixtures/tiny-config';

// Tiny configs that still exercise every branch: GQA, q/k/v bias (qwen2 and llama attention_bias),
// tied and untied embeddings, head_dim ≠ hidden/heads, llama3 and linear rope_scaling, qwen3's
// q/k norms. head_dim is 16: GroupQueryAttention's minimum.

export type TinyKind =
  | 'llama-gqa'
  | 'qwen2-tied'
  | 'qwen2-untied'
  | 'llama-bias'
  | 'llama3-rope'
  | 'linear-rope'
  | 'qwen3';

/** Every tiny kind, for tests that check each architecture. */
export const TINY_KINDS: readonly TinyKind[] = [
  'llama-gqa',
  'qwen2-tied',
  'qwen2-untied',
  'llama-bias',
  'llama3-rope',
  'linear-rope',
  'qwen3',
];

export function tinyConfig(kind: TinyKind): ModelConfig {
  const common = {
    hidden_act: 'silu',
    max_position_embeddings: 160,
    vocab_size: 61,
    intermediate_size: 40,
    head_dim: 16,
  };
  switch (kind) {
    case 'llama-gqa':
      return tinyModelConfig({ ...common, hidden_size: 32, rope_theta: 10000, tie_word_embeddings: false });
    case 'qwen2-tied':
      return tinyModelConfig({
        ...common,
        model_type: 'qwen2',
        hidden_size: 32,
        num_key_value_heads: 1,
        rope_theta: 1000000,
        tie_word_embeddings: true,
      });
    case 'qwen2-untied':
      return tinyModelConfig({
        ...common,
        model_type: 'qwen2',
        hidden_size: 32,
        rope_theta: 1000000,
        tie_word_embeddings: false,
      });
    case 'llama3-rope':
      // θ = 500 and an original context of 64 put the 8 frequencies in all three llama3 bands.
      return tinyModelConfig({
        ...common,
        hidden_size: 32,
        rope_theta: 500,
        tie_word_embeddings: false,
        rope_scaling: {
          rope_type: 'llama3',
          factor: 8,
          low_freq_factor: 1,
          high_freq_factor: 4,
          original_max_position_embeddings: 64,
        },
      });
    case 'linear-rope':
      return tinyModelConfig({
        ...common,
        hidden_size: 32,
        rope_theta: 500,
        tie_word_embeddings: true,
        rope_scaling: { type: 'linear', factor: 4 },
      });
    case 'qwen3':
      // head_dim 16 while hidden / heads is 6: q is 64 wide, the residual 24.
      return tinyModelConfig({
        ...common,
        model_type: 'qwen3',
        hidden_size: 24,
        rope_theta: 1000000,
        tie_word_embeddings: true,
      });
    case 'llama-bias':
      return tinyModelConfig({
        ...common,
        hidden_size: 24,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        rope_theta: 500,
        tie_word_embeddings: false,
        attention_bias: true,
      });
  }
}

/**
 * A checkpoint written to and read back from a temp folder: random weights, HF names.
 * `overrides` (config.json keys) change the kind's shape, e.g. a hidden size of whole int8 blocks.
 */
export async function tinyCheckpoint(
  kind: TinyKind,
  seed = 7,
  overrides: Record<string, unknown> = {},
): Promise<Checkpoint> {
  const cfg = parseModelConfig({ ...toHfConfigJson(tinyConfig(kind)), ...overrides });
  // A wide spread keeps attention and the MLP far from trivial; norm weights get their own spread.
  const weights = randomCheckpointWeights(cfg, seed, { std: 0.3 });
  const rng = new Rng(seed + 1);
  for (const [name, tensor] of weights) {
    if (name.endsWith('norm.weight')) rng.fillUniform(tensor.data as Float32Array, 0.7, 1.3);
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-engine-'));
  try {
    await saveCheckpoint(dir, cfg, weights);
    return await loadCheckpoint(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

export function randomTokens(rng: Rng, count: number, vocab: number): number[] {
  return Array.from({ length: count }, () => rng.int(vocab));
}

/** A random adapter on `targets`; `zeroB` gives PEFT's initial state (B = 0). */
export function randomAdapter(
  cfg: ModelConfig,
  targets: readonly Projection[],
  rank: number,
  seed: number,
  zeroB = false,
): LoraAdapter {
  const rng = new Rng(seed);
  const modules = new Map<string, { a: HostTensor; b: HostTensor }>();
  for (let layer = 0; layer < cfg.numLayers; layer++) {
    for (const projection of targets) {
      const [outFeatures, inFeatures] = projectionShape(cfg, projection);
      const a = rng.fillNormal(new Float32Array(rank * inFeatures), 0, 0.3);
      const b = zeroB
        ? new Float32Array(outFeatures * rank)
        : rng.fillNormal(new Float32Array(outFeatures * rank), 0, 0.3);
      modules.set(projectionModule(layer, projection), {
        a: { dtype: 'float32', shape: [rank, inFeatures], data: a },
        b: { dtype: 'float32', shape: [outFeatures, rank], data: b },
      });
    }
  }
  return { scaling: 2, modules };
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`lengths differ: ${a.length} vs ${b.length}`);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}
