import * as fs from 'node:fs';
import * as path from 'node:path';
import { CONFIG_FILE, WEIGHTS_INDEX_FILE, listWeightFiles } from './checkpoint';
import { loadModelConfig, weightNames, type ModelConfig } from './config';
import { Rng } from './random';
import {
  SafetensorsTensor,
  readSafetensorsHeader,
  type SafetensorsHeader,
  type SafetensorsHeaderEntry,
} from './safetensors';
import { elementCount, type HostTensor } from './tensor';
import { sha256OfFiles } from '../util/sha256';

// Weights read one tensor at a time, as float32, each time they are asked for: a checkpoint's
// tensors straight from its files, or seeded random ones. A graph that quantizes each weight as it
// takes it never holds the model in float32, only the tensor in hand.

/** A read-only map of a model's weights whose values are made on each `get`. */
export class LazyWeights implements ReadonlyMap<string, HostTensor> {
  constructor(
    /** Name → shape, already checked against config.json. */
    private readonly shapes: ReadonlyMap<string, readonly number[]>,
    private readonly load: (name: string) => Float32Array,
  ) {}

  get(name: string): HostTensor | undefined {
    const shape = this.shapes.get(name);
    return shape ? { dtype: 'float32', shape: [...shape], data: this.load(name) } : undefined;
  }

  has(name: string): boolean {
    return this.shapes.has(name);
  }

  get size(): number {
    return this.shapes.size;
  }

  keys(): MapIterator<string> {
    return this.shapes.keys();
  }

  *entries(): MapIterator<[string, HostTensor]> {
    for (const name of this.shapes.keys()) yield [name, this.get(name)!];
  }

  *values(): MapIterator<HostTensor> {
    for (const name of this.shapes.keys()) yield this.get(name)!;
  }

  forEach(callback: (value: HostTensor, key: string, map: ReadonlyMap<string, HostTensor>) => void): void {
    for (const [name, tensor] of this.entries()) callback(tensor, name, this);
  }

  [Symbol.iterator](): MapIterator<[string, HostTensor]> {
    return this.entries();
  }
}

export interface LazyCheckpoint {
  config: ModelConfig;
  weights: LazyWeights;
  /** The same sha256 loadCheckpoint reports, streamed from the files. */
  sha256: string;
  files: string[];
}

/**
 * A checkpoint folder's config and weights, checked as loadCheckpoint checks them (every tensor
 * present with config.json's shape, F32/F16/BF16) from the safetensors headers alone; each tensor
 * is read from its file when asked for.
 */
export async function openCheckpoint(dir: string): Promise<LazyCheckpoint> {
  const config = loadModelConfig(dir);
  const { files, weightMap } = await listWeightFiles(dir);
  const found = new Map<string, { entry: SafetensorsHeaderEntry; file: string; dataStart: number }>();
  for (const file of files) {
    const full = path.join(dir, file);
    const header = readSafetensorsHeader(full);
    checkFullyIndexed(header, full);
    for (const [name, entry] of header.tensors) {
      const earlier = found.get(name);
      if (earlier) throw new Error(`${full}: tensor "${name}" is also in ${earlier.file}`);
      found.set(name, { entry, file: full, dataStart: header.dataStart });
    }
  }
  const shapes = new Map<string, readonly number[]>();
  for (const spec of weightNames(config)) {
    const located = found.get(spec.name);
    if (!located) {
      const where = weightMap?.[spec.name]
        ? path.join(dir, weightMap[spec.name])
        : path.join(dir, files.length === 1 ? files[0] : WEIGHTS_INDEX_FILE);
      throw new Error(`${where}: missing tensor "${spec.name}" [${spec.shape.join(', ')}] required by ${CONFIG_FILE}`);
    }
    const { entry, file } = located;
    if (entry.shape.length !== spec.shape.length || entry.shape.some((d, i) => d !== spec.shape[i])) {
      throw new Error(
        `${file}: tensor "${spec.name}" has shape [${entry.shape.join(', ')}], expected [${spec.shape.join(', ')}] from ${CONFIG_FILE}`,
      );
    }
    if (entry.dtype !== 'F32' && entry.dtype !== 'F16' && entry.dtype !== 'BF16') {
      throw new Error(`${file}: tensor "${spec.name}" is ${entry.dtype}; weights must be F32, F16 or BF16`);
    }
    shapes.set(spec.name, spec.shape);
  }
  const load = (name: string): Float32Array => {
    const { entry, file, dataStart } = found.get(name)!;
    const [begin, end] = entry.dataOffsets;
    const bytes = new Uint8Array(end - begin);
    const fd = fs.openSync(file, 'r');
    try {
      for (let at = 0; at < bytes.length; ) {
        const read = fs.readSync(fd, bytes, at, bytes.length - at, dataStart + begin + at);
        if (read === 0) throw new Error(`${file}: tensor "${name}" ends past the end of the file (truncated?)`);
        at += read;
      }
    } finally {
      fs.closeSync(fd);
    }
    return new SafetensorsTensor(name, entry.dtype, entry.shape, bytes).toFloat32();
  };
  const sha256 = await sha256OfFiles(files.map((file) => path.join(dir, file)));
  return { config, weights: new LazyWeights(shapes, load), sha256, files };
}

/** Bytes past the last tensor are not weights (a file appended to, or another file's tail): refused, as safetensors does. */
export function checkFullyIndexed(header: SafetensorsHeader, file: string): void {
  let end = 0;
  for (const entry of header.tensors.values()) end = Math.max(end, entry.dataOffsets[1]);
  if (header.dataLength > end)
    throw new Error(`${file}: invalid safetensors: ${header.dataLength - end} bytes after the last tensor (oversized)`);
}

/**
 * Seeded random weights for `cfg`, made per tensor on each read (benchmarks at real shapes):
 * matrices uniform with standard deviation `std`, RMSNorm weights 1. Each tensor's values depend
 * only on the seed and its name.
 */
export function randomLazyWeights(cfg: ModelConfig, seed: number, std = 0.02): LazyWeights {
  const shapes = new Map<string, readonly number[]>();
  for (const spec of weightNames(cfg)) shapes.set(spec.name, spec.shape);
  const half = std * Math.sqrt(3);
  return new LazyWeights(shapes, (name) => {
    const data = new Float32Array(elementCount(shapes.get(name)!));
    if (name.endsWith('norm.weight')) return data.fill(1);
    let hash = seed;
    for (let i = 0; i < name.length; i++) hash = Math.imul(hash ^ name.charCodeAt(i), 0x01000193) >>> 0;
    return new Rng(hash).fillUniform(data, -half, half);
  });
}
