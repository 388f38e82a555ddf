import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadAdapter, loraAdapterOf, writeAdapter } from '../../../trainer/adapters/peft';
import { Registry } from '../../../trainer/adapters/registry';
import { KvCacheSession } from '../../../trainer/compute/engine/inference';
import { loadCheckpoint, randomCheckpointWeights, saveCheckpoint } from '../../../trainer/model/checkpoint';
import { PROJECTIONS } from '../../../trainer/model/config';
import { tinyConfigJson, tinyModelConfig } from '../../fixtures/tiny-config';
import { draftManifest, randomLoraTensors, tempDir } from '../../unit/adapters/helpers';

// `idiom adapters export` through the command line on a real git repository: PEFT files that
// pass PEFT's key layout, a merged checkpoint whose logits equal base + adapter in Idiom's engine,
// the serve lines, and one-line refusals (an architecture llama.cpp cannot take, an existing --out).

const bin = path.join(__dirname, '..', '..', '..', 'trainer', 'cli', 'bin.js');
const tokenizerJson = path.join(__dirname, '..', '..', '..', 'models', 'tokenizer.json');

function idiom(...args: string[]) {
  return spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8' });
}

/** A tiny random base (a folder with the embedded tokenizer), a repository and one active adapter on it. */
async function setup(name: string, overrides: Record<string, unknown> = {}) {
  const root = tempDir(`export-cli-${name}`);
  const baseDir = path.join(root, 'base');
  const config = tinyModelConfig({ vocab_size: 4096, ...overrides });
  await saveCheckpoint(baseDir, config, randomCheckpointWeights(config, 3, { std: 0.1 }));
  fs.copyFileSync(tokenizerJson, path.join(baseDir, 'tokenizer.json'));
  const base = await loadCheckpoint(baseDir);
  const repo = path.join(root, 'repo');
  spawnSync('git', ['init', '-q', repo]);
  const registry = await Registry.open(repo);
  const staging = registry.stagingPath();
  await writeAdapter(staging, {
    config: { r: 2, alpha: 4, targets: PROJECTIONS },
    tensors: randomLoraTensors(config, 2, PROJECTIONS, 8),
    manifest: draftManifest({ base: { name: 'base', sha256: base.sha256 } }),
    baseConfig: config,
  });
  const { id } = await registry.add(staging);
  await registry.activate(id, 'complete');
  return { root, baseDir, repo, id };
}

async function logits(dir: string, prompt: number[], adapterDir?: string): Promise<Float32Array> {
  const checkpoint = await loadCheckpoint(dir);
  const session = await KvCacheSession.create(checkpoint.config, checkpoint.weights, { loraInputs: !!adapterDir });
  if (adapterDir) session.setAdapter(loraAdapterOf(await loadAdapter(adapterDir, checkpoint.config)));
  const row = Float32Array.from(await session.append(prompt));
  await session.dispose();
  return row;
}

describe('idiom adapters export (CLI)', function () {
  this.timeout(60_000);
  const roots: string[] = [];
  after(() => {
    for (const root of roots) fs.rmSync(root, { recursive: true, force: true });
  });

  it('peft: the adapter files as they are, checked against PEFT key layout, with the vLLM line', async () => {
    const s = await setup('peft');
    roots.push(s.root);
    const out = path.join(s.root, 'peft');
    const run = idiom(
      'adapters',
      'export',
      'active',
      '--format',
      'peft',
      '--out',
      out,
      '--base',
      s.baseDir,
      '--repo',
      s.repo,
    );
    assert.equal(run.status, 0, run.stderr);
    const source = path.join(s.repo, '.idiom', 'adapters', s.id);
    for (const file of ['adapter_config.json', 'adapter_model.safetensors', 'manifest.json'])
      assert.ok(fs.readFileSync(path.join(out, file)).equals(fs.readFileSync(path.join(source, file))), file);
    assert.match(run.stdout, new RegExp(`--enable-lora --max-lora-rank 8 --lora-modules idiom-${s.id}=${out}\\n`));
    assert.match(run.stdout, new RegExp(`ADAPTER ${out}\\n`));
  });

  it('merged: a Hugging Face checkpoint whose logits equal the base serving the adapter', async () => {
    const s = await setup('merged');
    roots.push(s.root);
    const out = path.join(s.root, 'merged');
    const run = idiom(
      'adapters',
      'export',
      s.id,
      '--format',
      'merged',
      '--out',
      out,
      '--base',
      s.baseDir,
      '--repo',
      s.repo,
      '--json',
    );
    assert.equal(run.status, 0, run.stderr);
    const result = JSON.parse(run.stdout);
    assert.deepEqual(result.files, [
      'config.json',
      'model.safetensors',
      'tokenizer.json',
      'manifest.json',
      'Modelfile',
    ]);
    assert.equal(result.serve.vllm, `vllm serve ${out} --served-model-name idiom-${s.id}`);
    const prompt = [5, 17, 300, 42, 9, 1000];
    const merged = await logits(out, prompt);
    const served = await logits(s.baseDir, prompt, path.join(s.repo, '.idiom', 'adapters', s.id));
    const plain = await logits(s.baseDir, prompt);
    let delta = 0;
    let effect = 0;
    for (let i = 0; i < merged.length; i++) {
      delta = Math.max(delta, Math.abs(merged[i] - served[i]));
      effect = Math.max(effect, Math.abs(served[i] - plain[i]));
    }
    assert.ok(effect > 100 * 1e-4, `the adapter moves the logits by only ${effect}`);
    assert.ok(delta <= 1e-4, `merged logits differ from base + adapter by ${delta}`);

    const again = idiom(
      'adapters',
      'export',
      s.id,
      '--format',
      'merged',
      '--out',
      out,
      '--base',
      s.baseDir,
      '--repo',
      s.repo,
    );
    assert.equal(again.status, 1);
    assert.equal(again.stderr, `idiom: ${out} already exists; give another --out or remove it\n`);
  });

  it('gguf: refuses, in one line, a base llama.cpp cannot take, and writes nothing', async () => {
    const s = await setup('refuse', {
      model_type: 'qwen2',
      rope_scaling: {
        rope_type: 'llama3',
        factor: 8,
        low_freq_factor: 1,
        high_freq_factor: 4,
        original_max_position_embeddings: 16,
      },
    });
    roots.push(s.root);
    const out = path.join(s.root, 'gguf');
    const run = idiom(
      'adapters',
      'export',
      'active',
      '--format',
      'gguf',
      '--out',
      out,
      '--base',
      s.baseDir,
      '--repo',
      s.repo,
    );
    assert.equal(run.status, 1);
    assert.match(run.stderr, /^idiom: GGUF export: llama\.cpp's qwen2 architecture takes no llama3 rope_scaling .*\n$/);
    assert.ok(!fs.existsSync(out));

    // A model_type llama.cpp has no architecture for is refused before its weights are read.
    fs.writeFileSync(path.join(s.baseDir, 'config.json'), JSON.stringify(tinyConfigJson({ model_type: 'gpt_neox' })));
    const other = idiom(
      'adapters',
      'export',
      'active',
      '--format',
      'gguf',
      '--out',
      out,
      '--base',
      s.baseDir,
      '--repo',
      s.repo,
    );
    assert.equal(other.status, 1);
    assert.match(other.stderr, /^idiom: GGUF export: model_type "gpt_neox" has no llama\.cpp architecture .*\n$/);
    assert.ok(!fs.existsSync(out));
  });
});
