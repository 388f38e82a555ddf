// LoRA adapters in Hugging Face PEFT's on-disk format, so PEFT, vLLM and llama.cpp's converter read
// what Idiom trains, and Idiom loads adapters trained elsewhere:
//   adapter_config.json        peft_type LORA, r, lora_alpha, target_modules, …
//   adapter_model.safetensors  base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight [r, in]
//                              base_model.model.model.layers.{i}.self_attn.q_proj.lora_B.weight [out, r]
//                              (mlp.gate_proj / up_proj / down_proj likewise)
//   manifest.json              Idiom's provenance (absent in adapters made elsewhere)
// PEFT strips the adapter name ("default") from the keys when saving; older files that kept it
// (`lora_A.default.weight`) load too.

import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  PROJECTIONS,
  isAttentionProjection,
  projectionModule,
  projectionShape,
  type ModelConfig,
  type Projection,
} from '../model/config';
import { loraScaling, validateLora, type LoraConfig } from '../model/lora';
import {
  readSafetensors,
  serializeSafetensors,
  writeFileAtomically,
  type SafetensorsTensor,
} from '../model/safetensors';
import { elementCount, type HostTensor } from '../model/tensor';
import {
  ADAPTER_CONFIG_FILE,
  ADAPTER_PICKLE_FILE,
  ADAPTER_WEIGHTS_FILE,
  FULL_CONFIG_FILE,
  assertFolder,
  checkBaseHash,
  checkWeightsHash,
  readManifest,
  writeFolderAtomically,
  writeTextAtomically,
} from './folder';
import {
  MANIFEST_FILE,
  completeManifest,
  manifestJson,
  sha256Hex,
  type AdapterManifest,
  type ManifestDraft,
} from './manifest';

/** What the trainer chose, plus PEFT's other adapter_config.json fields; the input of writeAdapter. */
export interface LoraSettings extends LoraConfig {
  /** Layers that carry adapters; default every layer. */
  layers?: readonly number[] | null;
  dropout?: number;
  /** scaling = alpha / √r instead of alpha / r. */
  useRslora?: boolean;
  /** Written as base_model_name_or_path (HF id or folder name of the base). */
  baseModelNameOrPath?: string | null;
}

/** An adapter's configuration as loaded and resolved against a base model config. */
export interface AdapterConfig {
  r: number;
  alpha: number;
  /** alpha / r, or alpha / √r with rsLoRA: the factor on B·A. */
  scaling: number;
  useRslora: boolean;
  /** Projections that carry an adapter, in PROJECTIONS order. */
  targets: Projection[];
  /** Layers that carry an adapter, ascending. */
  layers: number[];
  /** Every adapted module path (`model.layers.3.mlp.up_proj`), in model order. */
  modules: string[];
  dropout: number;
  baseModelNameOrPath: string | null;
}

export interface LoraModule {
  layer: number;
  target: Projection;
  /** [r, in] */
  a: HostTensor;
  /** [out, r] */
  b: HostTensor;
}

export interface LoadedAdapter {
  dir: string;
  config: AdapterConfig;
  /** Module path (`model.layers.0.self_attn.q_proj`) → A/B, float32. */
  modules: Map<string, LoraModule>;
  manifest: AdapterManifest | null;
  /** sha256 of adapter_model.safetensors. */
  weightsSha256: string;
}

const KEY_PREFIX = 'base_model.model.';
const KEY_PATTERN =
  /^base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.([a-z_]+)\.lora_(A|B)(?:\.default)?\.weight$/;
/** Modules of the llama/qwen2 family that PEFT could target but Idiom's graphs give no adapter. */
const UNSUPPORTED_MODULES = ['lm_head', 'model.embed_tokens'];

/** PEFT's safetensors key for one LoRA matrix. */
export function peftKey(layer: number, projection: Projection, which: 'A' | 'B'): string {
  return `${KEY_PREFIX}${projectionModule(layer, projection)}.lora_${which}.weight`;
}

/** The (layer, projection, A|B) a PEFT key names, or null when it is not a LoRA key of a known module. */
export function parsePeftKey(key: string): { layer: number; projection: Projection; which: 'A' | 'B' } | null {
  const match = KEY_PATTERN.exec(key);
  if (!match) return null;
  const [, layerText, block, name, which] = match;
  if (!PROJECTIONS.includes(name as Projection)) return null;
  const projection = name as Projection;
  if ((block === 'self_attn') !== isAttentionProjection(projection)) return null;
  const layer = Number(layerText);
  if (!Number.isSafeInteger(layer) || String(layer) !== layerText) return null;
  return { layer, projection, which: which as 'A' | 'B' };
}

/** adapter_config.json as current PEFT writes it (sorted keys), for `settings`. */
export function peftConfigJson(settings: LoraSettings, baseConfig?: ModelConfig): Record<string, unknown> {
  validateSettings(settings, baseConfig);
  const targets = PROJECTIONS.filter((p) => settings.targets.includes(p));
  const layers = settings.layers ? [...settings.layers].sort((a, b) => a - b) : null;
  return {
    alpha_pattern: {},
    auto_mapping: null,
    base_model_name_or_path: settings.baseModelNameOrPath ?? null,
    bias: 'none',
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layer_replication: null,
    layers_pattern: null,
    layers_to_transform: layers,
    loftq_config: {},
    lora_alpha: settings.alpha,
    lora_dropout: settings.dropout ?? 0,
    megatron_config: null,
    megatron_core: 'megatron.core',
    modules_to_save: null,
    peft_type: 'LORA',
    r: settings.r,
    rank_pattern: {},
    revision: null,
    target_modules: targets,
    task_type: 'CAUSAL_LM',
    use_dora: false,
    use_rslora: settings.useRslora ?? false,
  };
}

function validateSettings(settings: LoraSettings, baseConfig?: ModelConfig): void {
  validateLora(settings);
  const dropout = settings.dropout ?? 0;
  if (!Number.isFinite(dropout) || dropout < 0 || dropout >= 1)
    throw new Error(`LoRA dropout must be in [0, 1), got ${dropout}`);
  for (const layer of settings.layers ?? []) {
    if (!Number.isSafeInteger(layer) || layer < 0 || (baseConfig && layer >= baseConfig.numLayers)) {
      throw new Error(
        `LoRA layer ${layer} is out of range${baseConfig ? ` (the base has ${baseConfig.numLayers} layers)` : ''}`,
      );
    }
  }
}

/**
 * Validates a parsed adapter_config.json and resolves its target modules against `baseConfig`
 * the way PEFT does (a list entry matches a module named exactly that or ending in ".entry"; a
 * string is a regular expression matched against the full module name; "all-linear").
 */
export function parsePeftConfig(json: unknown, baseConfig: ModelConfig, source = ADAPTER_CONFIG_FILE): AdapterConfig {
  const fail = (message: string): never => {
    throw new Error(`${source}: ${message}`);
  };
  if (json === null || typeof json !== 'object' || Array.isArray(json)) fail('must be a JSON object');
  const raw = json as Record<string, unknown>;
  const isEmpty = (value: unknown): boolean =>
    value === undefined ||
    value === null ||
    value === false ||
    (Array.isArray(value) && value.length === 0) ||
    (typeof value === 'object' && Object.keys(value as object).length === 0);

  if (raw.peft_type === undefined) fail('missing "peft_type" (not a PEFT adapter config)');
  if (raw.peft_type !== 'LORA')
    fail(`peft_type is ${JSON.stringify(raw.peft_type)}; only "LORA" adapters are supported`);
  if (raw.task_type !== undefined && raw.task_type !== null && raw.task_type !== 'CAUSAL_LM') {
    fail(`task_type is ${JSON.stringify(raw.task_type)}; only "CAUSAL_LM" adapters are supported`);
  }
  const r = raw.r;
  if (r === undefined) fail('missing "r"');
  if (typeof r !== 'number' || !Number.isSafeInteger(r) || r < 1)
    fail(`"r" must be a positive integer, got ${JSON.stringify(r)}`);
  const alpha = raw.lora_alpha;
  if (alpha === undefined) fail('missing "lora_alpha"');
  if (typeof alpha !== 'number' || !Number.isFinite(alpha) || alpha <= 0)
    fail(`"lora_alpha" must be a positive number, got ${JSON.stringify(alpha)}`);
  const dropout = raw.lora_dropout ?? 0;
  if (typeof dropout !== 'number' || !Number.isFinite(dropout) || dropout < 0 || dropout >= 1)
    fail(`"lora_dropout" must be in [0, 1), got ${JSON.stringify(dropout)}`);
  const useRslora = raw.use_rslora ?? false;
  if (typeof useRslora !== 'boolean') fail(`"use_rslora" must be true or false, got ${JSON.stringify(useRslora)}`);
  const bias = raw.bias ?? 'none';
  if (bias !== 'none')
    fail(`bias is ${JSON.stringify(bias)}; only "none" is supported (Idiom adapters train no biases)`);
  if (raw.fan_in_fan_out === true)
    fail('fan_in_fan_out true is for GPT-2 style Conv1D layers; llama/qwen2 adapters use false');
  if (raw.use_dora === true) fail('use_dora true (DoRA) is not supported, only plain LoRA');
  if (raw.lora_bias === true) fail('lora_bias true is not supported (Idiom adapters train no biases)');
  if (!isEmpty(raw.modules_to_save))
    fail(
      `modules_to_save ${JSON.stringify(raw.modules_to_save)} is not supported (only LoRA matrices, no full modules)`,
    );
  if (!isEmpty(raw.rank_pattern)) fail('rank_pattern (per-module ranks) is not supported; every module must use "r"');
  if (!isEmpty(raw.alpha_pattern))
    fail('alpha_pattern (per-module alphas) is not supported; every module must use "lora_alpha"');
  if (!isEmpty(raw.layer_replication)) fail('layer_replication is not supported');
  const baseName = raw.base_model_name_or_path ?? null;
  if (baseName !== null && typeof baseName !== 'string')
    fail(`"base_model_name_or_path" must be a string, got ${JSON.stringify(baseName)}`);

  let layerFilter: Set<number> | null = null;
  const layersToTransform = raw.layers_to_transform;
  if (layersToTransform !== undefined && layersToTransform !== null) {
    const list = typeof layersToTransform === 'number' ? [layersToTransform] : layersToTransform;
    if (!Array.isArray(list) || !list.every((l) => typeof l === 'number' && Number.isSafeInteger(l) && l >= 0)) {
      fail(`"layers_to_transform" must be a layer index or a list of them, got ${JSON.stringify(layersToTransform)}`);
    }
    for (const layer of list as number[]) {
      if (layer >= baseConfig.numLayers)
        fail(`layers_to_transform names layer ${layer}, but the base has ${baseConfig.numLayers} layers`);
    }
    layerFilter = new Set(list as number[]);
  }

  const candidates: Array<{ module: string; layer: number; projection: Projection }> = [];
  for (let layer = 0; layer < baseConfig.numLayers; layer++) {
    for (const projection of PROJECTIONS)
      candidates.push({ module: projectionModule(layer, projection), layer, projection });
  }
  const targetModules = raw.target_modules;
  if (targetModules === undefined || targetModules === null) fail('missing "target_modules"');
  let matches: (name: string) => boolean;
  if (targetModules === 'all-linear') {
    matches = (name) => !UNSUPPORTED_MODULES.includes(name);
  } else if (typeof targetModules === 'string') {
    let pattern: RegExp;
    try {
      pattern = new RegExp(`^(?:${targetModules})$`);
    } catch (error) {
      return fail(
        `"target_modules" regular expression ${JSON.stringify(targetModules)} is invalid (${(error as Error).message})`,
      );
    }
    matches = (name) => pattern.test(name);
    for (const name of UNSUPPORTED_MODULES) {
      if (matches(name))
        fail(
          `target_modules ${JSON.stringify(targetModules)} matches ${name}, which Idiom adapters do not support (${PROJECTIONS.join(', ')} only)`,
        );
    }
    if (!candidates.some((c) => matches(c.module))) {
      fail(
        `target_modules ${JSON.stringify(targetModules)} matches no module of this model (known: ${PROJECTIONS.join(', ')})`,
      );
    }
  } else if (
    Array.isArray(targetModules) &&
    targetModules.length > 0 &&
    targetModules.every((t) => typeof t === 'string')
  ) {
    const entries = targetModules as string[];
    const hit = (name: string, entry: string): boolean => name === entry || name.endsWith(`.${entry}`);
    for (const entry of entries) {
      if (UNSUPPORTED_MODULES.some((name) => hit(name, entry))) {
        fail(`target module "${entry}" is not supported (Idiom adapters cover ${PROJECTIONS.join(', ')} only)`);
      }
      if (!candidates.some((c) => hit(c.module, entry)))
        fail(`unknown target module "${entry}" (known: ${PROJECTIONS.join(', ')})`);
    }
    matches = (name) => entries.some((entry) => hit(name, entry));
  } else {
    return fail(
      `"target_modules" must be a list of module names or a regular expression, got ${JSON.stringify(targetModules)}`,
    );
  }

  const selected = candidates.filter((c) => matches(c.module) && (layerFilter === null || layerFilter.has(c.layer)));
  const excluded = parseExcludeModules(raw.exclude_modules, fail);
  const modules = selected.filter((c) => !excluded(c.module));
  if (modules.length === 0) fail('target_modules, layers_to_transform and exclude_modules leave no module to adapt');
  return {
    r: r as number,
    alpha: alpha as number,
    scaling: loraScaling({ alpha: alpha as number, r: r as number, useRslora: useRslora as boolean }),
    targets: PROJECTIONS.filter((p) => modules.some((m) => m.projection === p)),
    layers: [...new Set(modules.map((m) => m.layer))].sort((a, b) => a - b),
    modules: modules.map((m) => m.module),
    dropout: dropout as number,
    baseModelNameOrPath: baseName as string | null,
    useRslora: useRslora as boolean,
  };
}

function parseExcludeModules(value: unknown, fail: (message: string) => never): (name: string) => boolean {
  if (value === undefined || value === null) return () => false;
  if (typeof value === 'string') {
    let pattern: RegExp;
    try {
      pattern = new RegExp(`^(?:${value})$`);
    } catch (error) {
      return fail(
        `"exclude_modules" regular expression ${JSON.stringify(value)} is invalid (${(error as Error).message})`,
      );
    }
    return (name) => pattern.test(name);
  }
  if (Array.isArray(value) && value.every((v) => typeof v === 'string')) {
    return (name) => (value as string[]).some((entry) => name === entry || name.endsWith(`.${entry}`));
  }
  return fail(`"exclude_modules" must be a list of module names or a regular expression, got ${JSON.stringify(value)}`);
}

export interface WriteAdapterInput {
  config: LoraSettings;
  /** PEFT keys → tensors (what the training graph exposes): A [r, in], B [out, r]. */
  tensors: ReadonlyMap<string, HostTensor> | Record<string, HostTensor>;
  manifest: ManifestDraft;
  /** Checks every shape against the base; strongly recommended. */
  baseConfig?: ModelConfig;
  /** Storage precision of the matrices; default float32. */
  dtype?: 'float32' | 'float16';
}

/**
 * Writes a PEFT adapter folder at `dir` (which must not exist) atomically, with its manifest (id,
 * created and the weights' sha256 filled in). Returns the final manifest.
 */
export async function writeAdapter(dir: string, input: WriteAdapterInput): Promise<AdapterManifest> {
  const { config: settings, baseConfig } = input;
  const configJson = peftConfigJson(settings, baseConfig);
  if (input.manifest.training.method !== 'lora') {
    throw new Error(
      `writeAdapter: manifest training.method is "${input.manifest.training.method}"; a PEFT adapter is method "lora" (use writeFullModel for "full")`,
    );
  }
  const entries = input.tensors instanceof Map ? [...input.tensors.entries()] : Object.entries(input.tensors);
  const layers = settings.layers ? new Set(settings.layers) : null;
  const expected = new Set<string>();
  const numLayers = baseConfig?.numLayers;
  const byModule = new Map<string, { layer: number; projection: Projection; a?: HostTensor; b?: HostTensor }>();
  for (const [key, tensor] of entries) {
    const parsed = parsePeftKey(key);
    if (!parsed) throw new Error(`writeAdapter: tensor key "${key}" does not belong to any known LoRA module`);
    const { layer, projection, which } = parsed;
    if (numLayers !== undefined && layer >= numLayers)
      throw new Error(`writeAdapter: tensor "${key}" names layer ${layer}, but the base has ${numLayers} layers`);
    if (!settings.targets.includes(projection))
      throw new Error(
        `writeAdapter: tensor "${key}" is for ${projection}, which is not in the targets [${settings.targets.join(', ')}]`,
      );
    if (layers && !layers.has(layer))
      throw new Error(
        `writeAdapter: tensor "${key}" is for layer ${layer}, which is not in layers [${[...layers].join(', ')}]`,
      );
    if (tensor.dtype !== 'float32' && tensor.dtype !== 'float16')
      throw new Error(`writeAdapter: tensor "${key}" is ${tensor.dtype}; LoRA matrices are float32 or float16`);
    const module = projectionModule(layer, projection);
    const slot = byModule.get(module) ?? { layer, projection };
    if (slot[which === 'A' ? 'a' : 'b']) throw new Error(`writeAdapter: two tensors for ${module} lora_${which}`);
    slot[which === 'A' ? 'a' : 'b'] = tensor;
    byModule.set(module, slot);
  }
  if (numLayers !== undefined) {
    for (let layer = 0; layer < numLayers; layer++) {
      if (layers && !layers.has(layer)) continue;
      for (const projection of settings.targets) expected.add(projectionModule(layer, projection));
    }
    for (const module of expected) {
      if (!byModule.has(module)) throw new Error(`writeAdapter: no tensors for ${module}, which the config targets`);
    }
  }
  const ordered = new Map<string, HostTensor>();
  for (const [module, slot] of byModule) {
    if (!slot.a || !slot.b)
      throw new Error(`writeAdapter: ${module} has lora_${slot.a ? 'A' : 'B'} but no lora_${slot.a ? 'B' : 'A'}`);
    const shape = baseConfig ? projectionShape(baseConfig, slot.projection) : undefined;
    checkPair(`writeAdapter: ${module}`, slot.a.shape, slot.b.shape, settings.r, shape);
    ordered.set(peftKey(slot.layer, slot.projection, 'A'), slot.a);
    ordered.set(peftKey(slot.layer, slot.projection, 'B'), slot.b);
  }

  const bytes = serializeSafetensors(
    ordered,
    { format: 'pt' },
    { floatDtype: input.dtype === 'float16' ? 'F16' : 'F32' },
  );
  const manifest = completeManifest(input.manifest, {
    files: [ADAPTER_WEIGHTS_FILE],
    sha256: sha256Hex(bytes),
    bytes: bytes.length,
  });
  await writeFolderAtomically(dir, async (temp) => {
    writeFileAtomically(path.join(temp, ADAPTER_WEIGHTS_FILE), [bytes]);
    writeTextAtomically(path.join(temp, ADAPTER_CONFIG_FILE), `${JSON.stringify(configJson, null, 2)}\n`);
    writeTextAtomically(path.join(temp, MANIFEST_FILE), manifestJson(manifest));
  });
  return manifest;
}

export interface LoadAdapterOptions {
  /** sha256 of the loaded base's weights (Checkpoint.sha256): refuses an adapter trained on another base. */
  baseSha256?: string;
}

/**
 * Loads and checks a PEFT LoRA adapter folder against the base it will be applied to. Refuses,
 * with one line each: a missing or invalid adapter_config.json, a pickle-only adapter, a corrupt
 * or truncated safetensors file, weights that differ from the manifest's hash, a manifest for
 * another base, unknown or unsupported modules, wrong shapes, mismatched ranks, missing halves.
 */
export async function loadAdapter(
  dir: string,
  baseConfig: ModelConfig,
  options: LoadAdapterOptions = {},
): Promise<LoadedAdapter> {
  assertFolder(dir);
  const configFile = path.join(dir, ADAPTER_CONFIG_FILE);
  if (!fs.existsSync(configFile)) {
    if (fs.existsSync(path.join(dir, FULL_CONFIG_FILE))) {
      throw new Error(
        `${dir}: holds a full fine-tuned model (${FULL_CONFIG_FILE}), not a LoRA adapter; load it with loadFullModel`,
      );
    }
    throw new Error(`${dir}: missing ${ADAPTER_CONFIG_FILE} (not a PEFT adapter folder)`);
  }
  let configJson: unknown;
  try {
    configJson = JSON.parse(await fs.promises.readFile(configFile, 'utf8'));
  } catch (error) {
    throw new Error(
      `${configFile}: ${error instanceof SyntaxError ? `invalid JSON (${error.message})` : `cannot read (${(error as NodeJS.ErrnoException).code})`}`,
    );
  }
  const config = parsePeftConfig(configJson, baseConfig, configFile);
  const manifest = readManifest(dir);
  if (manifest && manifest.training.method !== 'lora')
    throw new Error(
      `${dir}: manifest.json says method "${manifest.training.method}", but the folder holds a LoRA adapter`,
    );
  checkBaseHash(dir, manifest, options.baseSha256);

  const weightsFile = path.join(dir, ADAPTER_WEIGHTS_FILE);
  if (!fs.existsSync(weightsFile)) {
    if (fs.existsSync(path.join(dir, ADAPTER_PICKLE_FILE))) {
      throw new Error(
        `${dir}: only ${ADAPTER_PICKLE_FILE} (a PyTorch pickle) is present; Idiom reads ${ADAPTER_WEIGHTS_FILE} only (save with safe_serialization=True)`,
      );
    }
    throw new Error(`${dir}: missing ${ADAPTER_WEIGHTS_FILE}`);
  }
  const buffer = await fs.promises.readFile(weightsFile);
  const bytes = new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  const file = readSafetensors(bytes, weightsFile);
  const weightsSha256 = sha256Hex(bytes);
  checkWeightsHash(dir, manifest, [ADAPTER_WEIGHTS_FILE], weightsSha256);

  const wanted = new Set(config.modules);
  const halves = new Map<
    string,
    { layer: number; projection: Projection; a?: SafetensorsTensor; b?: SafetensorsTensor }
  >();
  for (const [key, tensor] of file.tensors) {
    const parsed = parsePeftKey(key);
    if (!parsed) throw new Error(`${weightsFile}: tensor "${key}" does not belong to any known LoRA module`);
    const { layer, projection, which } = parsed;
    if (layer >= baseConfig.numLayers)
      throw new Error(
        `${weightsFile}: tensor "${key}" is for layer ${layer}, but the base has ${baseConfig.numLayers} layers`,
      );
    const module = projectionModule(layer, projection);
    if (!wanted.has(module))
      throw new Error(`${weightsFile}: tensor "${key}" is for ${module}, which ${ADAPTER_CONFIG_FILE} does not target`);
    if (tensor.dtype !== 'F32' && tensor.dtype !== 'F16' && tensor.dtype !== 'BF16') {
      throw new Error(`${weightsFile}: tensor "${key}" is ${tensor.dtype}; LoRA matrices must be F32, F16 or BF16`);
    }
    const slot = halves.get(module) ?? { layer, projection };
    const side = which === 'A' ? 'a' : 'b';
    if (slot[side])
      throw new Error(`${weightsFile}: two tensors for ${module} lora_${which} (with and without ".default")`);
    slot[side] = tensor;
    halves.set(module, slot);
  }

  const modules = new Map<string, LoraModule>();
  for (const module of config.modules) {
    const slot = halves.get(module);
    if (!slot?.a || !slot.b) {
      const missing = !slot ? 'lora_A and lora_B' : !slot.a ? 'lora_A' : 'lora_B';
      throw new Error(`${weightsFile}: missing ${missing} for ${module}, which ${ADAPTER_CONFIG_FILE} targets`);
    }
    checkPair(
      `${weightsFile}: ${module}`,
      slot.a.shape,
      slot.b.shape,
      config.r,
      projectionShape(baseConfig, slot.projection),
    );
    modules.set(module, {
      layer: slot.layer,
      target: slot.projection,
      a: { dtype: 'float32', shape: [...slot.a.shape], data: Float32Array.from(slot.a.toFloat32()) },
      b: { dtype: 'float32', shape: [...slot.b.shape], data: Float32Array.from(slot.b.toFloat32()) },
    });
  }
  return { dir, config, modules, manifest, weightsSha256 };
}

/** A [r', in] and B [out, r''] must agree with each other, with `r`, and with the base's [out, in]. */
function checkPair(
  where: string,
  aShape: readonly number[],
  bShape: readonly number[],
  r: number,
  baseShape?: readonly [number, number],
): void {
  if (aShape.length !== 2 || bShape.length !== 2) {
    throw new Error(`${where}: lora_A [${aShape.join(', ')}] and lora_B [${bShape.join(', ')}] must both be matrices`);
  }
  if (aShape[0] !== bShape[1]) {
    throw new Error(
      `${where}: rank mismatch: lora_A [${aShape.join(', ')}] has rank ${aShape[0]}, lora_B [${bShape.join(', ')}] has rank ${bShape[1]}`,
    );
  }
  if (aShape[0] !== r)
    throw new Error(`${where}: rank ${aShape[0]} of lora_A [${aShape.join(', ')}] differs from r = ${r} in the config`);
  if (baseShape) {
    const [outFeatures, inFeatures] = baseShape;
    if (aShape[1] !== inFeatures || bShape[0] !== outFeatures) {
      throw new Error(
        `${where}: wrong shapes for the base: lora_A [${aShape.join(', ')}] / lora_B [${bShape.join(', ')}], expected [${r}, ${inFeatures}] / [${outFeatures}, ${r}]`,
      );
    }
  }
}

/** The engine's LoraAdapter ({scaling, modules: path → {a, b}}) for a loaded adapter. */
export function loraAdapterOf(loaded: LoadedAdapter): {
  scaling: number;
  modules: ReadonlyMap<string, { a: HostTensor; b: HostTensor }>;
} {
  return { scaling: loaded.config.scaling, modules: loaded.modules };
}

/** The engine's LoraAdapter for PEFT-keyed tensors, as training holds them; other keys are skipped. */
export function loraAdapterOfTensors(
  tensors: ReadonlyMap<string, HostTensor>,
  lora: LoraConfig,
): { scaling: number; modules: ReadonlyMap<string, { a: HostTensor; b: HostTensor }> } {
  const modules = new Map<string, { a: HostTensor; b: HostTensor }>();
  for (const [key, tensor] of tensors) {
    const parsed = parsePeftKey(key);
    if (!parsed) continue;
    const module = projectionModule(parsed.layer, parsed.projection);
    const slot = modules.get(module) ?? ({} as { a: HostTensor; b: HostTensor });
    slot[parsed.which === 'A' ? 'a' : 'b'] = tensor;
    modules.set(module, slot);
  }
  return { scaling: loraScaling(lora), modules };
}

/** PEFT key → tensor, e.g. to start training from a parent adapter. */
export function peftTensorsOf(loaded: LoadedAdapter): Map<string, HostTensor> {
  const tensors = new Map<string, HostTensor>();
  for (const module of loaded.modules.values()) {
    tensors.set(peftKey(module.layer, module.target, 'A'), module.a);
    tensors.set(peftKey(module.layer, module.target, 'B'), module.b);
  }
  return tensors;
}

/** Trainable LoRA parameters: Σ r·(in + out) over the adapted modules. */
export function loraParameterCount(config: AdapterConfig, baseConfig: ModelConfig): number {
  let total = 0;
  for (const module of config.modules) {
    const projection = module.slice(module.lastIndexOf('.') + 1) as Projection;
    const [outFeatures, inFeatures] = projectionShape(baseConfig, projection);
    total += elementCount([config.r, inFeatures + outFeatures]);
  }
  return total;
}
