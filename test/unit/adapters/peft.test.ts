import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { projectionModule, type Projection } from '../../../trainer/model/config';
import { bfloat16ArrayToFloat32, float32ArrayToBfloat16 } from '../../../trainer/model/float16';
import { writeSafetensors } from '../../../trainer/model/safetensors';
import { loraInputName } from '../../../trainer/compute/engine/llama';
import { mergeLora, type LoraAdapter } from '../../../trainer/compute/engine/weights';
import { randomCheckpointWeights } from '../../../trainer/model/checkpoint';
import { projectionWeightName } from '../../../trainer/model/config';
import { adapterKind } from '../../../trainer/adapters/folder';
import { isAdapterId } from '../../../trainer/adapters/manifest';
import {
  loadAdapter,
  loraAdapterOf,
  loraParameterCount,
  peftKey,
  peftTensorsOf,
  writeAdapter,
} from '../../../trainer/adapters/peft';
import type { HostTensor } from '../../../trainer/model/tensor';
import { ALL_TARGETS, BASE_SHA, draftManifest, randomLoraTensors, tempDir, tinyConfig } from './helpers';

function bits(tensor: HostTensor): Buffer {
  return Buffer.from(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength);
}

/** An adapter folder as PEFT's save_pretrained writes it (config keys, tensor names, metadata). */
function writePeftStyleAdapter(
  dir: string,
  config: Record<string, unknown>,
  tensors: Map<string, HostTensor>,
  floatDtype: 'F32' | 'F16' | 'BF16' = 'F32',
): void {
  fs.mkdirSync(dir, { recursive: true });
  const peftConfig = {
    alpha_pattern: {},
    auto_mapping: null,
    base_model_name_or_path: 'someone/tiny-llama',
    bias: 'none',
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layer_replication: null,
    layers_pattern: null,
    layers_to_transform: null,
    loftq_config: {},
    lora_alpha: 16,
    lora_dropout: 0.05,
    megatron_config: null,
    megatron_core: 'megatron.core',
    modules_to_save: null,
    peft_type: 'LORA',
    r: 4,
    rank_pattern: {},
    revision: null,
    target_modules: ['v_proj', 'q_proj'],
    task_type: 'CAUSAL_LM',
    use_dora: false,
    use_rslora: false,
    ...config,
  };
  fs.writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify(peftConfig, null, 2));
  writeSafetensors(path.join(dir, 'adapter_model.safetensors'), tensors, { format: 'pt' }, { floatDtype });
}

describe('PEFT adapters', () => {
  let root: string;
  beforeEach(() => {
    root = tempDir('peft');
  });
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  it('uses the same tensor names as the engine and the training graph', () => {
    for (const projection of ALL_TARGETS) {
      assert.equal(peftKey(1, projection, 'A'), loraInputName(projectionModule(1, projection), 'A'));
      assert.equal(peftKey(1, projection, 'B'), loraInputName(projectionModule(1, projection), 'B'));
    }
    assert.equal(peftKey(0, 'q_proj', 'A'), 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight');
    assert.equal(peftKey(3, 'down_proj', 'B'), 'base_model.model.model.layers.3.mlp.down_proj.lora_B.weight');
  });

  it('round-trips: write then load gives the same bits, config and manifest', async () => {
    const tensors = randomLoraTensors(tinyConfig, 4, ALL_TARGETS, 1);
    const dir = path.join(root, 'adapter');
    const manifest = await writeAdapter(dir, {
      config: { r: 4, alpha: 8, targets: ALL_TARGETS, dropout: 0.05, baseModelNameOrPath: 'tiny-llama' },
      tensors,
      manifest: draftManifest(),
      baseConfig: tinyConfig,
    });
    assert.deepEqual(fs.readdirSync(dir).sort(), ['adapter_config.json', 'adapter_model.safetensors', 'manifest.json']);
    assert.deepEqual(fs.readdirSync(root), ['adapter'], 'no temp folder left behind');
    assert.equal(adapterKind(dir), 'lora');

    const fileSha = createHash('sha256')
      .update(fs.readFileSync(path.join(dir, 'adapter_model.safetensors')))
      .digest('hex');
    assert.equal(manifest.weights.sha256, fileSha);
    assert.ok(isAdapterId(manifest.id), manifest.id);
    assert.ok(manifest.id.endsWith(fileSha.slice(0, 6)));

    const config = JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8'));
    assert.equal(config.peft_type, 'LORA');
    assert.equal(config.task_type, 'CAUSAL_LM');
    assert.equal(config.r, 4);
    assert.equal(config.lora_alpha, 8);
    assert.equal(config.bias, 'none');
    assert.equal(config.fan_in_fan_out, false);
    assert.equal(config.use_rslora, false);
    assert.equal(config.inference_mode, true);
    assert.equal(config.modules_to_save, null);
    assert.deepEqual(config.target_modules, ALL_TARGETS);

    const loaded = await loadAdapter(dir, tinyConfig, { baseSha256: BASE_SHA });
    assert.equal(loaded.config.r, 4);
    assert.equal(loaded.config.alpha, 8);
    assert.equal(loaded.config.scaling, 8 / 4);
    assert.deepEqual(loaded.config.targets, ALL_TARGETS);
    assert.deepEqual(loaded.config.layers, [0, 1]);
    assert.equal(loaded.modules.size, tinyConfig.numLayers * ALL_TARGETS.length);
    assert.deepEqual(loaded.manifest, manifest);
    const back = peftTensorsOf(loaded);
    assert.equal(back.size, tensors.size);
    for (const [key, tensor] of tensors) {
      const other = back.get(key);
      assert.ok(other, key);
      assert.deepEqual(other.shape, tensor.shape);
      assert.ok(bits(other).equals(bits(tensor)), `${key} bits differ`);
    }
    const engineView = loraAdapterOf(loaded);
    assert.equal(engineView.scaling, 2);
    assert.ok(engineView.modules.get('model.layers.1.mlp.up_proj'));
    // r · (in + out) summed over modules, from the shapes themselves.
    let expected = 0;
    for (const m of loaded.modules.values()) expected += m.a.data.length + m.b.data.length;
    assert.equal(loraParameterCount(loaded.config, tinyConfig), expected);
  });

  it('writes float16 when asked, and refuses to overwrite an existing folder', async () => {
    const tensors = randomLoraTensors(tinyConfig, 2, ['q_proj'], 2);
    const dir = path.join(root, 'half');
    await writeAdapter(dir, {
      config: { r: 2, alpha: 4, targets: ['q_proj'] },
      tensors,
      manifest: draftManifest(),
      baseConfig: tinyConfig,
      dtype: 'float16',
    });
    const loaded = await loadAdapter(dir, tinyConfig);
    const a = loaded.modules.get('model.layers.0.self_attn.q_proj')!.a.data as Float32Array;
    const original = tensors.get(peftKey(0, 'q_proj', 'A'))!.data as Float32Array;
    for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i] - original[i]) <= Math.abs(original[i]) * 1e-3 + 1e-6);
    await assert.rejects(
      writeAdapter(dir, {
        config: { r: 2, alpha: 4, targets: ['q_proj'] },
        tensors,
        manifest: draftManifest(),
        baseConfig: tinyConfig,
      }),
      /already exists/,
    );
  });

  it('loads an adapter written with PEFT naming and config (no manifest, bf16, targets in any order)', async () => {
    const targets: Projection[] = ['q_proj', 'v_proj'];
    const tensors = randomLoraTensors(tinyConfig, 4, targets, 3);
    const dir = path.join(root, 'from-peft');
    writePeftStyleAdapter(dir, {}, tensors, 'BF16');
    const loaded = await loadAdapter(dir, tinyConfig, { baseSha256: BASE_SHA });
    assert.equal(loaded.manifest, null);
    assert.equal(loaded.config.scaling, 16 / 4);
    assert.deepEqual(loaded.config.targets, ['q_proj', 'v_proj']);
    assert.equal(loaded.config.dropout, 0.05);
    assert.equal(loaded.config.baseModelNameOrPath, 'someone/tiny-llama');
    for (const [key, tensor] of tensors) {
      const other = peftTensorsOf(loaded).get(key)!;
      const expected = bfloat16ArrayToFloat32(float32ArrayToBfloat16(tensor.data as Float32Array));
      assert.ok(bits(other).equals(bits({ dtype: 'float32', shape: tensor.shape, data: expected })), key);
    }
  });

  it('loads keys that still carry the adapter name (lora_A.default.weight), rsLoRA, regex and layer selections', async () => {
    const tensors = randomLoraTensors(tinyConfig, 4, ['k_proj', 'down_proj'], 4);
    const renamed = new Map<string, HostTensor>();
    for (const [key, tensor] of tensors)
      renamed.set(key.replace(/\.lora_([AB])\.weight$/, '.lora_$1.default.weight'), tensor);
    const dir = path.join(root, 'old-names');
    writePeftStyleAdapter(dir, { target_modules: ['k_proj', 'down_proj'], use_rslora: true, lora_alpha: 6 }, renamed);
    const loaded = await loadAdapter(dir, tinyConfig);
    assert.equal(loaded.config.scaling, 6 / Math.sqrt(4));
    assert.equal(loaded.modules.size, 4);

    // A regular expression over module paths, limited to layer 1 (as PEFT matches it: full match).
    const layerOne = new Map([...tensors].filter(([key]) => key.includes('.layers.1.')));
    const regexDir = path.join(root, 'regex');
    writePeftStyleAdapter(regexDir, { target_modules: '.*\\.(k_proj|down_proj)', layers_to_transform: [1] }, layerOne);
    const regexLoaded = await loadAdapter(regexDir, tinyConfig);
    assert.deepEqual(regexLoaded.config.layers, [1]);
    assert.deepEqual(regexLoaded.config.modules, ['model.layers.1.self_attn.k_proj', 'model.layers.1.mlp.down_proj']);

    const all = randomLoraTensors(tinyConfig, 2, ALL_TARGETS, 5);
    const allDir = path.join(root, 'all-linear');
    writePeftStyleAdapter(allDir, { target_modules: 'all-linear', r: 2 }, all);
    assert.deepEqual((await loadAdapter(allDir, tinyConfig)).config.targets, ALL_TARGETS);
  });

  it('feeds the engine: merging a loaded rsLoRA adapter gives W + alpha/sqrt(r) · B·A', async () => {
    const tensors = randomLoraTensors(tinyConfig, 4, ['o_proj'], 6);
    const dir = path.join(root, 'rslora');
    writePeftStyleAdapter(dir, { target_modules: ['o_proj'], use_rslora: true, lora_alpha: 12 }, tensors);
    const adapter: LoraAdapter = loraAdapterOf(await loadAdapter(dir, tinyConfig));
    const weight = randomCheckpointWeights(tinyConfig, 7).get(projectionWeightName(1, 'o_proj'))!;
    const merged = mergeLora(weight, adapter.modules.get('model.layers.1.self_attn.o_proj')!, adapter.scaling)
      .data as Float32Array;
    // Reference: plain loops over the tensors as written, with PEFT's rsLoRA scaling.
    const A = tensors.get(peftKey(1, 'o_proj', 'A'))!.data as Float32Array;
    const B = tensors.get(peftKey(1, 'o_proj', 'B'))!.data as Float32Array;
    const [outFeatures, inFeatures] = weight.shape;
    const W = weight.data as Float32Array;
    const scaling = 12 / Math.sqrt(4);
    let maxError = 0;
    for (let o = 0; o < outFeatures; o++) {
      for (let i = 0; i < inFeatures; i++) {
        let delta = 0;
        for (let k = 0; k < 4; k++) delta += B[o * 4 + k] * A[k * inFeatures + i];
        maxError = Math.max(maxError, Math.abs(merged[o * inFeatures + i] - (W[o * inFeatures + i] + scaling * delta)));
      }
    }
    assert.ok(maxError < 1e-5, `max error ${maxError}`);
  });
});
