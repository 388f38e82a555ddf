import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeSafetensors } from '../../../trainer/model/safetensors';
import { loadAdapter, peftKey, writeAdapter } from '../../../trainer/adapters/peft';
import type { HostTensor } from '../../../trainer/model/tensor';
import { BASE_SHA, draftManifest, randomLoraTensors, tempDir, tinyConfig } from './helpers';
import { tinyModelConfig } from '../../fixtures/tiny-config';

/** Rejects with exactly one line matching `pattern`. */
async function refuses(promise: Promise<unknown>, pattern: RegExp): Promise<void> {
  await assert.rejects(promise, (error: Error) => {
    assert.ok(!error.message.includes('\n'), `not one line: ${error.message}`);
    assert.match(error.message, pattern);
    return true;
  });
}

describe('corrupt or mismatched adapters are refused', () => {
  let root: string;
  let good: string;
  const weightsOf = (dir: string) => path.join(dir, 'adapter_model.safetensors');
  const configOf = (dir: string) => path.join(dir, 'adapter_config.json');

  beforeEach(async () => {
    root = tempDir('refuse');
    good = path.join(root, 'good');
    await writeAdapter(good, {
      config: { r: 4, alpha: 8, targets: ['q_proj', 'v_proj'] },
      tensors: randomLoraTensors(tinyConfig, 4, ['q_proj', 'v_proj'], 11),
      manifest: draftManifest(),
      baseConfig: tinyConfig,
    });
    await loadAdapter(good, tinyConfig, { baseSha256: BASE_SHA }); // the starting point is valid
  });
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  /** The good adapter's folder with its safetensors replaced by `tensors`, and no manifest. */
  function variant(
    name: string,
    tensors: Map<string, HostTensor>,
    config?: (c: Record<string, unknown>) => void,
  ): string {
    const dir = path.join(root, name);
    fs.cpSync(good, dir, { recursive: true });
    fs.rmSync(path.join(dir, 'manifest.json'));
    writeSafetensors(weightsOf(dir), tensors, { format: 'pt' });
    if (config) {
      const json = JSON.parse(fs.readFileSync(configOf(dir), 'utf8'));
      config(json);
      fs.writeFileSync(configOf(dir), JSON.stringify(json));
    }
    return dir;
  }

  it('a truncated safetensors file', async () => {
    const bytes = fs.readFileSync(weightsOf(good));
    fs.writeFileSync(weightsOf(good), bytes.subarray(0, Math.floor(bytes.length / 2)));
    await refuses(loadAdapter(good, tinyConfig), /invalid safetensors: .*out of bounds/);
  });

  it('a safetensors file with a garbled header', async () => {
    const bytes = fs.readFileSync(weightsOf(good));
    bytes.write('#!garbage', 8);
    fs.writeFileSync(weightsOf(good), bytes);
    await refuses(loadAdapter(good, tinyConfig), /invalid safetensors: header is not valid JSON/);
  });

  it('weights whose bytes no longer match the manifest (a flipped bit)', async () => {
    const bytes = fs.readFileSync(weightsOf(good));
    bytes[bytes.length - 3] ^= 0x10;
    fs.writeFileSync(weightsOf(good), bytes);
    await refuses(loadAdapter(good, tinyConfig), /does not match manifest\.json.*changed or are corrupt/);
  });

  it('a missing adapter_config.json, or one that is not JSON', async () => {
    fs.writeFileSync(configOf(good), '{"peft_type": "LORA", ');
    await refuses(loadAdapter(good, tinyConfig), /adapter_config\.json: invalid JSON/);
    fs.rmSync(configOf(good));
    await refuses(loadAdapter(good, tinyConfig), /missing adapter_config\.json/);
  });

  it('a folder that does not exist', async () => {
    await refuses(loadAdapter(path.join(root, 'nope'), tinyConfig), /no such adapter folder/);
  });

  it('shapes that do not fit the base model', async () => {
    const wider = tinyModelConfig({ hidden_size: 32 });
    await refuses(loadAdapter(good, wider), /wrong shapes for the base: lora_A \[4, 16\].*expected \[4, 32\]/);
  });

  it('an unknown or unsupported target module', async () => {
    const tensors = randomLoraTensors(tinyConfig, 4, ['q_proj', 'v_proj'], 12);
    await refuses(
      loadAdapter(
        variant('unknown', tensors, (c) => (c.target_modules = ['q_proj', 'query_key_value'])),
        tinyConfig,
      ),
      /unknown target module "query_key_value"/,
    );
    await refuses(
      loadAdapter(
        variant('lm-head', tensors, (c) => (c.target_modules = ['q_proj', 'lm_head'])),
        tinyConfig,
      ),
      /target module "lm_head" is not supported/,
    );
  });

  it('a rank mismatch between A and B, or with r', async () => {
    const tensors = randomLoraTensors(tinyConfig, 4, ['q_proj', 'v_proj'], 13);
    const b = tensors.get(peftKey(1, 'v_proj', 'B'))!;
    tensors.set(peftKey(1, 'v_proj', 'B'), {
      dtype: 'float32',
      shape: [b.shape[0], 3],
      data: new Float32Array(b.shape[0] * 3),
    });
    await refuses(
      loadAdapter(variant('rank', tensors), tinyConfig),
      /model\.layers\.1\.self_attn\.v_proj: rank mismatch: lora_A \[4, 16\] has rank 4, lora_B \[8, 3\] has rank 3/,
    );
    const consistent = randomLoraTensors(tinyConfig, 2, ['q_proj', 'v_proj'], 14);
    await refuses(loadAdapter(variant('r', consistent), tinyConfig), /rank 2 of lora_A \[2, 16\] differs from r = 4/);
  });

  it('a manifest for another base model', async () => {
    await refuses(
      loadAdapter(good, tinyConfig, { baseSha256: 'a'.repeat(64) }),
      /trained on base "tiny-llama".*wrong base model/,
    );
  });

  it('a tensor key that belongs to no known module', async () => {
    const tensors = randomLoraTensors(tinyConfig, 4, ['q_proj', 'v_proj'], 15);
    tensors.set('base_model.model.lm_head.lora_A.weight', {
      dtype: 'float32',
      shape: [4, 16],
      data: new Float32Array(64),
    });
    await refuses(
      loadAdapter(variant('stray', tensors), tinyConfig),
      /tensor "base_model\.model\.lm_head\.lora_A\.weight" does not belong to any known LoRA module/,
    );
    const misplaced = randomLoraTensors(tinyConfig, 4, ['q_proj', 'v_proj'], 15);
    misplaced.set('base_model.model.model.layers.0.mlp.q_proj.lora_A.weight', {
      dtype: 'float32',
      shape: [4, 16],
      data: new Float32Array(64),
    });
    await refuses(loadAdapter(variant('misplaced', misplaced), tinyConfig), /does not belong to any known LoRA module/);
  });

  it('a tensor for a module the config does not target, or a layer the base lacks', async () => {
    const extra = randomLoraTensors(tinyConfig, 4, ['q_proj', 'v_proj', 'o_proj'], 16);
    await refuses(
      loadAdapter(variant('untargeted', extra), tinyConfig),
      /is for model\.layers\.0\.self_attn\.o_proj, which adapter_config\.json does not target/,
    );
    const deep = randomLoraTensors(tinyConfig, 4, ['q_proj', 'v_proj'], 17);
    deep.set(peftKey(5, 'q_proj', 'A'), deep.get(peftKey(0, 'q_proj', 'A'))!);
    await refuses(loadAdapter(variant('deep', deep), tinyConfig), /is for layer 5, but the base has 2 layers/);
  });

  it('a missing half of a pair', async () => {
    const tensors = randomLoraTensors(tinyConfig, 4, ['q_proj', 'v_proj'], 18);
    tensors.delete(peftKey(1, 'q_proj', 'B'));
    await refuses(
      loadAdapter(variant('half', tensors), tinyConfig),
      /missing lora_B for model\.layers\.1\.self_attn\.q_proj/,
    );
  });

  it('pickle-only adapters, DoRA, biases and per-module ranks', async () => {
    fs.renameSync(weightsOf(good), path.join(good, 'adapter_model.bin'));
    await refuses(loadAdapter(good, tinyConfig), /only adapter_model\.bin \(a PyTorch pickle\)/);
    const tensors = randomLoraTensors(tinyConfig, 4, ['q_proj', 'v_proj'], 19);
    await refuses(
      loadAdapter(
        variant('dora', tensors, (c) => (c.use_dora = true)),
        tinyConfig,
      ),
      /DoRA/,
    );
    await refuses(
      loadAdapter(
        variant('bias', tensors, (c) => (c.bias = 'lora_only')),
        tinyConfig,
      ),
      /bias is "lora_only"/,
    );
    await refuses(
      loadAdapter(
        variant('ranks', tensors, (c) => (c.rank_pattern = { q_proj: 8 })),
        tinyConfig,
      ),
      /rank_pattern/,
    );
    await refuses(
      loadAdapter(
        variant('prefix', tensors, (c) => (c.peft_type = 'PREFIX_TUNING')),
        tinyConfig,
      ),
      /only "LORA"/,
    );
  });

  it('an invalid manifest.json', async () => {
    const file = path.join(good, 'manifest.json');
    const manifest = JSON.parse(fs.readFileSync(file, 'utf8'));
    delete manifest.base;
    fs.writeFileSync(file, JSON.stringify(manifest));
    await refuses(loadAdapter(good, tinyConfig), /manifest\.json: field "base" is missing/);
  });

  it('writeAdapter refuses tensors that do not match its config', async () => {
    const tensors = randomLoraTensors(tinyConfig, 4, ['q_proj'], 20);
    const write = (name: string, extra: Partial<Parameters<typeof writeAdapter>[1]>) =>
      writeAdapter(path.join(root, name), {
        config: { r: 4, alpha: 8, targets: ['q_proj'] },
        tensors,
        manifest: draftManifest(),
        baseConfig: tinyConfig,
        ...extra,
      });
    await refuses(
      write('a', { config: { r: 4, alpha: 8, targets: ['q_proj', 'k_proj'] } }),
      /no tensors for model\.layers\.0\.self_attn\.k_proj/,
    );
    await refuses(write('b', { config: { r: 8, alpha: 8, targets: ['q_proj'] } }), /differs from r = 8/);
    await refuses(
      write('c', { tensors: new Map([...tensors, ['model.layers.0.q.weight', tensors.values().next().value!]]) }),
      /does not belong to any known LoRA module/,
    );
    await refuses(
      write('d', { manifest: { ...draftManifest(), mode: 'nope' as never } }),
      /field "mode" must be one of/,
    );
    assert.deepEqual(
      fs.readdirSync(root).filter((name) => name !== 'good'),
      [],
      'a refused write leaves nothing behind',
    );
  });
});
