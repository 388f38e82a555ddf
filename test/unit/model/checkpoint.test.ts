import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { HostTensor } from '../../../trainer/model/tensor';
import { toHfConfigJson, weightNames, type ModelConfig } from '../../../trainer/model/config';
import { loadCheckpoint, randomCheckpointWeights, saveCheckpoint } from '../../../trainer/model/checkpoint';
import { writeSafetensors } from '../../../trainer/model/safetensors';
import { tinyModelConfig } from '../../fixtures/tiny-config';

const tinyLlama: ModelConfig = tinyModelConfig({
  hidden_size: 32,
  num_key_value_heads: 4,
  intermediate_size: 48,
  vocab_size: 50,
  max_position_embeddings: 64,
  tie_word_embeddings: false,
});

// GQA (4 query heads share 2 KV heads), q/k/v bias, tied embeddings.
const tinyQwen2: ModelConfig = tinyModelConfig({
  model_type: 'qwen2',
  hidden_size: 32,
  intermediate_size: 40,
  vocab_size: 60,
  rms_norm_eps: 1e-6,
  max_position_embeddings: 64,
  rope_theta: 1000000,
  tie_word_embeddings: true,
});

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-checkpoint-'));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

function sha256Of(...files: string[]): string {
  const hash = createHash('sha256');
  for (const file of files) hash.update(fs.readFileSync(file));
  return hash.digest('hex');
}

function writeConfig(folder: string, cfg: ModelConfig): void {
  fs.writeFileSync(path.join(folder, 'config.json'), JSON.stringify(toHfConfigJson(cfg)));
}

function floats(tensor: HostTensor | undefined): Float32Array {
  assert.ok(tensor, 'tensor present');
  assert.equal(tensor.dtype, 'float32');
  return tensor.data as Float32Array;
}

describe('checkpoints', () => {
  it('saves and loads a llama checkpoint bit-exactly, with the sha256 of model.safetensors', async () => {
    const weights = randomCheckpointWeights(tinyLlama, 3);
    const saved = await saveCheckpoint(dir, tinyLlama, weights);
    assert.deepEqual(saved.files, ['model.safetensors']);
    const loaded = await loadCheckpoint(dir);
    assert.deepEqual(loaded.config, { ...tinyLlama, torchDtype: 'float32' });
    assert.equal(loaded.sha256, sha256Of(path.join(dir, 'model.safetensors')));
    assert.equal(saved.sha256, loaded.sha256);
    assert.deepEqual(
      [...loaded.weights.keys()],
      weightNames(tinyLlama).map((s) => s.name),
    );
    for (const [name, tensor] of weights) {
      assert.deepEqual(loaded.weights.get(name)!.shape, tensor.shape);
      assert.deepEqual(floats(loaded.weights.get(name)), tensor.data, name);
    }
  });

  it('loads a Qwen2 checkpoint (GQA, q/k/v bias, tied) saved as float16, within half precision', async () => {
    const weights = randomCheckpointWeights(tinyQwen2, 11);
    assert.ok(weights.has('model.layers.1.self_attn.k_proj.bias'));
    assert.deepEqual(weights.get('model.layers.1.self_attn.k_proj.weight')!.shape, [2 * 8, 32]);
    await saveCheckpoint(dir, tinyQwen2, weights, { dtype: 'float16' });
    const loaded = await loadCheckpoint(dir);
    assert.equal(loaded.config.torchDtype, 'float16');
    assert.equal(loaded.weights.has('lm_head.weight'), false);
    for (const [name, tensor] of weights) {
      const original = tensor.data as Float32Array;
      const back = floats(loaded.weights.get(name));
      for (let i = 0; i < original.length; i++) {
        // Half keeps 11 significant bits; below 2^-14 the spacing is a fixed 2^-24.
        const tolerance = Math.max(Math.abs(original[i]) * 2 ** -11, 2 ** -25);
        assert.ok(Math.abs(back[i] - original[i]) <= tolerance, `${name}[${i}] ${original[i]} -> ${back[i]}`);
      }
    }
  });

  it('loads a sharded checkpoint through model.safetensors.index.json (F32 + BF16 shards, extra tensors ignored)', async () => {
    const weights = randomCheckpointWeights(tinyQwen2, 5);
    const names = [...weights.keys()];
    const half = Math.floor(names.length / 2);
    const first = new Map(names.slice(0, half).map((n) => [n, weights.get(n)!]));
    const second = new Map<string, HostTensor>(names.slice(half).map((n) => [n, weights.get(n)!]));
    // Rotary inverse frequencies are buffers some exporters save; they are not weights.
    second.set('model.layers.0.self_attn.rotary_emb.inv_freq', {
      dtype: 'float32',
      shape: [4],
      data: new Float32Array(4),
    });
    writeSafetensors(path.join(dir, 'model-00001-of-00002.safetensors'), first, { format: 'pt' });
    writeSafetensors(
      path.join(dir, 'model-00002-of-00002.safetensors'),
      second,
      { format: 'pt' },
      { floatDtype: 'BF16' },
    );
    const weightMap: Record<string, string> = {};
    for (const n of first.keys()) weightMap[n] = 'model-00001-of-00002.safetensors';
    for (const n of second.keys()) weightMap[n] = 'model-00002-of-00002.safetensors';
    fs.writeFileSync(
      path.join(dir, 'model.safetensors.index.json'),
      JSON.stringify({ metadata: {}, weight_map: weightMap }),
    );
    writeConfig(dir, tinyQwen2);

    const loaded = await loadCheckpoint(dir);
    assert.deepEqual(loaded.files, ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']);
    assert.equal(loaded.sha256, sha256Of(...loaded.files.map((f) => path.join(dir, f))));
    assert.equal(loaded.weights.has('model.layers.0.self_attn.rotary_emb.inv_freq'), false);
    for (const n of first.keys()) assert.deepEqual(floats(loaded.weights.get(n)), weights.get(n)!.data);
    for (const n of names.slice(half)) {
      const original = weights.get(n)!.data as Float32Array;
      const back = floats(loaded.weights.get(n));
      // BF16 keeps 8 significant bits.
      for (let i = 0; i < original.length; i++)
        assert.ok(Math.abs(back[i] - original[i]) <= Math.abs(original[i]) * 2 ** -8);
    }
  });

  it('writes shards itself when asked and reads them back', async () => {
    const weights = randomCheckpointWeights(tinyLlama, 8);
    const saved = await saveCheckpoint(dir, tinyLlama, weights, { shardBytes: 16 * 1024 });
    assert.ok(saved.files.length > 1);
    const index = JSON.parse(fs.readFileSync(path.join(dir, 'model.safetensors.index.json'), 'utf8'));
    const totalBytes = [...weights.values()].reduce((sum, t) => sum + t.data.length * 4, 0);
    assert.equal(index.metadata.total_size, totalBytes);
    const loaded = await loadCheckpoint(dir);
    assert.equal(loaded.sha256, saved.sha256);
    for (const [name, tensor] of weights) assert.deepEqual(floats(loaded.weights.get(name)), tensor.data);
  });

  it('makes deterministic random weights: N(0, 0.02) matrices, unit norms', () => {
    const a = randomCheckpointWeights(tinyQwen2, 1);
    const b = randomCheckpointWeights(tinyQwen2, 1);
    const c = randomCheckpointWeights(tinyQwen2, 2);
    const embed = 'model.embed_tokens.weight';
    assert.deepEqual(a.get(embed)!.data, b.get(embed)!.data);
    assert.notDeepEqual(a.get(embed)!.data, c.get(embed)!.data);
    assert.ok((a.get('model.norm.weight')!.data as Float32Array).every((x) => x === 1));
    assert.ok((a.get('model.layers.1.post_attention_layernorm.weight')!.data as Float32Array).every((x) => x === 1));
    const values = a.get(embed)!.data as Float32Array;
    const std = Math.sqrt(values.reduce((s, x) => s + x * x, 0) / values.length);
    assert.ok(Math.abs(std / 0.02 - 1) < 0.1, `std ${std}`);
  });

  it('fails with one clear error naming the tensor or file', async () => {
    const check = async (pattern: RegExp): Promise<void> => {
      await assert.rejects(loadCheckpoint(dir), (error: Error) => {
        assert.match(error.message, pattern);
        assert.ok(!error.message.includes('\n'));
        return true;
      });
    };
    await check(/config\.json: cannot read model config \(ENOENT\)/);
    writeConfig(dir, tinyLlama);
    await check(/no model\.safetensors or model\.safetensors\.index\.json/);

    const weights = randomCheckpointWeights(tinyLlama, 1);
    const missing = new Map(weights);
    missing.delete('model.layers.1.mlp.up_proj.weight');
    writeSafetensors(path.join(dir, 'model.safetensors'), missing);
    await check(
      /model\.safetensors: missing tensor "model\.layers\.1\.mlp\.up_proj\.weight" \[48, 32\] required by config\.json/,
    );

    const wrongShape = new Map(weights);
    wrongShape.set('model.layers.0.self_attn.k_proj.weight', {
      dtype: 'float32',
      shape: [16, 32],
      data: new Float32Array(512),
    });
    writeSafetensors(path.join(dir, 'model.safetensors'), wrongShape);
    await check(/tensor "model\.layers\.0\.self_attn\.k_proj\.weight" has shape \[16, 32\], expected \[32, 32\]/);

    const integer = new Map(weights);
    integer.set('model.norm.weight', { dtype: 'int32', shape: [32], data: new Int32Array(32) });
    writeSafetensors(path.join(dir, 'model.safetensors'), integer);
    await check(/tensor "model\.norm\.weight" is I32; weights must be F32, F16 or BF16/);

    fs.writeFileSync(path.join(dir, 'model.safetensors'), 'not a safetensors file');
    await check(/model\.safetensors: invalid safetensors: header length \d+ is absurd/);

    fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), '{"weight_map": {"a": "../escape.safetensors"}}');
    await check(/weight_map entry for "a" must be a file name in the same folder/);
    fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), '{"weight_map": {"a": "gone.safetensors"}}');
    await check(/gone\.safetensors: cannot read weights \(ENOENT\)/);
    fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), '{"metadata": {}}');
    await check(/missing "weight_map" object/);
    fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), '{oops');
    await check(/model\.safetensors\.index\.json: invalid JSON/);

    await assert.rejects(
      saveCheckpoint(path.join(dir, 'out'), tinyLlama, missing),
      /missing tensor "model\.layers\.1\.mlp\.up_proj\.weight"/,
    );
  });
});
