// Idiom's models and LoRA adapters in llama.cpp's GGUF layout, with the names, shapes and
// metadata keys that llama.cpp's convert_hf_to_gguf.py / convert_lora_to_gguf.py give them:
//   base:    token_embd, blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate,
//            ffn_up, ffn_down}.weight, output_norm, output (untied only); qwen2 q/k/v biases,
//            qwen3 attn_q_norm / attn_k_norm; rope_freqs for llama3 RoPE scaling
//   adapter: blk.N.attn_q.weight.lora_a [r, in] and .lora_b [out, r], general.type = adapter,
//            adapter.type = lora, adapter.lora.alpha (llama.cpp scales by alpha / r)
// llama.cpp's llama architecture rotates adjacent pairs where Hugging Face rotates halves, so the
// rows of q_proj and k_proj (weights, biases and LoRA B) are permuted within each head; qwen2 and
// qwen3 rotate halves in both and keep their order.

import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  EMBED_TOKENS_WEIGHT,
  FINAL_NORM_WEIGHT,
  LM_HEAD_WEIGHT,
  headNormWeightName,
  layerNormWeightName,
  projectionBiasName,
  projectionWeightName,
  type ModelConfig,
  type Projection,
} from '../../model/config';
import type { HostTensor } from '../../model/tensor';
import type { Tokenizer } from '../../model/tokenizer/tokenizer';
import type { LoadedAdapter } from '../peft';
import { typeFits, type GgmlType, type GgufTensor, type GgufValue } from './gguf-file';

/** Storage precision of the base GGUF's matrices (vectors stay f32, as llama.cpp's converter keeps them). */
export type GgufPrecision = 'f32' | 'f16' | 'q8_0';
export const GGUF_PRECISIONS: readonly GgufPrecision[] = ['f32', 'f16', 'q8_0'];
const MATRIX_TYPE: Record<GgufPrecision, GgmlType> = { f32: 'F32', f16: 'F16', q8_0: 'Q8_0' };
/** general.file_type (llama.cpp's llama_ftype): ALL_F32, MOSTLY_F16, MOSTLY_Q8_0. */
const FILE_TYPE: Record<GgufPrecision, number> = { f32: 0, f16: 1, q8_0: 7 };

/** llama.cpp's architecture names for the model types Idiom runs. */
const ARCHITECTURE: Partial<Record<string, string>> = { llama: 'llama', qwen2: 'qwen2', qwen3: 'qwen3' };

const PROJECTION_TENSOR: Record<Projection, string> = {
  q_proj: 'attn_q',
  k_proj: 'attn_k',
  v_proj: 'attn_v',
  o_proj: 'attn_output',
  gate_proj: 'ffn_gate',
  up_proj: 'ffn_up',
  down_proj: 'ffn_down',
};

/**
 * llama.cpp's architecture for `config`, or an error naming what it cannot take. `modelType` is
 * config.json's model_type as written, so a type Idiom does not parse is refused by this reason.
 */
export function ggufArchitecture(modelType: string, config?: ModelConfig): string {
  const architecture = ARCHITECTURE[modelType];
  if (!architecture) {
    throw new Error(
      `GGUF export: model_type "${modelType}" has no llama.cpp architecture Idiom can write (it writes ${Object.keys(ARCHITECTURE).join(', ')})`,
    );
  }
  if (config?.ropeScaling?.type === 'llama3' && modelType !== 'llama') {
    throw new Error(
      `GGUF export: llama.cpp's ${architecture} architecture takes no llama3 rope_scaling (only llama reads rope_freqs); export --format merged or peft instead`,
    );
  }
  return architecture;
}

/** Row order llama.cpp's llama architecture wants for q_proj / k_proj rows: pairs per head, not halves. */
function permutedRow(row: number, headDim: number): number {
  const head = Math.floor(row / headDim);
  const within = row % headDim;
  const half = headDim / 2;
  // New row h·hd + 2i + j holds old row h·hd + j·hd/2 + i.
  const i = Math.floor(within / 2);
  const j = within % 2;
  return head * headDim + j * half + i;
}

/** `data` [rows, columns] with its rows put in llama.cpp's rotary order. */
function permuteRows(data: Float32Array, rows: number, columns: number, headDim: number): Float32Array {
  const out = new Float32Array(data.length);
  for (let row = 0; row < rows; row++) {
    const from = permutedRow(row, headDim);
    out.set(data.subarray(from * columns, (from + 1) * columns), row * columns);
  }
  return out;
}

function needsPermute(config: ModelConfig, projection: Projection): boolean {
  return config.modelType === 'llama' && (projection === 'q_proj' || projection === 'k_proj');
}

function float32(tensor: HostTensor): Float32Array {
  if (tensor.dtype !== 'float32') throw new Error(`GGUF export: expected float32 weights, got ${tensor.dtype}`);
  return tensor.data as Float32Array;
}

export interface BaseGgufInput {
  config: ModelConfig;
  weights: ReadonlyMap<string, HostTensor>;
  tokenizerJson: Record<string, unknown>;
  tokenizer: Tokenizer;
  name: string;
  precision: GgufPrecision;
}

/** Metadata and tensors of the base model as llama.cpp loads it. */
export function baseGguf(input: BaseGgufInput): {
  metadata: Map<string, GgufValue>;
  tensors: GgufTensor[];
  /** Matrices kept at f16 because Q8_0 needs rows of whole 32-value blocks. */
  fallbacks: string[];
} {
  const { config, weights, precision } = input;
  const arch = ggufArchitecture(config.modelType, config);
  const metadata = new Map<string, GgufValue>();
  const u32 = (key: string, value: number) => metadata.set(key, { type: 'uint32', value });
  const f32 = (key: string, value: number) => metadata.set(key, { type: 'float32', value });
  metadata.set('general.architecture', { type: 'string', value: arch });
  metadata.set('general.type', { type: 'string', value: 'model' });
  metadata.set('general.name', { type: 'string', value: input.name });
  u32('general.file_type', FILE_TYPE[precision]);
  u32('general.quantization_version', 2);
  u32(`${arch}.vocab_size`, config.vocabSize);
  u32(`${arch}.context_length`, config.maxPositionEmbeddings);
  u32(`${arch}.embedding_length`, config.hiddenSize);
  u32(`${arch}.block_count`, config.numLayers);
  u32(`${arch}.feed_forward_length`, config.intermediateSize);
  u32(`${arch}.attention.head_count`, config.numHeads);
  u32(`${arch}.attention.head_count_kv`, config.numKvHeads);
  u32(`${arch}.attention.key_length`, config.headDim);
  u32(`${arch}.attention.value_length`, config.headDim);
  u32(`${arch}.rope.dimension_count`, config.headDim);
  f32(`${arch}.rope.freq_base`, config.ropeTheta);
  f32(`${arch}.attention.layer_norm_rms_epsilon`, config.rmsNormEps);
  if (config.ropeScaling?.type === 'linear') {
    metadata.set(`${arch}.rope.scaling.type`, { type: 'string', value: 'linear' });
    f32(`${arch}.rope.scaling.factor`, config.ropeScaling.factor);
  }
  for (const [key, value] of tokenizerMetadata(input.tokenizerJson, input.tokenizer, config)) metadata.set(key, value);

  const tensors: GgufTensor[] = [];
  const fallbacks: string[] = [];
  const weight = (name: string): HostTensor => {
    const tensor = weights.get(name);
    if (!tensor) throw new Error(`GGUF export: the base has no tensor "${name}"`);
    return tensor;
  };
  const vector = (name: string, source: string, transform?: (d: Float32Array) => Float32Array) => {
    const tensor = weight(source);
    tensors.push({
      name,
      shape: tensor.shape,
      type: 'F32',
      values: () => (transform ? transform(float32(tensor)) : float32(tensor)),
    });
  };
  const matrix = (name: string, source: string, transform?: (d: Float32Array) => Float32Array) => {
    const tensor = weight(source);
    let type = MATRIX_TYPE[precision];
    if (!typeFits(tensor.shape, type)) {
      type = 'F16';
      fallbacks.push(name);
    }
    tensors.push({
      name,
      shape: tensor.shape,
      type,
      values: () => (transform ? transform(float32(tensor)) : float32(tensor)),
    });
  };

  matrix('token_embd.weight', EMBED_TOKENS_WEIGHT);
  if (config.ropeScaling?.type === 'llama3') {
    const factors = llama3RopeFactors(config);
    tensors.push({ name: 'rope_freqs.weight', shape: [factors.length], type: 'F32', values: () => factors });
  }
  for (let layer = 0; layer < config.numLayers; layer++) {
    const blk = `blk.${layer}`;
    vector(`${blk}.attn_norm.weight`, layerNormWeightName(layer, 'input_layernorm'));
    for (const projection of ['q_proj', 'k_proj', 'v_proj', 'o_proj'] as const) {
      const [rows, columns] = weight(projectionWeightName(layer, projection)).shape;
      const permute = needsPermute(config, projection)
        ? (d: Float32Array) => permuteRows(d, rows, columns, config.headDim)
        : undefined;
      matrix(`${blk}.${PROJECTION_TENSOR[projection]}.weight`, projectionWeightName(layer, projection), permute);
      if (config.attentionBias && projection !== 'o_proj') {
        const permuteBias = needsPermute(config, projection)
          ? (d: Float32Array) => permuteRows(d, rows, 1, config.headDim)
          : undefined;
        vector(`${blk}.${PROJECTION_TENSOR[projection]}.bias`, projectionBiasName(layer, projection), permuteBias);
      }
    }
    if (config.qkNorm) {
      vector(`${blk}.attn_q_norm.weight`, headNormWeightName(layer, 'q_norm'));
      vector(`${blk}.attn_k_norm.weight`, headNormWeightName(layer, 'k_norm'));
    }
    vector(`${blk}.ffn_norm.weight`, layerNormWeightName(layer, 'post_attention_layernorm'));
    for (const projection of ['gate_proj', 'up_proj', 'down_proj'] as const)
      matrix(`${blk}.${PROJECTION_TENSOR[projection]}.weight`, projectionWeightName(layer, projection));
  }
  vector('output_norm.weight', FINAL_NORM_WEIGHT);
  if (!config.tieWordEmbeddings) matrix('output.weight', LM_HEAD_WEIGHT);
  return { metadata, tensors, fallbacks };
}

/** llama3 RoPE scaling as the per-frequency divisors llama.cpp reads from rope_freqs.weight. */
function llama3RopeFactors(config: ModelConfig): Float32Array {
  const scaling = config.ropeScaling;
  if (scaling?.type !== 'llama3') throw new Error('llama3RopeFactors: no llama3 rope_scaling');
  const half = config.headDim / 2;
  const lowWavelength = scaling.originalMaxPositionEmbeddings / scaling.lowFreqFactor;
  const highWavelength = scaling.originalMaxPositionEmbeddings / scaling.highFreqFactor;
  const factors = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    const frequency = 1 / config.ropeTheta ** ((2 * i) / config.headDim);
    const wavelength = (2 * Math.PI) / frequency;
    if (wavelength < highWavelength) factors[i] = 1;
    else if (wavelength > lowWavelength) factors[i] = scaling.factor;
    else {
      const smooth =
        (scaling.originalMaxPositionEmbeddings / wavelength - scaling.lowFreqFactor) /
        (scaling.highFreqFactor - scaling.lowFreqFactor);
      factors[i] = 1 / ((1 - smooth) / scaling.factor + smooth);
    }
  }
  return factors;
}

/** llama.cpp's pre-tokenizer names by the Split regex of tokenizer.json whose splits they reproduce. */
const PRE_TOKENIZERS: ReadonlyArray<{ name: string; regex: string }> = [
  {
    name: 'qwen2',
    regex:
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  },
  {
    name: 'llama-bpe',
    regex:
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  },
];

/** tokenizer.ggml.pre for a byte-level BPE tokenizer.json, or an error saying why none fits. */
export function preTokenizerName(tokenizerJson: Record<string, unknown>): string {
  const pre = tokenizerJson.pre_tokenizer as Record<string, unknown> | null | undefined;
  const steps = pre?.type === 'Sequence' ? ((pre.pretokenizers as Array<Record<string, unknown>>) ?? []) : [pre];
  for (const step of steps) {
    if (step?.type === 'ByteLevel' && step.use_regex === true) return 'gpt-2';
    if (step?.type !== 'Split') continue;
    const regex = (step.pattern as { Regex?: unknown } | undefined)?.Regex;
    const known = PRE_TOKENIZERS.find((p) => p.regex === regex);
    if (known) return known.name;
    throw new Error(
      `GGUF export: the tokenizer's pre-tokenizer regex ${JSON.stringify(regex)} is none llama.cpp implements (known: ${PRE_TOKENIZERS.map((p) => p.name).join(', ')}, gpt-2)`,
    );
  }
  throw new Error('GGUF export: the tokenizer has no byte-level pre-tokenizer llama.cpp implements');
}

/** llama_token_type: NORMAL, CONTROL (special added tokens), USER_DEFINED, UNUSED (padding ids). */
const TOKEN_TYPE = { normal: 1, control: 3, userDefined: 4, unused: 5 } as const;

/** tokenizer.ggml.* for a byte-level BPE tokenizer.json: llama.cpp's "gpt2" tokenizer model. */
export function tokenizerMetadata(
  json: Record<string, unknown>,
  tokenizer: Tokenizer,
  config: ModelConfig,
): Map<string, GgufValue> {
  const model = json.model as Record<string, unknown> | undefined;
  const decoder = json.decoder as { type?: unknown } | null | undefined;
  if (model?.type !== 'BPE' || decoder?.type !== 'ByteLevel') {
    throw new Error(
      `GGUF export: only byte-level BPE tokenizers are written (this one is ${String(model?.type)} with a ${String(decoder?.type)} decoder)`,
    );
  }
  const pre = preTokenizerName(json);
  const vocab = model.vocab as Record<string, number>;
  const added = (json.added_tokens as Array<{ id: number; content: string; special: boolean }> | undefined) ?? [];
  const tokens: Array<string | undefined> = new Array(config.vocabSize);
  const types: number[] = new Array(config.vocabSize).fill(TOKEN_TYPE.unused);
  const place = (id: number, text: string, type: number) => {
    if (id >= config.vocabSize) {
      throw new Error(
        `GGUF export: token ${JSON.stringify(text)} has id ${id}, past the model's vocab_size ${config.vocabSize}`,
      );
    }
    tokens[id] = text;
    types[id] = type;
  };
  for (const [text, id] of Object.entries(vocab)) place(id, text, TOKEN_TYPE.normal);
  for (const token of added)
    place(token.id, token.content, token.special ? TOKEN_TYPE.control : TOKEN_TYPE.userDefined);
  const list = tokens.map((text, id) => text ?? `[PAD${id}]`);
  const merges = ((model.merges as Array<string | [string, string]>) ?? []).map((m) =>
    typeof m === 'string' ? m : m.join(' '),
  );

  const metadata = new Map<string, GgufValue>();
  metadata.set('tokenizer.ggml.model', { type: 'string', value: 'gpt2' });
  metadata.set('tokenizer.ggml.pre', { type: 'string', value: pre });
  metadata.set('tokenizer.ggml.tokens', { type: 'string[]', value: list });
  metadata.set('tokenizer.ggml.token_type', { type: 'int32[]', value: types });
  metadata.set('tokenizer.ggml.merges', { type: 'string[]', value: merges });
  const eos = [config.eosTokenId].flat()[0] ?? tokenizer.eos ?? undefined;
  const bos = config.bosTokenId ?? eos;
  if (bos !== undefined) metadata.set('tokenizer.ggml.bos_token_id', { type: 'uint32', value: bos });
  if (eos !== undefined) {
    metadata.set('tokenizer.ggml.eos_token_id', { type: 'uint32', value: eos });
    // Idiom pads with end of text; llama.cpp only needs an id.
    metadata.set('tokenizer.ggml.padding_token_id', { type: 'uint32', value: eos });
  }
  // Idiom's prompts start with the text or the FIM prefix marker, never a BOS.
  metadata.set('tokenizer.ggml.add_bos_token', { type: 'bool', value: false });
  metadata.set('tokenizer.ggml.add_eos_token', { type: 'bool', value: false });
  if (tokenizer.fim) {
    metadata.set('tokenizer.ggml.fim_pre_token_id', { type: 'uint32', value: tokenizer.fim.prefix });
    metadata.set('tokenizer.ggml.fim_suf_token_id', { type: 'uint32', value: tokenizer.fim.suffix });
    metadata.set('tokenizer.ggml.fim_mid_token_id', { type: 'uint32', value: tokenizer.fim.middle });
  }
  if (tokenizer.fileSeparator !== null)
    metadata.set('tokenizer.ggml.fim_sep_token_id', { type: 'uint32', value: tokenizer.fileSeparator });
  return metadata;
}

/** Metadata and tensors of a LoRA adapter as llama.cpp's --lora loads it. */
export function loraGguf(
  adapter: LoadedAdapter,
  config: ModelConfig,
  name: string,
): { metadata: Map<string, GgufValue>; tensors: GgufTensor[] } {
  const arch = ggufArchitecture(config.modelType, config);
  const { r, alpha, useRslora } = adapter.config;
  const metadata = new Map<string, GgufValue>();
  metadata.set('general.architecture', { type: 'string', value: arch });
  metadata.set('general.type', { type: 'string', value: 'adapter' });
  metadata.set('general.name', { type: 'string', value: name });
  metadata.set('adapter.type', { type: 'string', value: 'lora' });
  // llama.cpp scales B·A by alpha / r; rsLoRA's alpha / √r is the same scale with alpha·√r.
  metadata.set('adapter.lora.alpha', { type: 'float32', value: useRslora ? alpha * Math.sqrt(r) : alpha });
  const tensors: GgufTensor[] = [];
  for (const module of adapter.modules.values()) {
    const base = `blk.${module.layer}.${PROJECTION_TENSOR[module.target]}.weight`;
    const [rows, rank] = module.b.shape;
    const b = float32(module.b);
    tensors.push({ name: `${base}.lora_a`, shape: module.a.shape, type: 'F32', values: () => float32(module.a) });
    tensors.push({
      name: `${base}.lora_b`,
      shape: module.b.shape,
      type: 'F32',
      values: () => (needsPermute(config, module.target) ? permuteRows(b, rows, rank, config.headDim) : b),
    });
  }
  return { metadata, tensors };
}

/** A GGUF file already in the base model's folder (it then serves as the base), or null. */
export function ownGguf(baseDir: string): string | null {
  const found = fs
    .readdirSync(baseDir)
    .filter((name) => name.toLowerCase().endsWith('.gguf'))
    .sort();
  return found.length > 0 ? path.join(baseDir, found[0]) : null;
}
