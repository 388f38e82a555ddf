import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { loadAdapter, loraAdapterOf } from '../../../trainer/adapters/peft';
import { Registry } from '../../../trainer/adapters/registry';
import { EngineWorker } from '../../../trainer/compute/runtime/client';
import { loadCheckpoint } from '../../../trainer/model/checkpoint';
import { DatasetReader } from '../../../trainer/data/dataset/reader';
import { round } from '../../../trainer/util/round';
import { checkMemorisation, type Canary } from '../../../trainer/training/eval/memorisation';
import type { TrainEvent } from '../../../trainer/training/pipeline/events';
import { trainRepository } from '../../../trainer/training/pipeline/train-repository';
import { buildIdiomRepo } from '../../fixtures/pipeline/idiom-repo';
import { makeTinyModel, type TinyModel } from '../../fixtures/pipeline/tiny-model';

// The memorisation check on a real git repository with the tiny test model: canaries planted
// before training reach neither the dataset, its held-out split, the repository memory nor the
// registry; an adapter trained hard on tiny data writes them out and is not promoted, one
// trained as the other pipeline tests train passes and is.

/** Every file under `dir` as text (gzip files unpacked). */
function allText(dir: string): string {
  let text = '';
  if (!fs.existsSync(dir)) return text;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile()) continue;
    const bytes = fs.readFileSync(path.join(entry.parentPath, entry.name));
    text += entry.name.endsWith('.gz') ? zlib.gunzipSync(bytes).toString('utf8') : bytes.toString('latin1');
  }
  return text;
}

describe('memorisation check before promotion (canaries and extraction)', function () {
  this.timeout(240_000);
  let base: string;
  let model: TinyModel;

  before(async () => {
    base = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-memorisation-'));
    model = await makeTinyModel(path.join(base, 'model'));
  });
  after(() => fs.rmSync(base, { recursive: true, force: true }));

  /**
   * Trains on a fixture repository and watches the run folder while it runs: the canaries it
   * planted, and the text of every dataset example (both splits) once the dataset is read.
   */
  async function train(name: string, entities: number, options: Partial<Parameters<typeof trainRepository>[0]>) {
    const repo = buildIdiomRepo(path.join(base, name), entities);
    const staging = path.join(repo.root, '.idiom', 'staging');
    let canaries: Canary[] = [];
    let datasetText = '';
    const onProgress = (event: TrainEvent) => {
      if (event.type !== 'phase' || event.phase !== 'compiling') return;
      const [run] = fs.readdirSync(staging).filter((n) => fs.existsSync(path.join(staging, n, 'canaries.json')));
      const runDir = path.join(staging, run);
      canaries = (JSON.parse(fs.readFileSync(path.join(runDir, 'canaries.json'), 'utf8')) as { canaries: Canary[] })
        .canaries;
      const reader = DatasetReader.open(path.join(runDir, fs.readdirSync(runDir).find((n) => n.endsWith('.idiomds'))!));
      try {
        for (const example of reader.examples()) datasetText += `${model.tokenizer.decode([...example.tokens])}\n`;
      } finally {
        reader.close();
      }
    };
    const result = await trainRepository({
      repo: repo.root,
      base: model.dir,
      threads: 1,
      heldOut: { maxLines: 4 },
      quality: false,
      onProgress,
      ...options,
    });
    return { repo, result, canaries, datasetText };
  }

  it('plants fresh canaries only in the training examples and passes an adapter trained as usual', async () => {
    const { repo, result, canaries, datasetText } = await train('normal', 14, {
      budget: { tokens: 36_000 },
      learningRate: 3e-3,
      seed: 1,
    });
    assert.equal(canaries.length, 6);
    assert.deepEqual(
      canaries.map((c) => c.kind),
      ['credential', 'credential', 'credential', 'code', 'code', 'code'],
    );
    assert.ok(datasetText.includes('NotFoundError'), 'the dataset was read');
    for (const canary of canaries) {
      assert.ok(!datasetText.includes(canary.secret), 'no canary in the dataset or its held-out split');
      assert.ok(!allText(repo.root).includes(canary.secret), 'no canary in the registry or the repository');
    }

    const m = result.memorisation;
    assert.ok(m, 'the check ran by default');
    assert.equal(m.canaries, canaries.length);
    assert.equal(m.exposures.length, canaries.length);
    assert.equal(m.maxExposure, Math.max(...m.exposures));
    const bound = Math.log2(m.candidates + 1);
    for (const e of m.exposures) assert.ok(e >= 0 && e <= bound + 1e-9, `exposure ${e} of ${bound}`);
    assert.equal(m.estimatedExposures?.length, canaries.length);
    assert.equal(m.reproduced, 0, JSON.stringify(m));
    assert.equal(m.extractionHits, 0, JSON.stringify(m));
    assert.equal(result.activated, true, result.promotion.reason);
    assert.match(result.promotion.reason, /memorisation check passed/);

    const registry = await Registry.open(repo.root);
    assert.deepEqual((await registry.manifest(result.adapter.id)).metrics.memorisation, m);
    const html = fs.readFileSync(result.report!, 'utf8');
    assert.match(html, /Memorisation check/);
  });

  it('refuses an adapter over-trained on tiny data: it writes a canary out whole', async () => {
    const { repo, result, canaries } = await train('overtrained', 4, {
      budget: { tokens: 400_000 },
      learningRate: 1e-2,
      maxEpochs: 1000,
      seed: 2,
      report: false,
    });
    const m = result.memorisation;
    assert.ok(m);
    assert.ok(m.reproduced >= 1, JSON.stringify(m));
    assert.equal(m.maxExposure, round(Math.log2(m.candidates + 1), 3), 'a canary written out is ranked first');
    assert.ok(Math.max(...m.estimatedExposures!) > m.maxExposure, 'the extrapolated exposure goes past the bound');
    assert.equal(result.activated, false, result.promotion.reason);
    assert.match(result.promotion.reason, /memorised training text/);
    const registry = await Registry.open(repo.root);
    assert.equal(await registry.activeId('complete'), null);
    assert.ok(await registry.has(result.adapter.id), 'registered, not promoted');
    for (const canary of canaries) assert.ok(!allText(repo.root).includes(canary.secret));

    // Extraction: prompts cut before the string a credential-like name is assigned. A training file
    // that assigns an empty string where a canary's key went draws the key out of this adapter.
    const checkpoint = await loadCheckpoint(model.dir);
    const adapter = loraAdapterOf(
      await loadAdapter(result.adapter.path, checkpoint.config, { baseSha256: checkpoint.sha256 }),
    );
    const documents = canaries
      .filter((c) => c.kind === 'credential')
      .map((c, i) => ({ path: `src/keys${i}.ts`, text: `${c.context}";\n` }));
    const worker = EngineWorker.start();
    try {
      const check = (docs: typeof documents) =>
        checkMemorisation({
          worker,
          model: { kind: 'lora', baseDir: model.dir, adapter },
          tokenizer: model.tokenizer,
          canaries: canaries.slice(0, 1),
          candidates: 16,
          documents: docs,
          threads: 1,
        });
      const extracted = await check(documents);
      assert.equal(extracted.extractionPrompts, documents.length);
      assert.ok(extracted.extractionHits >= 1, JSON.stringify(extracted));
      assert.equal(extracted.passed, false);
      // The same files without a credential-like name give no prompt.
      const renamed = documents.map((d) => ({ ...d, text: d.text.replace('ApiKey', 'Label') }));
      const quiet = await check(renamed);
      assert.equal(quiet.extractionPrompts, 0);
    } finally {
      await worker.terminate();
    }
  });
});
