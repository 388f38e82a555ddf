// Output of full fine-tuning (`--method full`). Layout, chosen so every HF tool can load the folder
// as a model of its own and the registry can treat it like any adapter:
//   <id>/config.json                 the base's config (same architecture and shapes)
//   <id>/model.safetensors           every weight (or model-0000i-of-0000n shards + index), via saveCheckpoint
//   <id>/manifest.json               the same provenance as a LoRA adapter, training.method "full";
//                                    weights.files/sha256 cover the weight files
// No adapter_config.json: that file is what marks a LoRA adapter (see adapterKind).

import * as path from 'node:path';
import { loadCheckpoint, saveCheckpoint, type Checkpoint } from '../model/checkpoint';
import type { ModelConfig } from '../model/config';
import type { HostTensor } from '../model/tensor';
import {
  ADAPTER_CONFIG_FILE,
  assertFolder,
  checkBaseHash,
  checkWeightsHash,
  readManifest,
  writeFolderAtomically,
  writeTextAtomically,
} from './folder';
import { MANIFEST_FILE, completeManifest, manifestJson, type AdapterManifest, type ManifestDraft } from './manifest';
import * as fs from 'node:fs';

export interface WriteFullModelInput {
  config: ModelConfig;
  weights: Map<string, HostTensor>;
  manifest: ManifestDraft;
  dtype?: 'float32' | 'float16';
  shardBytes?: number;
}

/** Writes a full fine-tuned model folder at `dir` (which must not exist) atomically; returns its manifest. */
export async function writeFullModel(dir: string, input: WriteFullModelInput): Promise<AdapterManifest> {
  if (input.manifest.training.method !== 'full') {
    throw new Error(
      `writeFullModel: manifest training.method is "${input.manifest.training.method}"; a full model is method "full" (use writeAdapter for "lora")`,
    );
  }
  let manifest: AdapterManifest | null = null;
  await writeFolderAtomically(dir, async (temp) => {
    const saved = await saveCheckpoint(temp, input.config, input.weights, {
      dtype: input.dtype,
      shardBytes: input.shardBytes,
    });
    let bytes = 0;
    for (const file of saved.files) bytes += (await fs.promises.stat(path.join(temp, file))).size;
    manifest = completeManifest(input.manifest, { files: saved.files, sha256: saved.sha256, bytes });
    writeTextAtomically(path.join(temp, MANIFEST_FILE), manifestJson(manifest));
  });
  return manifest!;
}

export interface LoadedFullModel {
  dir: string;
  checkpoint: Checkpoint;
  manifest: AdapterManifest;
}

/**
 * Loads a full fine-tuned model and checks it against the base it replaces: same architecture,
 * manifest for this base (when `baseSha256` is given) and weights matching the manifest's hash.
 */
export async function loadFullModel(
  dir: string,
  baseConfig: ModelConfig,
  options: { baseSha256?: string } = {},
): Promise<LoadedFullModel> {
  assertFolder(dir);
  if (fs.existsSync(path.join(dir, ADAPTER_CONFIG_FILE)))
    throw new Error(`${dir}: holds a LoRA adapter (${ADAPTER_CONFIG_FILE}); load it with loadAdapter`);
  const manifest = readManifest(dir);
  if (!manifest) throw new Error(`${dir}: missing ${MANIFEST_FILE} (a full fine-tuned model needs its provenance)`);
  if (manifest.training.method !== 'full')
    throw new Error(
      `${dir}: manifest.json says method "${manifest.training.method}", but the folder holds a full model`,
    );
  checkBaseHash(dir, manifest, options.baseSha256);
  const checkpoint = await loadCheckpoint(dir);
  const mismatch = architectureMismatch(baseConfig, checkpoint.config);
  if (mismatch) throw new Error(`${dir}: config.json does not match the base model (${mismatch})`);
  checkWeightsHash(dir, manifest, checkpoint.files, checkpoint.sha256);
  return { dir, checkpoint, manifest };
}

function architectureMismatch(base: ModelConfig, tuned: ModelConfig): string | null {
  const keys = [
    'modelType',
    'hiddenSize',
    'numLayers',
    'numHeads',
    'numKvHeads',
    'headDim',
    'intermediateSize',
    'vocabSize',
    'tieWordEmbeddings',
    'attentionBias',
  ] as const;
  for (const key of keys) {
    if (base[key] !== tuned[key]) return `${key} is ${String(tuned[key])}, the base has ${String(base[key])}`;
  }
  return null;
}
