import { ModelConfig, parseModelConfig, weightNames } from '../../../trainer/model/config';
import { Rng } from '../../../trainer/model/random';
import { HostTensor } from '../../../trainer/tensor';

// Tiny configs that still exercise every branch: GQA, q/k/v bias, tied and untied embeddings.

export function tinyConfig(kind: 'llama-gqa' | 'qwen2-tied' | 'llama-mha'): ModelConfig {
  const common = { hidden_act: 'silu', rms_norm_eps: 1e-5, max_position_embeddings: 128, vocab_size: 61, intermediate_size: 40 };
  switch (kind) {
    case 'llama-gqa':
      return parseModelConfig({ ...common, model_type: 'llama', hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, rope_theta: 10000, tie_word_embeddings: false });
    case 'qwen2-tied':
      return parseModelConfig({ ...common, model_type: 'qwen2', hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 1, rope_theta: 1000000, tie_word_embeddings: true });
    case 'llama-mha':
      return parseModelConfig({ ...common, model_type: 'llama', hidden_size: 24, num_hidden_layers: 1, num_attention_heads: 2, head_dim: 16, num_key_value_heads: 2, rope_theta: 500, tie_word_embeddings: false, attention_bias: true });
  }
}

/** Random weights with a spread that keeps attention and the MLP far from trivial. */
export function randomWeights(cfg: ModelConfig, seed: number): Map<string, HostTensor> {
  const rng = new Rng(seed);
  const weights = new Map<string, HostTensor>();
  for (const spec of weightNames(cfg)) {
    const n = spec.shape.reduce((a, b) => a * b, 1);
    const isNorm = spec.name.endsWith('norm.weight');
    const data = isNorm ? rng.fillUniform(new Float32Array(n), 0.8, 1.2) : rng.fillNormal(new Float32Array(n), 0, 0.3);
    weights.set(spec.name, { dtype: 'float32', shape: spec.shape, data });
  }
  return weights;
}

export function randomTokens(rng: Rng, count: number, vocab: number): number[] {
  return Array.from({ length: count }, () => rng.int(vocab));
}
