// Shared by the adapter and registry tests: a tiny base config, seeded LoRA tensors and manifests.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { projectionShape, type ModelConfig, type Projection } from '../../../trainer/model/config';
import { Rng } from '../../../trainer/model/random';
import type { HostTensor } from '../../../trainer/model/tensor';
import type { HeldOutMetrics, ManifestDraft } from '../../../trainer/adapters/manifest';
import type { Mode } from '../../../trainer/adapters/mode';
import { peftKey } from '../../../trainer/adapters/peft';
import { tinyModelConfig } from '../../fixtures/tiny-config';

// Grouped-query attention (4 query heads, 2 KV heads) so q/k/v shapes differ.
export const tinyConfig: ModelConfig = tinyModelConfig();

export const ALL_TARGETS: Projection[] = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

/** PEFT key → random A [r, in] / B [out, r] for every layer × target. */
export function randomLoraTensors(
  cfg: ModelConfig,
  r: number,
  targets: readonly Projection[],
  seed: number,
): Map<string, HostTensor> {
  const rng = new Rng(seed);
  const tensors = new Map<string, HostTensor>();
  for (let layer = 0; layer < cfg.numLayers; layer++) {
    for (const projection of targets) {
      const [outFeatures, inFeatures] = projectionShape(cfg, projection);
      tensors.set(peftKey(layer, projection, 'A'), {
        dtype: 'float32',
        shape: [r, inFeatures],
        data: rng.fillNormal(new Float32Array(r * inFeatures)),
      });
      tensors.set(peftKey(layer, projection, 'B'), {
        dtype: 'float32',
        shape: [outFeatures, r],
        data: rng.fillNormal(new Float32Array(outFeatures * r)),
      });
    }
  }
  return tensors;
}

export function metrics(loss: number): HeldOutMetrics {
  return {
    loss,
    perplexity: Math.exp(loss),
    bitsPerByte: loss / Math.LN2 / 3.5,
    exactMatch: 0.25,
    editSimilarity: 0.5,
  };
}

const FAKE_BASE_SHA = 'b'.repeat(64);

export function draftManifest(
  overrides: Partial<ManifestDraft> & { adapterLoss?: number | null; baseLoss?: number | null } = {},
): ManifestDraft {
  const { adapterLoss = 1.5, baseLoss = 2.0, ...rest } = overrides;
  return {
    base: { name: 'tiny-llama', sha256: FAKE_BASE_SHA },
    repo: { root: '/repo', head: 'c0ffee'.padEnd(40, '0'), dirty: false },
    dataset: {
      files: 3,
      examples: 10,
      tokens: 1000,
      sha256: 'd'.repeat(64),
      excluded: { binary: 1 },
      secretsExcluded: 0,
    },
    training: {
      method: 'lora',
      backend: 'ort',
      device: 'cpu',
      steps: 5,
      tokens: 1000,
      seconds: 1.5,
      seed: 7,
      hyperparameters: { lr: 3e-4, weightDecay: 0.1, r: 4, alpha: 8, targets: ['q_proj', 'v_proj'] },
    },
    metrics: {
      base: baseLoss === null ? null : metrics(baseLoss),
      adapter: adapterLoss === null ? null : metrics(adapterLoss),
    },
    mode: 'complete' as Mode,
    purpose: 'test',
    parent: null,
    ...rest,
  };
}

export const BASE_SHA = FAKE_BASE_SHA;

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `idiom-${prefix}-`));
}
