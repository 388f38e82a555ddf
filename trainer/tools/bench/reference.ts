import { type ModelConfig, parseModelConfig } from '../../model/config';

// What the benchmarks share: the reference model shape and the statistics they report.

/** The benchmarks' reference shape: d 512, 8 layers, 8 heads, SwiGLU 1376, vocab 8192. */
export function referenceConfig(): ModelConfig {
  return parseModelConfig({
    model_type: 'llama',
    hidden_size: 512,
    num_hidden_layers: 8,
    num_attention_heads: 8,
    num_key_value_heads: 8,
    intermediate_size: 1376,
    vocab_size: 8192,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    max_position_embeddings: 2048,
    tie_word_embeddings: false,
  });
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}
