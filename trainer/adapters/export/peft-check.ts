// The PEFT export's check: the safetensors keys are exactly the ones PEFT writes for a
// LlamaForCausalLM / Qwen2ForCausalLM / Qwen3ForCausalLM base (they share module names), one
// lora_A [r, in] and lora_B [out, r] per module adapter_config.json targets, and nothing else,
// so PEFT, vLLM and llama.cpp's converter load the files without renaming.

import * as path from 'node:path';
import { projectionShape, type ModelConfig, type Projection } from '../../model/config';
import { readSafetensorsHeader } from '../../model/safetensors';
import { ADAPTER_WEIGHTS_FILE } from '../folder';
import { peftKey, type LoadedAdapter } from '../peft';

/** Every way the adapter's files differ from PEFT's layout for `config`; empty when none. */
export function peftLayoutProblems(adapter: LoadedAdapter, config: ModelConfig): string[] {
  const file = path.join(adapter.dir, ADAPTER_WEIGHTS_FILE);
  const header = readSafetensorsHeader(file);
  const problems: string[] = [];
  const expected = new Map<string, number[]>();
  for (const module of adapter.config.modules) {
    const parts = module.split('.');
    const layer = Number(parts[2]);
    const projection = parts[4] as Projection;
    const [outFeatures, inFeatures] = projectionShape(config, projection);
    expected.set(peftKey(layer, projection, 'A'), [adapter.config.r, inFeatures]);
    expected.set(peftKey(layer, projection, 'B'), [outFeatures, adapter.config.r]);
  }
  for (const [key, entry] of header.tensors) {
    const shape = expected.get(key);
    if (!shape) {
      problems.push(`"${key}" is not a key PEFT writes for this adapter_config.json`);
      continue;
    }
    if (entry.shape.length !== shape.length || entry.shape.some((d, i) => d !== shape[i]))
      problems.push(`"${key}" is [${entry.shape.join(', ')}], PEFT's layout is [${shape.join(', ')}]`);
    expected.delete(key);
  }
  for (const key of expected.keys()) problems.push(`"${key}" is missing`);
  return problems;
}
