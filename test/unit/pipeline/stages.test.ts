import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { completeManifest } from '../../../trainer/adapters/manifest';
import { loadAdapter, loraAdapterOf, loraAdapterOfTensors, writeAdapter } from '../../../trainer/adapters/peft';
import { DEFAULT_LORA } from '../../../trainer/model/lora';
import { draftManifest, type DraftInput } from '../../../trainer/training/pipeline/train-repository';
import { draftManifest as fixtureDraft, metrics, randomLoraTensors, tempDir, tinyConfig } from '../adapters/helpers';

// The stages of `idiom train` that run without a model or a repository.

function input(overrides: Partial<DraftInput> = {}): DraftInput {
  return {
    info: {
      method: 'lora',
      mode: 'complete',
      repoRoot: '/repo',
      base: { dir: '/models/tiny', name: 'tiny-llama', sha256: 'b'.repeat(64) },
      tokenizerSha256: 't'.repeat(64),
      budget: { minutes: 2.5 },
      seed: 3,
      lora: DEFAULT_LORA,
      learningRate: 3e-4,
      weightDecay: 0.1,
      maxEpochs: 3,
      batch: 8,
      seqLen: 128,
      threads: 2,
      purpose: 'idiom train (lora, complete)',
      created: '2026-01-02T03:04:05.000Z',
    },
    data: {
      repo: { head: 'c'.repeat(40), dirty: true },
      dataset: {
        files: 4,
        examples: 20,
        tokens: 2000,
        sha256: 'd'.repeat(64),
        excluded: { binary: 1 },
        secretsExcluded: 2,
      },
      heldOut: { commits: 2, files: 3, examples: 6, exampleTokens: 600, sha256: 'e'.repeat(64) },
    },
    training: {
      state: { step: 12, tokens: 12288, seconds: 4.56789, plan: { warmupSteps: 1, totalSteps: 12 } },
      trainableParameters: 4096,
    },
    selection: { backend: 'ort', device: 'cpu' },
    metrics: { base: metrics(2), adapter: metrics(1.5), others: {} },
    peakRssBytes: 123456789,
    ...overrides,
  };
}

describe('pipeline: train stages', () => {
  it('drafts a manifest that validates, from the run plan, its data and its training', () => {
    const draft = draftManifest(input());
    const manifest = completeManifest(draft, {
      files: ['adapter_model.safetensors'],
      sha256: 'f'.repeat(64),
      bytes: 10,
    });
    assert.deepEqual(manifest.base, { name: 'tiny-llama', sha256: 'b'.repeat(64) });
    assert.deepEqual(manifest.repo, { root: '/repo', head: 'c'.repeat(40), dirty: true });
    assert.deepEqual(manifest.dataset.heldOut, {
      commits: 2,
      files: 3,
      examples: 6,
      tokens: 600,
      sha256: 'e'.repeat(64),
    });
    assert.equal(manifest.dataset.secretsExcluded, 2);
    assert.equal(manifest.training.seconds, 4.568);
    assert.equal(manifest.training.hyperparameters.budget, '2.5 minutes');
    assert.equal(manifest.training.hyperparameters.r, DEFAULT_LORA.r);
    assert.equal(manifest.training.hyperparameters.dropout, 0);
    assert.equal(manifest.training.hyperparameters.peakRssBytes, 123456789);
    assert.equal('others' in manifest.metrics, false, 'no other adapter was evaluated');
  });

  it('drafts a full fine-tune without LoRA settings, with a token budget and the adapter it was compared with', () => {
    const base = input();
    const draft = draftManifest({
      ...base,
      info: { ...base.info, method: 'full', lora: null, budget: { tokens: 5000 } },
      metrics: { base: metrics(2), adapter: metrics(1.5), others: { '20260101-000000-abcdef': metrics(1.7) } },
    });
    assert.equal(draft.training.method, 'full');
    assert.equal(draft.training.hyperparameters.budget, '5000 tokens');
    assert.equal('r' in draft.training.hyperparameters, false);
    assert.deepEqual(Object.keys(draft.metrics.others ?? {}), ['20260101-000000-abcdef']);
  });

  it('evaluates the LoRA tensors training holds as the adapter it writes', async () => {
    const dir = tempDir('stages');
    try {
      const lora = { r: 2, alpha: 6, targets: ['q_proj', 'down_proj'] as const };
      const tensors = randomLoraTensors(tinyConfig, lora.r, lora.targets, 5);
      const adapterDir = path.join(dir, 'adapter');
      await writeAdapter(adapterDir, { config: lora, tensors, manifest: fixtureDraft(), baseConfig: tinyConfig });
      const written = loraAdapterOf(await loadAdapter(adapterDir, tinyConfig));
      const evaluated = loraAdapterOfTensors(tensors, lora);
      assert.equal(evaluated.scaling, written.scaling);
      assert.deepEqual([...evaluated.modules.keys()].sort(), [...written.modules.keys()].sort());
      for (const [module, { a, b }] of written.modules) {
        assert.deepEqual(evaluated.modules.get(module)!.a.data, a.data, module);
        assert.deepEqual(evaluated.modules.get(module)!.b.data, b.data, module);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
