// The base models this machine holds: the Hugging Face cache, the folder in idiom.baseModelPath and
// the embedded model, each described from its files without loading the weights: parameter count
// (safetensors headers, else config.json shapes), storage dtype, the memory it needs to serve, its
// fill-in-the-middle tokens, and why it cannot serve when it cannot.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CONFIG_FILE, SINGLE_WEIGHTS_FILE, WEIGHTS_INDEX_FILE } from '../checkpoint';
import { countParameters, readModelConfigFile, type ModelConfig } from '../config';
import { servedBytesPerParameter } from '../precision';
import { readSafetensorsHeader } from '../safetensors';
import { hubCacheDir, modelIdOfFolder } from './cache';
import { detectFimFamily, SERVED_FIM_FAMILIES, type FimFamily } from './fim-family';

export type ServingPrecision = 'float32' | 'int8' | 'int4';

/** ONNX Runtime, the engine worker and the server around the weights. */
const RUNTIME_BYTES = 256 * 1024 * 1024;
/** The KV cache is sized for at most this many positions (the server's prompts are shorter). */
const KV_POSITIONS = 4096;

export type ModelSource = 'embedded' | 'setting' | 'hf-cache';

export interface LocalModel {
  source: ModelSource;
  /** `Org/Name` for the cache, else the folder's name. */
  id: string;
  /** The cache snapshot's commit, and the refs (main, a tag) that point at it. */
  revision: string | null;
  refs: string[];
  path: string;
  /** config.json's model_type. */
  architecture: string | null;
  parameters: number | null;
  /** What the weights are stored as (the dtype holding most parameters): BF16, F16, F32. */
  dtype: string | null;
  precision: ServingPrecision;
  /** Bytes of memory serving needs at `precision`, and at int8 (1 byte per parameter). */
  memoryBytes: number | null;
  int8MemoryBytes: number | null;
  /** The tokenizer's fill-in-the-middle family, null when it has no FIM tokens. */
  fim: FimFamily | null;
  /** False when the model needs more memory than this machine has. */
  fits: boolean;
  /** One line: why this model cannot serve completions here; null when it can. */
  problem: string | null;
}

export interface MachineMemory {
  total: number;
  available: number;
}

export function machineMemory(): MachineMemory {
  return { total: os.totalmem(), available: os.freemem() };
}

export interface DescribeOptions {
  precision?: ServingPrecision;
  memory?: MachineMemory;
}

/** Bytes serving needs: the weights at `precision`, the KV cache (float32) and the runtime. */
export function memoryNeeded(parameters: number, config: ModelConfig | null, precision: ServingPrecision): number {
  const weights = parameters * servedBytesPerParameter(precision);
  const kv = config
    ? 2 *
      config.numLayers *
      config.numKvHeads *
      config.headDim *
      Math.min(config.maxPositionEmbeddings, KV_POSITIONS) *
      4
    : 0;
  return Math.ceil(weights + kv + RUNTIME_BYTES);
}

/** `1.9 GB`, `512 MB`. */
export function formatBytes(bytes: number): string {
  if (bytes >= 1e9) return `${(bytes / 1e9).toFixed(1)} GB`;
  return `${Math.max(1, Math.round(bytes / 1e6))} MB`;
}

/** `494M`, `1.54B`, `12K`. */
export function formatParameters(count: number): string {
  if (count >= 1e9) return `${(count / 1e9).toFixed(2)}B`;
  if (count >= 1e6) return `${Math.round(count / 1e6)}M`;
  if (count >= 1e3) return `${Math.round(count / 1e3)}K`;
  return String(count);
}

/** One line when a model needing `needed` bytes cannot be held by this machine, else null. */
export function memoryRefusal(needed: number, memory: MachineMemory, what: string): string | null {
  if (needed <= memory.total) return null;
  return `${what} needs ${formatBytes(needed)} of memory to serve; this machine has ${formatBytes(memory.total)}`;
}

/** Describes the model folder `dir` from its files; the weights are not read. */
export function describeModel(dir: string, source: ModelSource, id: string, options: DescribeOptions = {}): LocalModel {
  const precision = options.precision ?? 'float32';
  const memory = options.memory ?? machineMemory();
  const problems: string[] = [];
  let rawConfig: Record<string, unknown> | null = null;
  try {
    rawConfig = JSON.parse(fs.readFileSync(path.join(dir, CONFIG_FILE), 'utf8')) as Record<string, unknown>;
  } catch (error) {
    problems.push(`${CONFIG_FILE}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  let config: ModelConfig | null = null;
  if (rawConfig) {
    try {
      config = readModelConfigFile(path.join(dir, CONFIG_FILE));
    } catch (error) {
      problems.push((error as Error).message);
    }
  }
  const weights = weightsSummary(dir);
  if (weights.problem) problems.push(weights.problem);
  let parameters = weights.parameters;
  if (parameters === null && config) parameters = countParameters(config);
  const dtype = weights.dtype ?? (typeof rawConfig?.torch_dtype === 'string' ? rawConfig.torch_dtype : null);

  const fim = detectFimFamily(dir);
  if (!fs.existsSync(path.join(dir, 'tokenizer.json'))) problems.push('no tokenizer.json');
  else if (fim === null) problems.push('its tokenizer has no fill-in-the-middle tokens (a chat or base-only model?)');
  else if (!SERVED_FIM_FAMILIES.includes(fim)) problems.push(`its ${fim} fill-in-the-middle tokens are not served yet`);

  const memoryBytes = parameters === null ? null : memoryNeeded(parameters, config, precision);
  const refusal = memoryBytes === null ? null : memoryRefusal(memoryBytes, memory, `at ${precision} it`);
  if (refusal) problems.unshift(refusal);
  return {
    source,
    id,
    revision: null,
    refs: [],
    path: dir,
    architecture: typeof rawConfig?.model_type === 'string' ? rawConfig.model_type : null,
    parameters,
    dtype,
    precision,
    memoryBytes,
    int8MemoryBytes: parameters === null ? null : memoryNeeded(parameters, config, 'int8'),
    fim,
    fits: refusal === null,
    problem: problems.length > 0 ? problems.join('; ') : null,
  };
}

/** Parameters and dominant dtype from the safetensors headers; a truncated or oversized file is a problem. */
function weightsSummary(dir: string): { parameters: number | null; dtype: string | null; problem: string | null } {
  let files: string[];
  try {
    const index = path.join(dir, WEIGHTS_INDEX_FILE);
    if (fs.existsSync(index)) {
      const map = (JSON.parse(fs.readFileSync(index, 'utf8')) as { weight_map?: Record<string, string> }).weight_map;
      files = [...new Set(Object.values(map ?? {}))].filter((file) => path.basename(String(file)) === file).sort();
    } else if (fs.existsSync(path.join(dir, SINGLE_WEIGHTS_FILE))) files = [SINGLE_WEIGHTS_FILE];
    else return { parameters: null, dtype: null, problem: `no ${SINGLE_WEIGHTS_FILE} or ${WEIGHTS_INDEX_FILE}` };
  } catch (error) {
    return { parameters: null, dtype: null, problem: `${WEIGHTS_INDEX_FILE}: ${(error as Error).message}` };
  }
  let parameters = 0;
  const byDtype = new Map<string, number>();
  for (const file of files) {
    try {
      const header = readSafetensorsHeader(path.join(dir, file));
      let end = 0;
      for (const entry of header.tensors.values()) {
        const count = entry.shape.reduce((a, b) => a * b, 1);
        parameters += count;
        byDtype.set(entry.dtype, (byDtype.get(entry.dtype) ?? 0) + count);
        end = Math.max(end, entry.dataOffsets[1]);
      }
      if (header.dataLength > end)
        return {
          parameters: null,
          dtype: null,
          problem: `${path.join(dir, file)}: invalid safetensors: ${header.dataLength - end} bytes after the last tensor (oversized)`,
        };
    } catch (error) {
      return { parameters: null, dtype: null, problem: (error as Error).message };
    }
  }
  const dtype = [...byDtype.entries()].sort((a, b) => b[1] - a[1])[0]?.[0] ?? null;
  return { parameters, dtype, problem: null };
}

export interface ListOptions extends DescribeOptions {
  /** The embedded model's folder ('' or absent: none). */
  embedded?: string;
  /** idiom.baseModelPath, resolved ('' or absent: none). */
  configured?: string;
  /** The hub cache to scan (default hubCacheDir()). */
  cacheDir?: string;
}

/** Every model folder found: the embedded one, the configured one, then the hub cache's snapshots. */
export function listLocalModels(options: ListOptions = {}): LocalModel[] {
  const memory = options.memory ?? machineMemory();
  const describe = { precision: options.precision, memory };
  const models: LocalModel[] = [];
  const seen = new Set<string>();
  const add = (model: LocalModel) => {
    const key = realPath(model.path);
    if (seen.has(key)) return;
    seen.add(key);
    models.push(model);
  };
  if (options.embedded && fs.existsSync(path.join(options.embedded, CONFIG_FILE)))
    add(describeModel(options.embedded, 'embedded', 'idiom-tiny (embedded)', describe));
  if (options.configured && fs.existsSync(options.configured))
    add(describeModel(options.configured, 'setting', path.basename(options.configured), describe));
  for (const model of cachedModels(options.cacheDir ?? hubCacheDir(), describe)) add(model);
  return models;
}

function cachedModels(cacheDir: string, options: DescribeOptions): LocalModel[] {
  const models: LocalModel[] = [];
  for (const repo of readDir(cacheDir).sort()) {
    const id = modelIdOfFolder(repo);
    if (!id) continue;
    const repoDir = path.join(cacheDir, repo);
    const refs = new Map<string, string[]>();
    for (const ref of readDir(path.join(repoDir, 'refs'))) {
      try {
        const commit = fs.readFileSync(path.join(repoDir, 'refs', ref), 'utf8').trim();
        refs.set(commit, [...(refs.get(commit) ?? []), ref]);
      } catch {
        // a ref that is a folder (refs/pr/…) or unreadable names nothing here
      }
    }
    for (const revision of readDir(path.join(repoDir, 'snapshots')).sort()) {
      const dir = path.join(repoDir, 'snapshots', revision);
      if (!fs.existsSync(path.join(dir, CONFIG_FILE))) continue;
      models.push({ ...describeModel(dir, 'hf-cache', id, options), revision, refs: refs.get(revision) ?? [] });
    }
  }
  return models;
}

function readDir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

function realPath(file: string): string {
  try {
    return fs.realpathSync(file);
  } catch {
    return path.resolve(file);
  }
}
