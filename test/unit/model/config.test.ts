import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  countParameters,
  loadModelConfig,
  parseModelConfig,
  projectionModule,
  toHfConfigJson,
  weightNames,
  type ModelConfig,
} from '../../../trainer/model/config';

// Shaped like Qwen2.5-Coder-0.5B's config.json: GQA (14 query heads, 2 KV heads), q/k/v bias, tied.
const qwen2Json = {
  architectures: ['Qwen2ForCausalLM'],
  attention_dropout: 0.0,
  bos_token_id: 151643,
  eos_token_id: 151643,
  hidden_act: 'silu',
  hidden_size: 896,
  initializer_range: 0.02,
  intermediate_size: 4864,
  max_position_embeddings: 32768,
  max_window_layers: 24,
  model_type: 'qwen2',
  num_attention_heads: 14,
  num_hidden_layers: 24,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-6,
  rope_scaling: null,
  rope_theta: 1000000.0,
  sliding_window: 32768,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
  transformers_version: '4.44.0',
  use_cache: true,
  use_sliding_window: false,
  vocab_size: 151936,
};

const llamaJson = {
  model_type: 'llama',
  hidden_size: 64,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  intermediate_size: 176,
  vocab_size: 300,
  rms_norm_eps: 1e-5,
  max_position_embeddings: 128,
};

function tempDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-config-'));
}

function product(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

describe('ModelConfig', () => {
  it('parses a Qwen2 config with GQA and q/k/v bias', () => {
    const cfg = parseModelConfig(qwen2Json);
    assert.equal(cfg.modelType, 'qwen2');
    assert.equal(cfg.numHeads, qwen2Json.num_attention_heads);
    assert.equal(cfg.numKvHeads, qwen2Json.num_key_value_heads);
    assert.equal(cfg.headDim, qwen2Json.hidden_size / qwen2Json.num_attention_heads);
    assert.equal(cfg.attentionBias, true);
    assert.equal(cfg.tieWordEmbeddings, true);
    assert.equal(cfg.ropeTheta, qwen2Json.rope_theta);
    assert.equal(cfg.torchDtype, 'bfloat16');

    const specs = new Map(weightNames(cfg).map((s) => [s.name, s.shape]));
    const D = cfg.hiddenSize;
    const hd = cfg.headDim;
    assert.deepEqual(specs.get('model.layers.0.self_attn.q_proj.weight'), [cfg.numHeads * hd, D]);
    assert.deepEqual(specs.get('model.layers.0.self_attn.k_proj.weight'), [cfg.numKvHeads * hd, D]);
    assert.deepEqual(specs.get('model.layers.23.self_attn.v_proj.bias'), [cfg.numKvHeads * hd]);
    assert.deepEqual(specs.get('model.layers.5.self_attn.o_proj.weight'), [D, cfg.numHeads * hd]);
    assert.equal(specs.has('model.layers.0.self_attn.o_proj.bias'), false);
    assert.deepEqual(specs.get('model.layers.3.mlp.down_proj.weight'), [D, cfg.intermediateSize]);
    assert.equal(specs.has('lm_head.weight'), false, 'tied embeddings have no lm_head');
    assert.equal(projectionModule(2, 'gate_proj'), 'model.layers.2.mlp.gate_proj');

    // Parameter count from the architecture's formula, independent of weightNames().
    const { vocabSize: V, intermediateSize: F, numHeads: H, numKvHeads: KV, numLayers: L } = cfg;
    const perLayer = 2 * D + (H * hd * D + H * hd) + 2 * (KV * hd * D + KV * hd) + D * H * hd + 3 * D * F;
    assert.equal(countParameters(cfg), V * D + L * perLayer + D);
    assert.equal(
      weightNames(cfg).reduce((sum, s) => sum + product(s.shape), 0),
      countParameters(cfg),
    );
  });

  it('applies llama defaults (KV heads, head_dim, rope_theta, no bias, untied lm_head)', () => {
    const cfg = parseModelConfig(llamaJson);
    assert.equal(cfg.numKvHeads, cfg.numHeads);
    assert.equal(cfg.headDim, llamaJson.hidden_size / llamaJson.num_attention_heads);
    assert.equal(cfg.ropeTheta, 10000);
    assert.equal(cfg.attentionBias, false);
    assert.equal(cfg.tieWordEmbeddings, false);
    const names = weightNames(cfg).map((s) => s.name);
    assert.ok(names.includes('lm_head.weight'));
    assert.ok(!names.some((n) => n.endsWith('.bias')));
    assert.equal(names.length, 1 + cfg.numLayers * 9 + 2);

    const withBias = parseModelConfig({ ...llamaJson, attention_bias: true, head_dim: 32 });
    assert.equal(withBias.headDim, 32);
    assert.deepEqual(weightNames(withBias).find((s) => s.name === 'model.layers.1.self_attn.q_proj.weight')?.shape, [
      withBias.numHeads * 32,
      withBias.hiddenSize,
    ]);
    assert.ok(weightNames(withBias).some((s) => s.name === 'model.layers.1.self_attn.k_proj.bias'));
  });

  it('parses llama3 and linear rope_scaling, and qwen3 with its q/k norms and head_dim', () => {
    const llama3Scaling = {
      factor: 8.0,
      low_freq_factor: 1.0,
      high_freq_factor: 4.0,
      original_max_position_embeddings: 8192,
      rope_type: 'llama3',
    };
    const llama3 = parseModelConfig({ ...llamaJson, rope_scaling: llama3Scaling });
    assert.deepEqual(llama3.ropeScaling, {
      type: 'llama3',
      factor: llama3Scaling.factor,
      lowFreqFactor: llama3Scaling.low_freq_factor,
      highFreqFactor: llama3Scaling.high_freq_factor,
      originalMaxPositionEmbeddings: llama3Scaling.original_max_position_embeddings,
    });
    // DeepSeek-Coder spells the key "type".
    assert.deepEqual(parseModelConfig({ ...llamaJson, rope_scaling: { type: 'linear', factor: 4 } }).ropeScaling, {
      type: 'linear',
      factor: 4,
    });
    assert.equal(parseModelConfig({ ...llamaJson, rope_scaling: { rope_type: 'default' } }).ropeScaling, undefined);

    const qwen3 = parseModelConfig({ ...qwen2Json, model_type: 'qwen3', head_dim: 128, attention_bias: false });
    assert.equal(qwen3.qkNorm, true);
    assert.equal(qwen3.attentionBias, false);
    assert.equal(qwen3.headDim, 128);
    assert.equal(parseModelConfig(qwen2Json).qkNorm, false);
    const specs = new Map(weightNames(qwen3).map((s) => [s.name, s.shape]));
    assert.deepEqual(specs.get('model.layers.3.self_attn.q_norm.weight'), [qwen3.headDim]);
    assert.deepEqual(specs.get('model.layers.3.self_attn.k_norm.weight'), [qwen3.headDim]);
    assert.deepEqual(specs.get('model.layers.0.self_attn.q_proj.weight'), [qwen3.numHeads * 128, qwen3.hiddenSize]);
    assert.ok(![...specs.keys()].some((name) => name.endsWith('.bias')));
  });

  it('round-trips through toHfConfigJson', () => {
    for (const json of [
      qwen2Json,
      llamaJson,
      { ...qwen2Json, model_type: 'qwen3', head_dim: 128, attention_bias: false },
      { ...llamaJson, rope_scaling: { type: 'linear', factor: 4 } },
      {
        ...llamaJson,
        rope_scaling: {
          rope_type: 'llama3',
          factor: 8,
          low_freq_factor: 1,
          high_freq_factor: 4,
          original_max_position_embeddings: 64,
        },
      },
      { ...llamaJson, eos_token_id: [1, 2], bos_token_id: 0, tie_word_embeddings: true },
    ]) {
      const cfg = parseModelConfig(json);
      const again: ModelConfig = parseModelConfig(JSON.parse(JSON.stringify(toHfConfigJson(cfg))));
      assert.deepEqual(again, cfg);
    }
  });

  it('names the missing or ill-typed field and the file in one line', () => {
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ ...llamaJson, hidden_size: undefined }, /my\/config\.json: missing field "hidden_size"/],
      [{ ...llamaJson, num_hidden_layers: '2' }, /"num_hidden_layers" must be a positive integer, got string/],
      [{ ...llamaJson, vocab_size: 12.5 }, /"vocab_size" must be a positive integer/],
      [{ ...llamaJson, rms_norm_eps: -1 }, /"rms_norm_eps" must be a positive number/],
      [{ ...llamaJson, tie_word_embeddings: 'yes' }, /"tie_word_embeddings" must be true or false/],
      [{ ...llamaJson, model_type: undefined }, /missing field "model_type"/],
      [{ ...llamaJson, model_type: 'mistral' }, /unsupported model_type "mistral"/],
      [{ ...llamaJson, hidden_act: 'gelu' }, /unsupported hidden_act/],
      [{ ...llamaJson, rope_scaling: { rope_type: 'yarn', factor: 4 } }, /unsupported rope_scaling\.rope_type "yarn"/],
      [{ ...llamaJson, rope_scaling: { type: 'dynamic', factor: 2 } }, /unsupported rope_scaling\.type "dynamic"/],
      [{ ...llamaJson, rope_scaling: { factor: 2 } }, /"rope_scaling" has no "rope_type"/],
      [
        { ...llamaJson, rope_scaling: { rope_type: 'llama3', factor: 8 } },
        /"rope_scaling\.low_freq_factor" must be a positive number, got undefined/,
      ],
      [{ ...llamaJson, rope_scaling: { type: 'linear', factor: 0 } }, /"rope_scaling\.factor" must be a positive/],
      [{ ...llamaJson, model_type: 'qwen3', use_sliding_window: true }, /use_sliding_window/],
      [{ ...llamaJson, num_key_value_heads: 3 }, /multiple of num_key_value_heads/],
      [{ ...llamaJson, num_attention_heads: 5 }, /divisible by num_attention_heads/],
      [{ ...qwen2Json, use_sliding_window: true }, /use_sliding_window/],
    ];
    for (const [json, pattern] of cases) {
      assert.throws(
        () => parseModelConfig(json, 'my/config.json'),
        (error: Error) => {
          assert.match(error.message, pattern);
          assert.match(error.message, /^my\/config\.json: /);
          assert.ok(!error.message.includes('\n'));
          return true;
        },
      );
    }
    assert.throws(() => parseModelConfig([1, 2]), /must be a JSON object/);
    assert.throws(() => parseModelConfig(null), /must be a JSON object/);
  });

  it('loads config.json from a folder, with clear errors for missing and invalid files', () => {
    const dir = tempDir();
    try {
      assert.throws(() => loadModelConfig(dir), /config\.json: cannot read model config \(ENOENT\)/);
      fs.writeFileSync(path.join(dir, 'config.json'), '{"model_type": "llama",');
      assert.throws(() => loadModelConfig(dir), /config\.json: invalid JSON/);
      fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(qwen2Json));
      assert.equal(loadModelConfig(dir).numKvHeads, qwen2Json.num_key_value_heads);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
