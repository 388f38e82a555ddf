// The merged export: a Hugging Face checkpoint with the adapter folded into the base weights
// (W + scaling · B·A per adapted projection), plus the base's tokenizer files, so anything that
// loads a Hugging Face model serves the adapted model without LoRA support.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { mergeLora } from '../../compute/engine/weights';
import { saveCheckpoint } from '../../model/checkpoint';
import { projectionWeightName, type ModelConfig } from '../../model/config';
import type { HostTensor } from '../../model/tensor';
import type { LoadedAdapter } from '../peft';

/** Tokenizer and generation files a Hugging Face model folder may carry beside its weights. */
const TOKENIZER_FILES = [
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'vocab.json',
  'merges.txt',
  'generation_config.json',
];

/** The base's weights with every module of `adapter` folded in. */
export function foldAdapter(weights: ReadonlyMap<string, HostTensor>, adapter: LoadedAdapter): Map<string, HostTensor> {
  const merged = new Map(weights);
  for (const module of adapter.modules.values()) {
    const name = projectionWeightName(module.layer, module.target);
    const weight = merged.get(name);
    if (!weight) throw new Error(`merged export: the base has no tensor "${name}"`);
    merged.set(name, mergeLora(weight, module, adapter.config.scaling));
  }
  return merged;
}

/** Writes config.json, model.safetensors (float32) and the base's tokenizer files into `dir`. */
export async function writeMergedModel(
  dir: string,
  config: ModelConfig,
  weights: ReadonlyMap<string, HostTensor>,
  baseDir: string,
): Promise<string[]> {
  const saved = await saveCheckpoint(dir, config, new Map(weights), { dtype: 'float32' });
  const copied = TOKENIZER_FILES.filter((name) => fs.existsSync(path.join(baseDir, name)));
  for (const name of copied) fs.copyFileSync(path.join(baseDir, name), path.join(dir, name));
  return ['config.json', ...saved.files, ...copied];
}
