// ModelConfig: the one object that sizes graphs, batches and sessions. It is Hugging Face's
// config.json for the llama / qwen2 / qwen3 family (RMSNorm, RoPE, SwiGLU, grouped-query
// attention, optional q/k/v bias, tied or untied embeddings, llama3 or linear RoPE scaling,
// qwen3's per-head q/k RMSNorm), with camelCase names.

import * as fs from 'node:fs';
import * as path from 'node:path';

export type ModelType = 'llama' | 'qwen2' | 'qwen3';

/** Hugging Face's rope_scaling: how the rotary inverse frequencies are stretched for long contexts. */
export type RopeScaling =
  | { type: 'linear'; factor: number }
  | {
      type: 'llama3';
      factor: number;
      lowFreqFactor: number;
      highFreqFactor: number;
      originalMaxPositionEmbeddings: number;
    };

export interface ModelConfig {
  modelType: ModelType;
  hiddenSize: number; // D
  numLayers: number; // num_hidden_layers
  numHeads: number; // H, num_attention_heads
  numKvHeads: number; // KV, num_key_value_heads (grouped-query attention when < numHeads)
  headDim: number; // hd
  intermediateSize: number; // F (SwiGLU)
  vocabSize: number; // V
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling?: RopeScaling;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean; // lm_head shares model.embed_tokens.weight
  attentionBias: boolean; // q/k/v projections have a bias (always for qwen2)
  qkNorm: boolean; // per-head RMSNorm on q and k before RoPE (qwen3: q_norm / k_norm, [headDim])
  bosTokenId?: number;
  eosTokenId?: number | number[];
  torchDtype?: string;
}

const SUPPORTED_MODEL_TYPES: readonly ModelType[] = ['llama', 'qwen2', 'qwen3'];

/** Parses and validates a Hugging Face config.json object; `source` names the file in errors. */
export function parseModelConfig(json: unknown, source = 'config.json'): ModelConfig {
  const fail = (message: string): never => {
    throw new Error(`${source}: ${message}`);
  };
  if (json === null || typeof json !== 'object' || Array.isArray(json)) fail('model config must be a JSON object');
  const raw = json as Record<string, unknown>;

  const modelType = raw.model_type;
  if (modelType === undefined) fail('missing field "model_type"');
  if (typeof modelType !== 'string') fail(`field "model_type" must be a string, got ${describe(modelType)}`);
  if (!SUPPORTED_MODEL_TYPES.includes(modelType as ModelType)) {
    fail(`unsupported model_type "${modelType}" (supported: ${SUPPORTED_MODEL_TYPES.join(', ')})`);
  }

  const positiveInt = (key: string, fallback?: number): number => {
    const value = raw[key];
    if (value === undefined || value === null) {
      if (fallback !== undefined) return fallback;
      return fail(`missing field "${key}"`);
    }
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
      return fail(`field "${key}" must be a positive integer, got ${describe(value)}`);
    }
    return value;
  };
  const positiveNumber = (key: string, fallback?: number): number => {
    const value = raw[key];
    if (value === undefined || value === null) {
      if (fallback !== undefined) return fallback;
      return fail(`missing field "${key}"`);
    }
    if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
      return fail(`field "${key}" must be a positive number, got ${describe(value)}`);
    }
    return value;
  };
  const boolean = (key: string, fallback: boolean): boolean => {
    const value = raw[key];
    if (value === undefined || value === null) return fallback;
    if (typeof value !== 'boolean') return fail(`field "${key}" must be true or false, got ${describe(value)}`);
    return value;
  };

  const hiddenAct = raw.hidden_act ?? 'silu';
  if (hiddenAct !== 'silu') fail(`unsupported hidden_act ${describe(hiddenAct)} (only "silu" is supported)`);
  const ropeScaling = parseRopeScaling(raw.rope_scaling, fail);
  if (raw.mlp_bias === true) fail('unsupported mlp_bias true (the MLP projections must have no bias)');
  if (modelType !== 'llama' && raw.use_sliding_window === true) {
    fail('unsupported use_sliding_window true (only full attention is supported)');
  }

  const hiddenSize = positiveInt('hidden_size');
  const numLayers = positiveInt('num_hidden_layers');
  const numHeads = positiveInt('num_attention_heads');
  const numKvHeads = positiveInt('num_key_value_heads', numHeads);
  if (numHeads % numKvHeads !== 0) {
    fail(`num_attention_heads (${numHeads}) must be a multiple of num_key_value_heads (${numKvHeads})`);
  }
  if (raw.head_dim === undefined || raw.head_dim === null) {
    if (hiddenSize % numHeads !== 0) {
      fail(
        `hidden_size (${hiddenSize}) must be divisible by num_attention_heads (${numHeads}) when head_dim is absent`,
      );
    }
  }
  const headDim = positiveInt('head_dim', hiddenSize / numHeads);
  if (headDim % 2 !== 0) fail(`head_dim (${headDim}) must be even for rotary embeddings`);

  const config: ModelConfig = {
    modelType: modelType as ModelType,
    hiddenSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    intermediateSize: positiveInt('intermediate_size'),
    vocabSize: positiveInt('vocab_size'),
    rmsNormEps: positiveNumber('rms_norm_eps'),
    ropeTheta: positiveNumber('rope_theta', 10000),
    maxPositionEmbeddings: positiveInt('max_position_embeddings'),
    tieWordEmbeddings: boolean('tie_word_embeddings', false),
    attentionBias: modelType === 'qwen2' ? true : boolean('attention_bias', false),
    qkNorm: modelType === 'qwen3',
  };
  if (ropeScaling) config.ropeScaling = ropeScaling;

  const tokenIdField = (key: string): number | undefined => {
    const value = raw[key];
    if (value === undefined || value === null) return undefined;
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
      return fail(`field "${key}" must be a non-negative integer, got ${describe(value)}`);
    }
    return value;
  };
  const bosTokenId = tokenIdField('bos_token_id');
  if (bosTokenId !== undefined) config.bosTokenId = bosTokenId;
  const eos = raw.eos_token_id;
  if (Array.isArray(eos)) {
    // Llama 3 lists several end tokens.
    if (!eos.every((id) => typeof id === 'number' && Number.isSafeInteger(id) && id >= 0)) {
      fail(`field "eos_token_id" must be a non-negative integer or a list of them, got ${describe(eos)}`);
    }
    config.eosTokenId = [...(eos as number[])];
  } else {
    const eosTokenId = tokenIdField('eos_token_id');
    if (eosTokenId !== undefined) config.eosTokenId = eosTokenId;
  }
  const torchDtype = raw.torch_dtype ?? raw.dtype;
  if (torchDtype !== undefined && torchDtype !== null) {
    if (typeof torchDtype !== 'string') fail(`field "torch_dtype" must be a string, got ${describe(torchDtype)}`);
    config.torchDtype = torchDtype as string;
  }
  return config;
}

/**
 * rope_scaling: null, absent, type "default", "linear" or "llama3" (HF spells the key `type` or
 * `rope_type`); anything else fails naming the field and the value.
 */
function parseRopeScaling(value: unknown, fail: (message: string) => never): RopeScaling | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'object' || Array.isArray(value)) {
    return fail(`field "rope_scaling" must be an object or null, got ${describe(value)}`);
  }
  const raw = value as Record<string, unknown>;
  const key = raw.rope_type !== undefined ? 'rope_type' : 'type';
  const type = raw[key];
  if (type === undefined) return fail('field "rope_scaling" has no "rope_type"');
  if (type === 'default') return undefined;
  const number = (key: string): number => {
    const v = raw[key];
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
      return fail(`field "rope_scaling.${key}" must be a positive number, got ${describe(v)}`);
    }
    return v;
  };
  if (type === 'linear') return { type, factor: number('factor') };
  if (type === 'llama3') {
    const scaling: RopeScaling = {
      type,
      factor: number('factor'),
      lowFreqFactor: number('low_freq_factor'),
      highFreqFactor: number('high_freq_factor'),
      originalMaxPositionEmbeddings: number('original_max_position_embeddings'),
    };
    if (scaling.highFreqFactor <= scaling.lowFreqFactor) {
      fail(
        `field "rope_scaling.high_freq_factor" (${scaling.highFreqFactor}) must exceed low_freq_factor (${scaling.lowFreqFactor})`,
      );
    }
    return scaling;
  }
  const shown = typeof type === 'string' ? JSON.stringify(type) : describe(type);
  return fail(`unsupported rope_scaling.${key} ${shown} (supported: linear, llama3)`);
}

/** Reads and parses `dir/config.json`. */
export function loadModelConfig(dir: string): ModelConfig {
  return readModelConfigFile(path.join(dir, 'config.json'));
}

/** Reads and parses a Hugging Face config.json at `file`. */
export function readModelConfigFile(file: string): ModelConfig {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    throw new Error(`${file}: cannot read model config (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new Error(`${file}: invalid JSON (${(error as Error).message})`);
  }
  return parseModelConfig(json, file);
}

/** The Hugging Face config.json object for `cfg`; parseModelConfig(toHfConfigJson(cfg)) equals cfg. */
export function toHfConfigJson(cfg: ModelConfig): Record<string, unknown> {
  const json: Record<string, unknown> = {
    architectures: [ARCHITECTURES[cfg.modelType]],
    model_type: cfg.modelType,
    hidden_act: 'silu',
    hidden_size: cfg.hiddenSize,
    num_hidden_layers: cfg.numLayers,
    num_attention_heads: cfg.numHeads,
    num_key_value_heads: cfg.numKvHeads,
    head_dim: cfg.headDim,
    intermediate_size: cfg.intermediateSize,
    vocab_size: cfg.vocabSize,
    rms_norm_eps: cfg.rmsNormEps,
    rope_theta: cfg.ropeTheta,
    rope_scaling: ropeScalingJson(cfg.ropeScaling),
    max_position_embeddings: cfg.maxPositionEmbeddings,
    tie_word_embeddings: cfg.tieWordEmbeddings,
    attention_dropout: 0,
  };
  if (cfg.modelType !== 'qwen2') json.attention_bias = cfg.attentionBias;
  if (cfg.modelType === 'llama') json.mlp_bias = false;
  else json.use_sliding_window = false;
  if (cfg.bosTokenId !== undefined) json.bos_token_id = cfg.bosTokenId;
  if (cfg.eosTokenId !== undefined)
    json.eos_token_id = Array.isArray(cfg.eosTokenId) ? [...cfg.eosTokenId] : cfg.eosTokenId;
  if (cfg.torchDtype !== undefined) json.torch_dtype = cfg.torchDtype;
  return json;
}

const ARCHITECTURES: Record<ModelType, string> = {
  llama: 'LlamaForCausalLM',
  qwen2: 'Qwen2ForCausalLM',
  qwen3: 'Qwen3ForCausalLM',
};

function ropeScalingJson(scaling: RopeScaling | undefined): Record<string, unknown> | null {
  if (!scaling) return null;
  if (scaling.type === 'linear') return { rope_type: 'linear', factor: scaling.factor };
  return {
    rope_type: 'llama3',
    factor: scaling.factor,
    low_freq_factor: scaling.lowFreqFactor,
    high_freq_factor: scaling.highFreqFactor,
    original_max_position_embeddings: scaling.originalMaxPositionEmbeddings,
  };
}

// ---- Hugging Face tensor names -------------------------------------------------------------

export const EMBED_TOKENS_WEIGHT = 'model.embed_tokens.weight';
export const FINAL_NORM_WEIGHT = 'model.norm.weight';
export const LM_HEAD_WEIGHT = 'lm_head.weight';

export type AttentionProjection = 'q_proj' | 'k_proj' | 'v_proj' | 'o_proj';
export type MlpProjection = 'gate_proj' | 'up_proj' | 'down_proj';
export type Projection = AttentionProjection | MlpProjection;
export const PROJECTIONS: readonly Projection[] = [
  'q_proj',
  'k_proj',
  'v_proj',
  'o_proj',
  'gate_proj',
  'up_proj',
  'down_proj',
];
export type LayerNorm = 'input_layernorm' | 'post_attention_layernorm';
/** qwen3's per-head norms, [headDim] each, applied to q and k before RoPE. */
export type HeadNorm = 'q_norm' | 'k_norm';

/** `model.layers.{layer}.self_attn.q_proj` / `model.layers.{layer}.mlp.gate_proj` (PEFT target module path). */
export function projectionModule(layer: number, projection: Projection): string {
  const block = isAttentionProjection(projection) ? 'self_attn' : 'mlp';
  return `model.layers.${layer}.${block}.${projection}`;
}

export function isAttentionProjection(projection: Projection): projection is AttentionProjection {
  return projection === 'q_proj' || projection === 'k_proj' || projection === 'v_proj' || projection === 'o_proj';
}

export function projectionWeightName(layer: number, projection: Projection): string {
  return `${projectionModule(layer, projection)}.weight`;
}

/** Only q/k/v carry a bias, and only when cfg.attentionBias. */
export function projectionBiasName(layer: number, projection: 'q_proj' | 'k_proj' | 'v_proj'): string {
  return `${projectionModule(layer, projection)}.bias`;
}

export function layerNormWeightName(layer: number, norm: LayerNorm): string {
  return `model.layers.${layer}.${norm}.weight`;
}

export function headNormWeightName(layer: number, norm: HeadNorm): string {
  return `model.layers.${layer}.self_attn.${norm}.weight`;
}

/** [out, in] in torch Linear layout (y = x W^T). */
export function projectionShape(cfg: ModelConfig, projection: Projection): [number, number] {
  const D = cfg.hiddenSize;
  const qWidth = cfg.numHeads * cfg.headDim;
  const kvWidth = cfg.numKvHeads * cfg.headDim;
  switch (projection) {
    case 'q_proj':
      return [qWidth, D];
    case 'k_proj':
    case 'v_proj':
      return [kvWidth, D];
    case 'o_proj':
      return [D, qWidth];
    case 'gate_proj':
    case 'up_proj':
      return [cfg.intermediateSize, D];
    case 'down_proj':
      return [D, cfg.intermediateSize];
  }
}

export interface WeightSpec {
  name: string;
  shape: number[];
}

/** Every tensor a checkpoint of `cfg` holds, in Hugging Face names and shapes, in model order. */
export function weightNames(cfg: ModelConfig): WeightSpec[] {
  const D = cfg.hiddenSize;
  const specs: WeightSpec[] = [{ name: EMBED_TOKENS_WEIGHT, shape: [cfg.vocabSize, D] }];
  for (let layer = 0; layer < cfg.numLayers; layer++) {
    specs.push({ name: layerNormWeightName(layer, 'input_layernorm'), shape: [D] });
    for (const projection of ['q_proj', 'k_proj', 'v_proj', 'o_proj'] as const) {
      specs.push({ name: projectionWeightName(layer, projection), shape: projectionShape(cfg, projection) });
      if (cfg.attentionBias && projection !== 'o_proj') {
        specs.push({ name: projectionBiasName(layer, projection), shape: [projectionShape(cfg, projection)[0]] });
      }
    }
    if (cfg.qkNorm) {
      specs.push({ name: headNormWeightName(layer, 'q_norm'), shape: [cfg.headDim] });
      specs.push({ name: headNormWeightName(layer, 'k_norm'), shape: [cfg.headDim] });
    }
    specs.push({ name: layerNormWeightName(layer, 'post_attention_layernorm'), shape: [D] });
    for (const projection of ['gate_proj', 'up_proj', 'down_proj'] as const) {
      specs.push({ name: projectionWeightName(layer, projection), shape: projectionShape(cfg, projection) });
    }
  }
  specs.push({ name: FINAL_NORM_WEIGHT, shape: [D] });
  if (!cfg.tieWordEmbeddings) specs.push({ name: LM_HEAD_WEIGHT, shape: [cfg.vocabSize, D] });
  return specs;
}

/** Number of stored parameters (a tied lm_head counted once). */
export function countParameters(cfg: ModelConfig): number {
  let total = 0;
  for (const spec of weightNames(cfg)) total += spec.shape.reduce((a, b) => a * b, 1);
  return total;
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return `array ${truncate(JSON.stringify(value))}`;
  if (typeof value === 'string') return `string ${truncate(JSON.stringify(value))}`;
  if (typeof value === 'object') return 'object';
  return `${typeof value} ${String(value)}`;
}

function truncate(text: string): string {
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}
