import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { exportAdapter } from '../../../trainer/adapters/export/export';
import { loadAdapter, loraAdapterOf, writeAdapter } from '../../../trainer/adapters/peft';
import { Registry } from '../../../trainer/adapters/registry';
import { KvCacheSession } from '../../../trainer/compute/engine/inference';
import { packageRoot } from '../../../trainer/model/base-model';
import { loadCheckpoint, randomCheckpointWeights, saveCheckpoint } from '../../../trainer/model/checkpoint';
import { PROJECTIONS, type ModelConfig } from '../../../trainer/model/config';
import { Tokenizer } from '../../../trainer/model/tokenizer/tokenizer';
import { tinyModelConfig } from '../../fixtures/tiny-config';
import { llamaRuntimeInstalled, loadLlama, runLlama } from '../../llama/llama';
import { draftManifest, randomLoraTensors, tempDir } from '../../unit/adapters/helpers';

// The GGUF export against llama.cpp itself (node-llama-cpp's prebuilt CPU binary): the exported
// base and LoRA load, the tokenizer splits code as Idiom's does, and the next-token logits and a
// greedy continuation equal Idiom's engine serving the same adapter.

const embedded = path.join(packageRoot()!, 'models');
const STEPS = 32;
const PROMPT_TEXT = 'export function add(a: number, b: number): number {\n  return a + b;\n}\n\nexport function ';

interface Case {
  repo: string;
  baseDir: string;
  config: ModelConfig;
  id: string;
}

/** A git repository whose registry holds one active random adapter (all projections) on `baseDir`. */
async function repoWithAdapter(name: string, baseDir: string, seed: number, r = 4): Promise<Case> {
  const repo = tempDir(`export-${name}`);
  spawnSync('git', ['init', '-q', repo]);
  const base = await loadCheckpoint(baseDir);
  const registry = await Registry.open(repo);
  const staging = registry.stagingPath();
  const tensors = randomLoraTensors(base.config, r, PROJECTIONS, seed);
  // Scaled so the adapter moves the logits by far more than the tolerance, and no more.
  for (const tensor of tensors.values()) {
    const data = tensor.data as Float32Array;
    for (let i = 0; i < data.length; i++) data[i] *= 0.05;
  }
  await writeAdapter(staging, {
    config: { r, alpha: 2 * r, targets: PROJECTIONS },
    tensors,
    manifest: draftManifest({ base: { name: path.basename(baseDir), sha256: base.sha256 } }),
    baseConfig: base.config,
  });
  const { id } = await registry.add(staging);
  await registry.activate(id, 'complete');
  return { repo, baseDir, config: base.config, id };
}

/** Idiom's engine serving the adapter as the server does (LoRA inputs): logits after the prompt and a greedy run. */
async function idiomRun(c: Case, prompt: number[], vocab: number, adapter: boolean) {
  const base = await loadCheckpoint(c.baseDir);
  const session = await KvCacheSession.create(base.config, base.weights, { loraInputs: true, vocabLimit: vocab });
  if (adapter) {
    const loaded = await loadAdapter(path.join(c.repo, '.idiom', 'adapters', c.id), base.config);
    session.setAdapter(loraAdapterOf(loaded));
  }
  let row = await session.append(prompt);
  const logits = Float32Array.from(row.subarray(0, vocab));
  const greedy: number[] = [];
  while (greedy.length < STEPS) {
    let best = 0;
    for (let t = 1; t < vocab; t++) if (row[t] > row[best]) best = t;
    greedy.push(best);
    if (greedy.length < STEPS) row = await session.append([best]);
  }
  await session.dispose();
  return { logits, greedy };
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) {
    assert.ok(Number.isFinite(b[i]), `llama.cpp gave no logit for token ${i}`);
    max = Math.max(max, Math.abs(a[i] - b[i]));
  }
  return max;
}

function maxAbs(a: Float32Array): number {
  return a.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
}

describe('idiom adapters export --format gguf, loaded by llama.cpp', function () {
  this.timeout(180_000);
  const roots: string[] = [];
  after(() => {
    for (const root of roots) fs.rmSync(root, { recursive: true, force: true });
  });

  before(function () {
    if (!llamaRuntimeInstalled()) {
      console.log('    skipped: node-llama-cpp is not installed (run test/llama/runtime/install.sh)');
      this.skip();
    }
  });

  async function compare(c: Case, tokenizer: Tokenizer, precision: 'f32' | 'q8_0') {
    const exported = await exportAdapter({
      repo: c.repo,
      which: c.id,
      mode: 'complete',
      format: 'gguf',
      base: c.baseDir,
      precision,
      out: path.join(c.repo, `gguf-${precision}`),
    });
    const prompt = tokenizer.encode(PROMPT_TEXT);
    const vocab = tokenizer.vocabSize;
    const idiom = await idiomRun(c, prompt, vocab, true);
    const llama = await loadLlama();
    try {
      const run = await runLlama(
        llama,
        exported.baseGguf!,
        path.join(exported.out, 'adapter.gguf'),
        prompt,
        STEPS,
        vocab,
      );
      // The tokenizer made the trip: llama.cpp splits the text into Idiom's ids and back.
      assert.deepEqual(run.model.tokenize(PROMPT_TEXT), prompt);
      assert.equal(run.model.detokenize(prompt), PROMPT_TEXT);
      const base = await runLlama(llama, exported.baseGguf!, null, prompt, 1, vocab);
      await run.model.dispose();
      await base.model.dispose();
      return {
        exported,
        idiom,
        llama: run,
        llamaBase: base,
        delta: maxAbsDiff(idiom.logits, run.logits),
        scale: maxAbs(idiom.logits),
      };
    } finally {
      await llama.dispose();
    }
  }

  for (const [name, setup] of [
    ['the embedded model', async () => repoWithAdapter('embedded', embedded, 3)],
    [
      'a tiny random llama',
      async () => {
        const dir = tempDir('export-tiny-base');
        roots.push(dir);
        const config = tinyModelConfig({
          hidden_size: 64,
          intermediate_size: 96,
          vocab_size: 4096,
          max_position_embeddings: 128,
        });
        await saveCheckpoint(dir, config, randomCheckpointWeights(config, 5, { std: 0.1 }));
        fs.copyFileSync(path.join(embedded, 'tokenizer.json'), path.join(dir, 'tokenizer.json'));
        return repoWithAdapter('tiny', dir, 9);
      },
    ],
    [
      'a tiny random qwen2 (q/k/v biases, untied head)',
      async () => {
        const dir = tempDir('export-qwen2-base');
        roots.push(dir);
        const config = tinyModelConfig({
          model_type: 'qwen2',
          hidden_size: 64,
          intermediate_size: 96,
          vocab_size: 4096,
          max_position_embeddings: 128,
          tie_word_embeddings: false,
          rope_theta: 1000000,
        });
        await saveCheckpoint(dir, config, randomCheckpointWeights(config, 6, { std: 0.1 }));
        fs.copyFileSync(path.join(embedded, 'tokenizer.json'), path.join(dir, 'tokenizer.json'));
        return repoWithAdapter('qwen2', dir, 10);
      },
    ],
  ] as const) {
    it(`${name}: f32 logits within 1e-3 of Idiom's and 32 greedy tokens alike; q8_0 within a bound`, async () => {
      const c = await setup();
      roots.push(c.repo);
      const tokenizer = await Tokenizer.load(path.join(c.baseDir, 'tokenizer.json'));
      const f32 = await compare(c, tokenizer, 'f32');
      console.log(
        `    ${name}: f32 max |Δ logits| = ${f32.delta.toExponential(2)} (max |logit| ${f32.scale.toFixed(2)})`,
      );
      // The adapter is on in llama.cpp: without it the logits move by far more than the tolerance.
      const adapterEffect = maxAbsDiff(f32.llama.logits, f32.llamaBase.logits);
      assert.ok(adapterEffect > 0.05, `the adapter moves llama.cpp's logits by only ${adapterEffect}`);
      assert.ok(f32.delta <= 1e-3, `f32 logits differ by ${f32.delta}`);
      assert.deepEqual(f32.llama.greedy, f32.idiom.greedy);

      const q8 = await compare(c, tokenizer, 'q8_0');
      const same = q8.llama.greedy.findIndex((t, i) => t !== q8.idiom.greedy[i]);
      console.log(
        `    ${name}: q8_0 max |Δ logits| = ${q8.delta.toExponential(2)}, greedy alike for ${same < 0 ? STEPS : same} of ${STEPS} tokens`,
      );
      // q8_0 rounds weights and activations to 1/254 of their block's range: within 5% of the largest logit.
      assert.ok(q8.delta <= 0.05 * Math.max(1, q8.scale), `q8_0 logits differ by ${q8.delta}`);
    });
  }
});
