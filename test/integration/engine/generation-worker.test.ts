import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { EngineWorker } from '../../../trainer/compute/runtime/client';
import { Generator } from '../../../trainer/compute/engine/generate';
import { KvCacheSession } from '../../../trainer/compute/engine/inference';
import { loadCheckpoint, saveCheckpoint, randomCheckpointWeights } from '../../../trainer/model/checkpoint';
import { Rng } from '../../../trainer/model/random';
import { tinyModelConfig } from '../../fixtures/tiny-config';

describe('engine generation inside the worker', function () {
  this.timeout(60000);
  let dir: string;
  let worker: EngineWorker;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-gen-worker-'));
    const cfg = tinyModelConfig({
      model_type: 'qwen2',
      hidden_size: 64,
      intermediate_size: 96,
      vocab_size: 97,
      rms_norm_eps: 1e-6,
      max_position_embeddings: 256,
      tie_word_embeddings: true,
    });
    await saveCheckpoint(dir, cfg, randomCheckpointWeights(cfg, 3, { std: 0.2 }));
    worker = EngineWorker.start();
  });

  after(async () => {
    await worker?.terminate();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('loads a checkpoint, generates with and without an adapter, and matches in-process generation', async () => {
    const loaded = await worker.call('loadModel', dir, { threads: 1, loraInputs: true });
    const prompt = Array.from({ length: 20 }, (_, i) => (i * 7) % 97);
    const inWorker = await worker.call('generate', loaded.id, { prompt, maxTokens: 16 });
    assert.equal(inWorker.tokens.length, 16);

    const checkpoint = await loadCheckpoint(dir);
    const local = new Generator(await KvCacheSession.create(checkpoint.config, checkpoint.weights, { threads: 1 }));
    assert.deepEqual(inWorker.tokens, (await local.generate(prompt, { maxTokens: 16 })).tokens);

    const rng = new Rng(4);
    const modules: Record<
      string,
      {
        a: { dtype: 'float32'; shape: number[]; data: Float32Array };
        b: { dtype: 'float32'; shape: number[]; data: Float32Array };
      }
    > = {};
    for (let layer = 0; layer < 2; layer++) {
      for (const [projection, out] of [
        ['self_attn.q_proj', 64],
        ['self_attn.v_proj', 32],
      ] as const) {
        modules[`model.layers.${layer}.${projection}`] = {
          a: { dtype: 'float32', shape: [4, 64], data: rng.fillNormal(new Float32Array(4 * 64), 0, 0.5) },
          b: { dtype: 'float32', shape: [out, 4], data: rng.fillNormal(new Float32Array(out * 4), 0, 0.5) },
        };
      }
    }
    await worker.call('setAdapter', loaded.id, { scaling: 2, modules });
    const adapted = await worker.call('generate', loaded.id, { prompt, maxTokens: 16 });
    assert.notDeepEqual(adapted.tokens, inWorker.tokens, 'the adapter should change greedy output');
    // Scoring in the worker: the adapter's NLL differs; base: true equals the in-process base model's.
    const windows = [prompt, prompt.map((t) => (t + 5) % 97)];
    const adaptedNll = await worker.call('score', loaded.id, windows);
    const baseNll = await worker.call('score', loaded.id, windows, { base: true });
    assert.ok(adaptedNll instanceof Float32Array && adaptedNll.length === 2 * (prompt.length - 1));
    for (const [w, window] of windows.entries()) {
      const expected = await local.session.nll(window);
      const got = baseNll.subarray(w * (prompt.length - 1), (w + 1) * (prompt.length - 1));
      assert.ok(
        expected.every((v, i) => Math.abs(v - got[i]) < 1e-5),
        `window ${w}: worker base NLL differs from in-process`,
      );
    }
    assert.ok(
      adaptedNll.some((v, i) => Math.abs(v - baseNll[i]) > 1e-3),
      'the adapter should change the NLL',
    );
    await worker.call('setAdapter', loaded.id, null);
    assert.deepEqual((await worker.call('generate', loaded.id, { prompt, maxTokens: 16 })).tokens, inWorker.tokens);

    await worker.call('disposeModel', loaded.id);
    await assert.rejects(worker.call('generate', loaded.id, { prompt, maxTokens: 1 }), /no model/);
    await local.session.dispose();
  });
});
