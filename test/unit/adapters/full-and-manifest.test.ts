import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomCheckpointWeights } from '../../../trainer/model/checkpoint';
import { adapterKind } from '../../../trainer/adapters/folder';
import { loadFullModel, writeFullModel } from '../../../trainer/adapters/full';
import {
  completeManifest,
  isAdapterId,
  makeAdapterId,
  parseManifest,
  sha256Hex,
} from '../../../trainer/adapters/manifest';
import { loadAdapter } from '../../../trainer/adapters/peft';
import { BASE_SHA, draftManifest, tempDir, tinyConfig } from './helpers';
import { tinyModelConfig } from '../../fixtures/tiny-config';

describe('full fine-tuning output', () => {
  let root: string;
  beforeEach(() => {
    root = tempDir('full');
  });
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  const fullDraft = () => {
    const draft = draftManifest();
    return { ...draft, training: { ...draft.training, method: 'full' as const } };
  };

  it('writes config.json + model.safetensors + manifest.json and loads them back bit for bit', async () => {
    const weights = randomCheckpointWeights(tinyConfig, 3);
    const dir = path.join(root, 'full');
    const manifest = await writeFullModel(dir, { config: tinyConfig, weights, manifest: fullDraft() });
    assert.deepEqual(fs.readdirSync(dir).sort(), ['config.json', 'manifest.json', 'model.safetensors']);
    assert.equal(adapterKind(dir), 'full');
    assert.equal(manifest.weights.sha256, sha256Hex(fs.readFileSync(path.join(dir, 'model.safetensors'))));
    assert.equal(manifest.weights.bytes, fs.statSync(path.join(dir, 'model.safetensors')).size);

    const loaded = await loadFullModel(dir, tinyConfig, { baseSha256: BASE_SHA });
    assert.deepEqual(loaded.manifest, manifest);
    for (const [name, tensor] of weights) {
      const back = loaded.checkpoint.weights.get(name)!;
      assert.ok(
        Buffer.from(back.data.buffer, back.data.byteOffset, back.data.byteLength).equals(
          Buffer.from(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength),
        ),
        name,
      );
    }
  });

  it('refuses a wrong base, another architecture, changed weights, and the wrong loader', async () => {
    const dir = path.join(root, 'full');
    await writeFullModel(dir, {
      config: tinyConfig,
      weights: randomCheckpointWeights(tinyConfig, 4),
      manifest: fullDraft(),
    });
    await assert.rejects(loadFullModel(dir, tinyConfig, { baseSha256: 'c'.repeat(64) }), /wrong base model/);
    const other = tinyModelConfig({ num_hidden_layers: 3 });
    await assert.rejects(loadFullModel(dir, other), /does not match the base model \(numLayers is 2, the base has 3\)/);
    await assert.rejects(loadAdapter(dir, tinyConfig), /holds a full fine-tuned model.*loadFullModel/);
    const file = path.join(dir, 'model.safetensors');
    const bytes = fs.readFileSync(file);
    bytes[bytes.length - 1] ^= 1;
    fs.writeFileSync(file, bytes);
    await assert.rejects(loadFullModel(dir, tinyConfig), /does not match manifest\.json/);
    await assert.rejects(
      writeFullModel(path.join(root, 'lora-draft'), {
        config: tinyConfig,
        weights: randomCheckpointWeights(tinyConfig, 4),
        manifest: draftManifest(),
      }),
      /method is "lora"/,
    );
  });
});

describe('manifest.json', () => {
  const weights = { files: ['adapter_model.safetensors'], sha256: sha256Hex('weights'), bytes: 7 };

  it('makes sortable ids from the time and the weights hash', () => {
    const early = makeAdapterId(new Date(Date.UTC(2026, 10, 28, 13, 5, 1)), sha256Hex('a'));
    const late = makeAdapterId(new Date(Date.UTC(2026, 10, 28, 13, 5, 2)), sha256Hex('a'));
    assert.equal(early, `20261128-130501-${sha256Hex('a').slice(0, 6)}`);
    assert.ok(early < late);
    assert.ok(isAdapterId(early));
    assert.ok(!isAdapterId('../etc'));
    assert.ok(!isAdapterId('20261128-130501-ab12cd/x'));
  });

  it('completes a draft and round-trips through JSON', () => {
    const manifest = completeManifest(draftManifest(), weights, new Date(Date.UTC(2026, 0, 2, 3, 4, 5)));
    assert.equal(manifest.schemaVersion, 1);
    assert.equal(manifest.created, '2026-01-02T03:04:05.000Z');
    assert.equal(manifest.id, `20260102-030405-${weights.sha256.slice(0, 6)}`);
    assert.deepEqual(parseManifest(JSON.parse(JSON.stringify(manifest))), manifest);
  });

  it('names the bad field in one line', () => {
    const good = JSON.parse(JSON.stringify(completeManifest(draftManifest(), weights)));
    // biome-ignore lint/suspicious/noExplicitAny: each case edits one field of the parsed JSON, at any depth
    const broken = (change: (m: any) => void) => {
      const copy = JSON.parse(JSON.stringify(good));
      change(copy);
      return () => parseManifest(copy, 'm.json');
    };
    assert.throws(
      broken((m) => delete m.schemaVersion),
      /^Error: m\.json: field "schemaVersion" missing/,
    );
    assert.throws(
      broken((m) => (m.schemaVersion = 99)),
      /this Idiom reads schema 1/,
    );
    assert.throws(
      broken((m) => (m.base.sha256 = 'xyz')),
      /field "base\.sha256" must be 64 lowercase hex digits/,
    );
    assert.throws(
      broken((m) => (m.metrics.adapter.loss = 'low')),
      /field "metrics\.adapter\.loss" must be a finite number/,
    );
    assert.throws(
      broken((m) => (m.metrics.adapter.exactMatch = 2)),
      /between 0 and 1/,
    );
    assert.throws(
      broken((m) => (m.training.method = 'qlora')),
      /field "training\.method" must be one of lora, full/,
    );
    assert.throws(
      broken((m) => (m.dataset.excluded.binary = -1)),
      /field "dataset\.excluded\.binary" must not be negative/,
    );
    assert.throws(
      broken((m) => (m.weights.files = ['../x'])),
      /must be a plain file name/,
    );
    assert.throws(
      broken((m) => (m.parent = 'x')),
      /field "parent" "x" is not an adapter id/,
    );
    assert.throws(() => parseManifest([], 'm.json'), /must be a JSON object/);
  });
});
