// Hugging Face checkpoint folders of the llama / qwen2 family: config.json plus model.safetensors,
// or shards listed in model.safetensors.index.json. Weights load as float32 whatever they were
// stored as (F32, F16, BF16).

import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { elementCount, type HostTensor } from './tensor';
import { loadModelConfig, toHfConfigJson, weightNames, type ModelConfig } from './config';
import { Rng } from './random';
import { readSafetensors, writeFileAtomically, writeSafetensors, type SafetensorsTensor } from './safetensors';
import { hashFileInto, sha256OfFiles } from '../util/sha256';
import { makeDirectory } from '../util/directories';

export const CONFIG_FILE = 'config.json';
export const SINGLE_WEIGHTS_FILE = 'model.safetensors';
export const WEIGHTS_INDEX_FILE = 'model.safetensors.index.json';

export interface Checkpoint {
  config: ModelConfig;
  /** Every expected tensor (see weightNames), float32, in Hugging Face names. */
  weights: Map<string, HostTensor>;
  /**
   * sha256 (hex) of the weight files' bytes: of model.safetensors itself (what `sha256sum` prints),
   * or of the shards concatenated in file-name order.
   */
  sha256: string;
  /** Weight files read, relative to the folder, in hashing order. */
  files: string[];
}

/** Files at or above this size are hashed by streaming and read tensor by tensor (Buffers stop at 2 GiB). */
const WHOLE_FILE_READ_LIMIT = 1024 * 1024 * 1024;

export async function loadCheckpoint(dir: string): Promise<Checkpoint> {
  const config = loadModelConfig(dir);
  const { files, weightMap } = await listWeightFiles(dir);

  const hash = createHash('sha256');
  const found = new Map<string, { tensor: SafetensorsTensor; file: string }>();
  for (const file of files) {
    const full = path.join(dir, file);
    const size = await fileSize(full);
    let tensors: Map<string, SafetensorsTensor>;
    if (size < WHOLE_FILE_READ_LIMIT) {
      const bytes = await fs.promises.readFile(full);
      hash.update(bytes);
      tensors = readSafetensors(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), full).tensors;
    } else {
      await hashFileInto(hash, full);
      tensors = readSafetensors(full).tensors;
    }
    for (const [name, tensor] of tensors) {
      const earlier = found.get(name);
      if (earlier) throw new Error(`${full}: tensor "${name}" is also in ${earlier.file}`);
      found.set(name, { tensor, file: full });
    }
  }

  const weights = new Map<string, HostTensor>();
  for (const spec of weightNames(config)) {
    const entry = found.get(spec.name);
    if (!entry) {
      const where = weightMap?.[spec.name]
        ? path.join(dir, weightMap[spec.name])
        : path.join(dir, files.length === 1 ? files[0] : WEIGHTS_INDEX_FILE);
      throw new Error(`${where}: missing tensor "${spec.name}" [${spec.shape.join(', ')}] required by ${CONFIG_FILE}`);
    }
    const { tensor, file } = entry;
    if (!sameShape(tensor.shape, spec.shape)) {
      throw new Error(
        `${file}: tensor "${spec.name}" has shape [${tensor.shape.join(', ')}], expected [${spec.shape.join(', ')}] from ${CONFIG_FILE}`,
      );
    }
    if (tensor.dtype !== 'F32' && tensor.dtype !== 'F16' && tensor.dtype !== 'BF16') {
      throw new Error(`${file}: tensor "${spec.name}" is ${tensor.dtype}; weights must be F32, F16 or BF16`);
    }
    weights.set(spec.name, { dtype: 'float32', shape: [...spec.shape], data: tensor.toFloat32() });
  }
  return { config, weights, sha256: hash.digest('hex'), files };
}

/** The safetensors files of a checkpoint folder (one file, or the shards its index lists). */
export async function listWeightFiles(dir: string): Promise<{ files: string[]; weightMap?: Record<string, string> }> {
  const indexPath = path.join(dir, WEIGHTS_INDEX_FILE);
  let indexText: string | null = null;
  try {
    indexText = await fs.promises.readFile(indexPath, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT')
      throw new Error(`${indexPath}: cannot read (${(error as NodeJS.ErrnoException).code})`);
  }
  if (indexText === null) {
    if (!fs.existsSync(path.join(dir, SINGLE_WEIGHTS_FILE))) {
      throw new Error(
        `${dir}: no ${SINGLE_WEIGHTS_FILE} or ${WEIGHTS_INDEX_FILE} (not a safetensors checkpoint folder)`,
      );
    }
    return { files: [SINGLE_WEIGHTS_FILE] };
  }
  let index: unknown;
  try {
    index = JSON.parse(indexText);
  } catch (error) {
    throw new Error(`${indexPath}: invalid JSON (${(error as Error).message})`);
  }
  const weightMap = (index as { weight_map?: unknown } | null)?.weight_map;
  if (weightMap === null || typeof weightMap !== 'object' || Array.isArray(weightMap)) {
    throw new Error(`${indexPath}: missing "weight_map" object`);
  }
  const files = new Set<string>();
  for (const [name, file] of Object.entries(weightMap as Record<string, unknown>)) {
    if (
      typeof file !== 'string' ||
      file.length === 0 ||
      path.basename(file) !== file ||
      file === '.' ||
      file === '..'
    ) {
      throw new Error(
        `${indexPath}: weight_map entry for "${name}" must be a file name in the same folder, got ${JSON.stringify(file)}`,
      );
    }
    files.add(file);
  }
  if (files.size === 0) throw new Error(`${indexPath}: "weight_map" lists no files`);
  return { files: [...files].sort(), weightMap: weightMap as Record<string, string> };
}

export interface SaveCheckpointOptions {
  /** Storage precision; float32 tensors are rounded to nearest even for float16. Default float32. */
  dtype?: 'float32' | 'float16';
  /** Split into model-0000i-of-0000n.safetensors + index when the weights exceed this many bytes. */
  shardBytes?: number;
}

/** Writes config.json and the weights (every expected tensor must be present with its shape). */
export async function saveCheckpoint(
  dir: string,
  config: ModelConfig,
  weights: Map<string, HostTensor>,
  options: SaveCheckpointOptions = {},
): Promise<{ sha256: string; files: string[] }> {
  const dtype = options.dtype ?? 'float32';
  const ordered = new Map<string, HostTensor>();
  for (const spec of weightNames(config)) {
    const tensor = weights.get(spec.name);
    if (!tensor) throw new Error(`saveCheckpoint: missing tensor "${spec.name}" [${spec.shape.join(', ')}]`);
    if (!sameShape(tensor.shape, spec.shape)) {
      throw new Error(
        `saveCheckpoint: tensor "${spec.name}" has shape [${tensor.shape.join(', ')}], expected [${spec.shape.join(', ')}]`,
      );
    }
    if (tensor.dtype !== 'float32' && tensor.dtype !== 'float16') {
      throw new Error(`saveCheckpoint: tensor "${spec.name}" is ${tensor.dtype}; weights must be float32 or float16`);
    }
    ordered.set(spec.name, tensor);
  }
  makeDirectory(dir);
  if (fs.existsSync(path.join(dir, WEIGHTS_INDEX_FILE)) && options.shardBytes === undefined) {
    throw new Error(`${dir}: already holds a sharded checkpoint (${WEIGHTS_INDEX_FILE}); save into an empty folder`);
  }

  const itemBytes = dtype === 'float16' ? 2 : 4;
  const shards: Array<Map<string, HostTensor>> = [new Map()];
  let shardSize = 0;
  let totalSize = 0;
  for (const [name, tensor] of ordered) {
    const bytes = elementCount(tensor.shape) * itemBytes;
    if (options.shardBytes !== undefined && shardSize > 0 && shardSize + bytes > options.shardBytes) {
      shards.push(new Map());
      shardSize = 0;
    }
    shards[shards.length - 1].set(name, tensor);
    shardSize += bytes;
    totalSize += bytes;
  }

  const floatDtype = dtype === 'float16' ? 'F16' : 'F32';
  const files: string[] = [];
  if (shards.length === 1) {
    writeSafetensors(path.join(dir, SINGLE_WEIGHTS_FILE), shards[0], { format: 'pt' }, { floatDtype });
    files.push(SINGLE_WEIGHTS_FILE);
  } else {
    const weightMap: Record<string, string> = {};
    const pad = (i: number): string => String(i).padStart(5, '0');
    shards.forEach((shard, i) => {
      const file = `model-${pad(i + 1)}-of-${pad(shards.length)}.safetensors`;
      writeSafetensors(path.join(dir, file), shard, { format: 'pt' }, { floatDtype });
      for (const name of shard.keys()) weightMap[name] = file;
      files.push(file);
    });
    const index = { metadata: { total_size: totalSize }, weight_map: weightMap };
    writeFileAtomically(path.join(dir, WEIGHTS_INDEX_FILE), [
      new TextEncoder().encode(`${JSON.stringify(index, null, 2)}\n`),
    ]);
  }
  const configJson = { ...toHfConfigJson(config), torch_dtype: dtype };
  writeFileAtomically(path.join(dir, CONFIG_FILE), [
    new TextEncoder().encode(`${JSON.stringify(configJson, null, 2)}\n`),
  ]);

  const sorted = [...files].sort();
  return { sha256: await sha256OfFiles(sorted.map((file) => path.join(dir, file))), files: sorted };
}

/**
 * Deterministic random weights for `cfg` (tests, benchmarks, the untrained default model):
 * matrices and biases ~ N(0, std), RMSNorm weights = 1.
 */
export function randomCheckpointWeights(
  cfg: ModelConfig,
  seed: number,
  options: { std?: number } = {},
): Map<string, HostTensor> {
  const std = options.std ?? 0.02;
  const rng = new Rng(seed);
  const weights = new Map<string, HostTensor>();
  for (const spec of weightNames(cfg)) {
    const data = new Float32Array(elementCount(spec.shape));
    if (spec.name.endsWith('norm.weight'))
      data.fill(1); // every RMSNorm: layers, final, qwen3's q/k
    else rng.fillNormal(data, 0, std);
    weights.set(spec.name, { dtype: 'float32', shape: [...spec.shape], data });
  }
  return weights;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

async function fileSize(file: string): Promise<number> {
  try {
    return (await fs.promises.stat(file)).size;
  } catch (error) {
    throw new Error(`${file}: cannot read weights (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
  }
}
