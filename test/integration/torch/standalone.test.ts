import { strict as assert } from 'node:assert';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { loadAdapter } from '../../../trainer/adapters/peft';
import { buildDataset, loadTokenizerFile } from '../../../trainer/data/dataset/build';
import { DatasetReader } from '../../../trainer/data/dataset/reader';
import { loadCheckpoint } from '../../../trainer/model/checkpoint';
import { fillRows, packEpoch, type TrainExample } from '../../../trainer/training/pipeline/batches';
import { learningRateAt, warmupStepsFor } from '../../../trainer/training/pipeline/plan';
import { EngineWorker } from '../../../trainer/compute/runtime/client';
import { Trainer } from '../../../trainer/training/ort/trainer';
import { buildIdiomRepo } from '../../fixtures/pipeline/idiom-repo';
import { makeTinyModel, type TinyModel } from '../../fixtures/pipeline/tiny-model';
import { requireTorch } from './require-torch';

// trainer/training/torch/train.py on its own (no Node in the loop): a dataset mined from a real git
// repository and a base model folder in, a PEFT adapter + manifest out, which Idiom's own loader
// accepts for that base. With the same seed it must draw the same adapter initialisation and the
// same packed rows as the TypeScript pipeline: replaying those rows through the ONNX Runtime
// trainer gives the same losses (1e-4 relative) and the same adapter (1e-4 relative).

const run = promisify(execFile);
const TRAIN_PY = path.join(__dirname, '..', '..', '..', 'trainer', 'training', 'torch', 'train.py');
const STEPS = 12;
const BATCH = 2;
const SEQ = 64;
const SEED = 7;
const PEAK_LR = 5e-3;
// One process and two gloo ranks do the same float32 arithmetic but for the order of a few sums
// (two rows' gradients in one matmul, or per rank and then all-reduced), so the losses differ by
// a few float32 ulps. AdamW divides each gradient by its own running size, so where a gradient is
// near zero that rounding becomes a step of up to the learning rate: the adapter bound scales with
// it. Averaging the ranks' own token means instead of the global batch's mean fails both bounds.
const LOSS_TOLERANCE = 1e-6;
const ADAPTER_TOLERANCE = 1e-4;

describe('trainer/training/torch/train.py (standalone PyTorch trainer)', function () {
  this.timeout(180_000);
  let dir: string;
  let model: TinyModel;
  let dataset: string;
  let python: string;

  before(async function () {
    const probe = await requireTorch(this);
    python = probe.python;
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-torch-train-'));
    model = await makeTinyModel(path.join(dir, 'base'), { maxPositions: 128 });
    const repo = buildIdiomRepo(dir);
    const { tokenizer, sha256 } = await loadTokenizerFile(model.dir);
    dataset = path.join(dir, 'repo.idiomds');
    await buildDataset(repo.root, { tokenizer, tokenizerSha256: sha256, output: dataset, maxTokens: SEQ + 1 });
  });
  after(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  const trainArgs = (out: string, extra: string[] = []) => [
    TRAIN_PY,
    '--base',
    model.dir,
    '--dataset',
    dataset,
    '--out',
    out,
    '--steps',
    String(STEPS),
    '--batch',
    String(BATCH),
    '--seq',
    String(SEQ),
    '--lora-r',
    '4',
    '--lora-alpha',
    '8',
    '--targets',
    'q_proj,v_proj,up_proj',
    '--lr',
    String(PEAK_LR),
    '--seed',
    String(SEED),
    '--threads',
    '1',
    '--device',
    'cpu',
    ...extra,
  ];

  it('writes an adapter Idiom loads for that base, having trained as the TypeScript pipeline would', async () => {
    const out = path.join(dir, 'adapter');
    const { stdout } = await run(python, trainArgs(out), { maxBuffer: 1 << 24 });
    const events = stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line));
    const steps = events.filter((e) => e.type === 'step');
    assert.deepEqual(
      steps.map((e) => e.step),
      Array.from({ length: STEPS }, (_, i) => i + 1),
    );
    for (const e of steps)
      for (const key of [
        'loss',
        'learningRate',
        'tokens',
        'tokensPerSecond',
        'elapsedSeconds',
        'etaSeconds',
        'fraction',
      ])
        assert.equal(typeof e[key], 'number', key);
    const result = events.at(-1);
    assert.equal(result.type, 'result');
    assert.equal(result.steps, STEPS);

    const base = await loadCheckpoint(model.dir);
    const adapter = await loadAdapter(out, model.config, { baseSha256: base.sha256 });
    assert.equal(adapter.manifest!.training.backend, 'torch');
    assert.equal(adapter.manifest!.training.steps, STEPS);
    assert.equal(adapter.manifest!.id, result.adapter.id);
    assert.deepEqual(adapter.config.targets, ['q_proj', 'v_proj', 'up_proj']);

    // The same run through the ONNX Runtime trainer, batches built by the pipeline's own code.
    const reader = DatasetReader.open(dataset);
    const examples: TrainExample[] = [...reader.examples('train')].map((e) => ({
      tokens: e.tokens,
      lossStart: e.record.lossStart,
    }));
    const padId = reader.header.tokenizer.eos ?? 0;
    reader.close();
    const rows = packEpoch(examples, SEQ + 1, SEED, 0);
    assert.ok(rows.length >= STEPS * BATCH, `the fixture needs ${STEPS * BATCH} rows, has ${rows.length}`);
    const schedule = {
      peakLearningRate: PEAK_LR,
      warmupSteps: warmupStepsFor(STEPS),
      totalSteps: STEPS,
      minRatio: 0.1,
    };
    const worker = EngineWorker.start();
    try {
      const trainer = await Trainer.create(
        worker,
        { checkpointDir: model.dir },
        {
          trainable: { method: 'lora', lora: { targets: ['q_proj', 'v_proj', 'up_proj'], r: 4, alpha: 8 } },
          batch: BATCH,
          seqLen: SEQ,
          threads: 1,
          seed: SEED,
          optimizer: { weightDecay: 0.1 },
        },
      );
      for (let step = 1; step <= STEPS; step++) {
        const batch = fillRows(examples, rows.slice((step - 1) * BATCH, step * BATCH), BATCH, SEQ, padId);
        const learningRate = learningRateAt(schedule, step);
        const ort = await trainer.step({ tokens: batch.tokens, lossMask: batch.lossMask }, learningRate);
        const torch = steps[step - 1];
        assert.ok(
          Math.abs(torch.learningRate - learningRate) <= 1e-12 * learningRate,
          `step ${step}: learning rate ${torch.learningRate} vs ${learningRate}`,
        );
        assert.ok(
          Math.abs(torch.loss - ort.loss) <= 1e-4 * ort.loss,
          `step ${step}: loss torch ${torch.loss} vs ort ${ort.loss}`,
        );
      }
      const trained = await trainer.getTrainable();
      await trainer.release();
      let difference = 0;
      let reference = 0;
      for (const [module, { a, b }] of adapter.modules) {
        for (const [which, tensor] of [
          ['A', a],
          ['B', b],
        ] as const) {
          const ours = trained.get(`base_model.model.${module}.lora_${which}.weight`)!.data as Float32Array;
          const theirs = tensor.data as Float32Array;
          for (let i = 0; i < ours.length; i++) {
            difference += (ours[i] - theirs[i]) ** 2;
            reference += ours[i] ** 2;
          }
        }
      }
      assert.ok(
        Math.sqrt(difference / reference) <= 1e-4,
        `adapter relative difference ${Math.sqrt(difference / reference)}`,
      );
    } finally {
      await worker.terminate();
    }
  });

  it('refuses bad input with one line and a non-zero status', async () => {
    const corrupt = path.join(dir, 'corrupt.idiomds');
    fs.writeFileSync(corrupt, fs.readFileSync(dataset).subarray(0, 100));
    await assert.rejects(
      run(python, trainArgs(path.join(dir, 'never'), ['--dataset', corrupt])),
      (error: { code: number; stderr: string }) => {
        assert.equal(error.code, 1);
        assert.match(
          error.stderr.trim(),
          /^error: .*corrupt\.idiomds: not a valid Idiom dataset: header offset\/length do not match the file size$/,
        );
        return true;
      },
    );
    assert.equal(fs.existsSync(path.join(dir, 'never')), false);
    const existing = path.join(dir, 'adapter');
    await assert.rejects(run(python, trainArgs(existing)), /already exists/);
  });

  it('trains over two gloo processes (DDP) to the adapter one process gives at the same global batch', async () => {
    // Rank r of --processes 2 --batch 1 takes row r of each step: the same 2 rows as --batch 2.
    const train = async (out: string, extra: string[]) => {
      const { stdout } = await run(python, trainArgs(out, extra), {
        maxBuffer: 1 << 24,
        env: { ...process.env, OMP_NUM_THREADS: '1' },
      });
      const events = stdout
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line));
      return { events, adapter: await loadAdapter(out, model.config) };
    };
    const one = await train(path.join(dir, 'adapter-one'), ['--batch', '2', '--processes', '1']);
    const ddp = await train(path.join(dir, 'adapter-ddp'), ['--batch', '1', '--processes', '2']);
    assert.equal(ddp.events.find((e) => e.type === 'result').processes, 2);
    assert.equal(ddp.adapter.manifest!.training.hyperparameters.processes, 2);

    const oneSteps = one.events.filter((e) => e.type === 'step');
    const ddpSteps = ddp.events.filter((e) => e.type === 'step');
    assert.equal(ddpSteps.length, STEPS, 'only rank 0 reports');
    for (let i = 0; i < STEPS; i++) {
      assert.equal(ddpSteps[i].tokens, oneSteps[i].tokens, `step ${i + 1}: tokens counted`);
      const relative = Math.abs(ddpSteps[i].loss - oneSteps[i].loss) / oneSteps[i].loss;
      assert.ok(relative <= LOSS_TOLERANCE, `step ${i + 1}: loss ${ddpSteps[i].loss} vs ${oneSteps[i].loss}`);
    }
    let largest = 0;
    let difference = 0;
    for (const [module, { a, b }] of one.adapter.modules) {
      const other = ddp.adapter.modules.get(module)!;
      for (const [ours, theirs] of [
        [a.data, other.a.data],
        [b.data, other.b.data],
      ] as [Float32Array, Float32Array][]) {
        for (let i = 0; i < ours.length; i++) {
          largest = Math.max(largest, Math.abs(ours[i]));
          difference = Math.max(difference, Math.abs(ours[i] - theirs[i]));
        }
      }
    }
    assert.ok(largest > 0);
    assert.ok(
      difference / largest <= ADAPTER_TOLERANCE,
      `max |Δ| / max |w| = ${(difference / largest).toExponential(2)} over the LoRA tensors`,
    );
  });
});
