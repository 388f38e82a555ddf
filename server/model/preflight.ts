// Checks a base model folder before the serving model is let go: config.json against the tensor
// shapes in the safetensors headers (no tensor data is read), room in the temp folder for the
// weights ONNX Runtime maps, and the tokenizer's FIM template for the modes that complete code. A
// folder that fails costs one line, and what serves keeps serving.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Mode } from '../../trainer/adapters/mode';
import { listWeightFiles } from '../../trainer/model/checkpoint';
import { checkFullyIndexed } from '../../trainer/model/lazy-weights';
import { type ModelConfig, countParameters, loadModelConfig, weightNames } from '../../trainer/model/config';
import { type ServingPrecisionSetting, servedBytesPerParameter, servingPrecision } from '../../trainer/model/precision';
import { readSafetensorsHeader } from '../../trainer/model/safetensors';
import { completionSupport } from '../../trainer/model/tokenizer/fim';
import { Tokenizer } from '../../trainer/model/tokenizer/tokenizer';

/** The one-line reason `dir` cannot serve in `mode` at `precision`, or null when it can. */
export async function modelFolderProblem(
  dir: string,
  mode: Mode,
  precision: ServingPrecisionSetting = 'auto',
): Promise<string | null> {
  try {
    const config = loadModelConfig(dir);
    await checkWeightShapes(dir, config);
    checkStagingSpace(config, precision);
    if (mode === 'review') return null;
    const support = completionSupport(dir, await Tokenizer.load(dir));
    return support.problem;
  } catch (error) {
    return (error instanceof Error ? error.message : String(error)).replace(/\s+/g, ' ').trim();
  }
}

/** Every tensor config.json implies is in the headers with its shape; the first that is not, in one line. */
export async function checkWeightShapes(dir: string, config: ModelConfig): Promise<void> {
  const { files } = await listWeightFiles(dir);
  const found = new Map<string, { shape: number[]; file: string }>();
  for (const file of files) {
    const full = path.join(dir, file);
    const header = readSafetensorsHeader(full);
    checkFullyIndexed(header, full);
    for (const [name, entry] of header.tensors) found.set(name, { shape: entry.shape, file });
  }
  const sizes =
    `hidden_size ${config.hiddenSize}, num_attention_heads ${config.numHeads}, ` +
    `num_key_value_heads ${config.numKvHeads}, head_dim ${config.headDim}, ` +
    `intermediate_size ${config.intermediateSize}, vocab_size ${config.vocabSize}`;
  for (const spec of weightNames(config)) {
    const entry = found.get(spec.name);
    if (!entry) {
      throw new Error(
        `${path.join(dir, 'config.json')} (model_type ${config.modelType}) needs tensor "${spec.name}", which the weights lack`,
      );
    }
    const same = entry.shape.length === spec.shape.length && entry.shape.every((d, i) => d === spec.shape[i]);
    if (!same) {
      throw new Error(
        `${path.join(dir, 'config.json')} disagrees with ${entry.file}: tensor "${spec.name}" is [${entry.shape.join(', ')}], the config (${sizes}) implies [${spec.shape.join(', ')}]`,
      );
    }
  }
}

/** The weights are staged in the temp folder while the session opens: no room for them fails here. */
function checkStagingSpace(config: ModelConfig, setting: ServingPrecisionSetting): void {
  const precision = servingPrecision(setting, config);
  const needed = countParameters(config) * servedBytesPerParameter(precision);
  const tempDir = os.tmpdir();
  let free: number;
  try {
    const stats = fs.statfsSync(tempDir);
    free = stats.bavail * stats.bsize;
  } catch {
    return; // unknown: the load itself reports a full disk
  }
  if (free >= needed) return;
  const mb = (bytes: number) => `${Math.max(1, Math.round(bytes / 1e6))} MB`;
  throw new Error(
    `no space in ${tempDir} to stage the model's weights at ${precision} (about ${mb(needed)} needed, ${mb(free)} free); free space there or set TMPDIR to a folder on a larger disk`,
  );
}
