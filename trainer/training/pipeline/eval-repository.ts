import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { adapterKind, readManifest } from '../../adapters/folder';
import { loadFullModel } from '../../adapters/full';
import type { HeldOutMetrics } from '../../adapters/manifest';
import type { Mode } from '../../adapters/mode';
import { isAdapterId } from '../../adapters/manifest';
import { loadAdapter, loraAdapterOf } from '../../adapters/peft';
import { buildDataset, loadTokenizerFile } from '../../data/dataset/build';
import { DatasetReader } from '../../data/dataset/reader';
import { loadModelConfig } from '../../model/config';
import { baseWeightsSha256, resolveBaseDir } from '../../model/base-model';
import { chooseShape } from './plan';
import { Registry, findRepoRoot, registryLocation, type RegistryOptions } from '../../adapters/registry';
import { EngineWorker } from '../../compute/runtime/client';
import { evaluateModels, type ModelUnderTest } from '../eval/evaluate';
import {
  heldOutSummary,
  newlineTokenIds,
  selectHeldOut,
  type HeldOutOptions,
  type HeldOutSummary,
} from '../eval/held-out';

// `idiom eval <repo>`: mine the repository's temporal held-out split and evaluate the base model
// and an adapter (by id from the registry, by folder, or the one active for the mode) on it.

export interface EvalRepositoryOptions {
  repo: string;
  base?: string;
  /** Adapter id (registry) or folder; default: the adapter active for `mode`, if any. */
  adapter?: string;
  mode?: Mode;
  registry?: RegistryOptions;
  heldOut?: HeldOutOptions;
  /** Tokens per scoring row; default: the adapter's training seqLen, else the plan's rule. */
  seqLen?: number;
  threads?: number;
  onProgress?: (model: string, fraction: number) => void;
  onLog?: (message: string) => void;
  signal?: AbortSignal;
}

export interface EvalRepositoryResult {
  metrics: { base: HeldOutMetrics; adapter: HeldOutMetrics | null };
  heldOut: HeldOutSummary;
  adapter: { id: string | null; path: string; method: 'lora' | 'full' } | null;
  base: { dir: string; sha256: string };
  seqLen: number;
}

export async function evalRepository(options: EvalRepositoryOptions): Promise<EvalRepositoryResult> {
  const repoStart = path.resolve(options.repo);
  if (!fs.existsSync(repoStart) || !fs.statSync(repoStart).isDirectory())
    throw new Error(`${repoStart}: no such repository folder`);
  const repoRoot = findRepoRoot(repoStart);
  const baseDir = resolveBaseDir(options.base);
  const config = loadModelConfig(baseDir);
  const { tokenizer, sha256: tokenizerSha256 } = await loadTokenizerFile(baseDir);
  const baseSha256 = await baseWeightsSha256(baseDir);

  // Which adapter: a folder, an id in the registry, or the active one.
  let adapterDir: string | null = null;
  let adapterId: string | null = null;
  if (options.adapter) {
    const asPath = path.resolve(options.adapter);
    if (fs.existsSync(asPath) && fs.statSync(asPath).isDirectory()) adapterDir = asPath;
    else if (isAdapterId(options.adapter)) {
      const registry = await Registry.open(repoRoot, { ...options.registry, readOnly: true });
      if (!(await registry.has(options.adapter)))
        throw new Error(`no adapter ${options.adapter} in ${registry.adaptersDir}`);
      adapterDir = registry.adapterPath(options.adapter);
    } else throw new Error(`${options.adapter}: neither an adapter folder nor an adapter id`);
  } else if (fs.existsSync(registryLocation(repoRoot, options.registry))) {
    const registry = await Registry.open(repoRoot, { ...options.registry, readOnly: true });
    adapterDir = await registry.activePath(options.mode ?? 'complete');
  }
  let model: ModelUnderTest | null = null;
  let method: 'lora' | 'full' | null = null;
  let trainedSeqLen: number | null = null;
  if (adapterDir) {
    const manifest = readManifest(adapterDir);
    adapterId = manifest?.id ?? null;
    const seqLen = manifest?.training.hyperparameters.seqLen;
    trainedSeqLen = typeof seqLen === 'number' ? seqLen : null;
    method = adapterKind(adapterDir);
    if (method === 'lora') {
      const loaded = await loadAdapter(adapterDir, config, { baseSha256 });
      model = { name: 'adapter', kind: 'lora', adapter: loraAdapterOf(loaded) };
    } else {
      await loadFullModel(adapterDir, config, { baseSha256 }); // checks base, shapes and hash before evaluating
      model = { name: 'adapter', kind: 'full', checkpointDir: adapterDir };
    }
  }
  const seqLen = options.seqLen ?? trainedSeqLen ?? chooseShape(config, Number.MAX_SAFE_INTEGER).seqLen;

  const temp = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-eval-'));
  const worker = EngineWorker.start();
  try {
    const datasetPath = path.join(temp, 'heldout.idiomds');
    await buildDataset(repoStart, {
      tokenizer,
      tokenizerSha256,
      output: datasetPath,
      maxTokens: seqLen + 1,
      mine: { onWarning: options.onLog },
    });
    const reader = DatasetReader.open(datasetPath);
    const heldOut = selectHeldOut(reader, tokenizer, options.heldOut);
    reader.close();
    if (heldOut.sequences.length === 0)
      throw new Error(
        `${repoRoot}: no held-out split to evaluate on (the repository needs at least two commits touching code)`,
      );
    const metrics = await evaluateModels({
      worker,
      baseDir,
      tokenizer,
      newlineIds: newlineTokenIds(tokenizer),
      heldOut,
      seqLen,
      models: [{ name: 'base', kind: 'base' }, ...(model ? [model] : [])],
      threads: options.threads,
      onProgress: options.onProgress,
      signal: options.signal,
    });
    return {
      metrics: { base: metrics.get('base')!, adapter: metrics.get('adapter') ?? null },
      heldOut: heldOutSummary(heldOut),
      adapter: adapterDir ? { id: adapterId, path: adapterDir, method: method! } : null,
      base: { dir: baseDir, sha256: baseSha256 },
      seqLen,
    };
  } finally {
    await worker.terminate();
    fs.rmSync(temp, { recursive: true, force: true });
  }
}
