import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { tinyModelConfig } from '../../fixtures/tiny-config';
import { Rng } from '../../../trainer/model/random';
import {
  OPEN_ROWS,
  fillRows,
  packEpoch,
  stepsPerEpoch,
  type TrainExample,
} from '../../../trainer/training/pipeline/batches';
import { MIN_STEPS, chooseShape, learningRateAt, warmupStepsFor } from '../../../trainer/training/pipeline/plan';
import { RunFolder, type CheckpointState } from '../../../trainer/training/pipeline/run-folder';
import type { HostTensor } from '../../../trainer/model/tensor';

const config = (vocab: number, positions: number) =>
  tinyModelConfig({ hidden_size: 64, intermediate_size: 128, vocab_size: vocab, max_position_embeddings: positions });

describe('pipeline: shape rule and learning-rate schedule', () => {
  it('fits sequence length to the context, tokens per step to 4096, and shrinks for small budgets', () => {
    assert.deepEqual(chooseShape(config(8192, 2048), 1e9), { batch: 8, seqLen: 512 });
    assert.deepEqual(chooseShape(config(8192, 256), 1e9), { batch: 16, seqLen: 128 });
    // A small budget: at least MIN_STEPS steps, batch first, then length.
    const small = chooseShape(config(8192, 2048), 100_000);
    assert.ok(100_000 / (small.batch * small.seqLen) >= MIN_STEPS, JSON.stringify(small));
    assert.deepEqual(chooseShape(config(8192, 2048), 1000), { batch: 1, seqLen: 64 });
    // A huge vocabulary: the logits [B, T, V] stay under 128 Mi elements.
    const wide = chooseShape(config(151_936, 32_768), 1e9);
    assert.ok(wide.batch * wide.seqLen * 151_936 <= 128 * 1024 * 1024, JSON.stringify(wide));
  });

  it('warms up linearly, then decays by a cosine to 10% of the peak', () => {
    const schedule = { peakLearningRate: 1e-3, warmupSteps: warmupStepsFor(100), totalSteps: 100, minRatio: 0.1 };
    assert.equal(schedule.warmupSteps, 6);
    assert.equal(learningRateAt(schedule, 3), 5e-4);
    assert.equal(learningRateAt(schedule, 6), 1e-3);
    assert.ok(Math.abs(learningRateAt(schedule, 100) - 1e-4) < 1e-12);
    const mid = learningRateAt(schedule, 53);
    assert.ok(Math.abs(mid - 1e-3 * (0.1 + 0.9 * 0.5)) < 1e-12, String(mid));
    for (let s = 7; s < 100; s++) assert.ok(learningRateAt(schedule, s + 1) <= learningRateAt(schedule, s));
  });
});

describe('pipeline: packed training rows', () => {
  const examples: TrainExample[] = [
    { tokens: Int32Array.from([1, 2, 3, 4]), lossStart: 0 },
    { tokens: Int32Array.from([5, 6, 7]), lossStart: 2 }, // FIM-like: loss from index 2
    { tokens: Int32Array.from([8, 9, 10, 11, 12, 13]), lossStart: 0 },
    { tokens: Int32Array.from([14]), lossStart: 0 }, // too short to teach anything
  ];

  it('packs whole examples, the same order for the same (seed, epoch), another for the next epoch', () => {
    const rows = packEpoch(examples, 9, 1, 0);
    assert.deepEqual(packEpoch(examples, 9, 1, 0), rows);
    const used = rows.flat().sort();
    assert.deepEqual(used, [0, 1, 2]);
    for (const row of rows) assert.ok(row.reduce((n, i) => n + examples[i].tokens.length, 0) <= 9);
    const orders = new Set(Array.from({ length: 8 }, (_, epoch) => JSON.stringify(packEpoch(examples, 9, 1, epoch))));
    assert.ok(orders.size > 1, 'epochs reshuffle');
    assert.equal(stepsPerEpoch(5, 2), 3);
  });

  it('fills rows by first fit: little padding for lengths spread over the whole row', () => {
    const rowTokens = 513;
    const rng = new Rng(7);
    const spread: TrainExample[] = Array.from({ length: 4000 }, () => ({
      tokens: new Int32Array(2 + rng.int(rowTokens - 1)),
      lossStart: 0,
    }));
    const rows = packEpoch(spread, rowTokens, 3, 0);
    assert.deepEqual(
      rows.flat().sort((a, b) => a - b),
      spread.map((_, i) => i),
      'every example once',
    );
    const used = rows.map((row) => row.reduce((n, i) => n + spread[i].tokens.length, 0));
    for (const u of used) assert.ok(u <= rowTokens);
    // The last OPEN_ROWS rows are whatever was left open when the epoch ran out of examples.
    const settled = used.slice(0, -OPEN_ROWS);
    const fill = settled.reduce((a, b) => a + b, 0) / (settled.length * rowTokens);
    // Next fit (close the row when the next example does not fit) fills ~3/4 of these rows.
    assert.ok(fill > 0.93, `rows ${(fill * 100).toFixed(1)}% full`);
  });

  it('masks the first token of each example, FIM context and padding', () => {
    const batch = fillRows(examples, [[0, 1]], 2, 8, 99);
    // Row 0: 1 2 3 4 5 6 7 pad pad; targets at positions 1..8.
    assert.deepEqual(Array.from(batch.tokens.subarray(0, 9)), [1, 2, 3, 4, 5, 6, 7, 99, 99]);
    // Targets 2,3,4 count (example 0), 5 does not (new example), 6 does not (before lossStart), 7 counts.
    assert.deepEqual(Array.from(batch.lossMask.subarray(0, 8)), [1, 1, 1, 0, 0, 1, 0, 0]);
    assert.deepEqual(Array.from(batch.lossMask.subarray(8)), new Array(8).fill(0), 'a missing row is all padding');
    assert.equal(batch.targets, 4);
  });
});

describe('pipeline: run folder checkpoints', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-run-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  const tensor = (values: number[]): HostTensor => ({
    dtype: 'float32',
    shape: [values.length],
    data: Float32Array.from(values),
  });
  const state = (step: number): CheckpointState => ({
    version: 1,
    step,
    cursor: { epoch: 0, row: step * 2 },
    rng: { seed: 3, epoch: 0 },
    tokens: step * 10,
    seconds: step,
    plan: { batch: 2, seqLen: 8, totalSteps: 10, warmupSteps: 1, measuredTokensPerSecond: null, rowsPerEpoch: 20 },
    losses: [],
    finished: false,
  });

  it('round-trips parameters, moments and state; keeps the previous checkpoint; survives a broken latest', () => {
    const run = RunFolder.create(dir, { method: 'lora' });
    assert.equal(run.loadCheckpoint(), null);
    for (const step of [1, 2, 3]) {
      run.saveCheckpoint(state(step), new Map([['w', tensor([step, step + 0.5])]]), {
        step,
        m: { w: tensor([0.1 * step, 0]) },
        v: { w: tensor([0.2, 0.3]) },
      });
    }
    const loaded = run.loadCheckpoint()!;
    assert.equal(loaded.state.step, 3);
    assert.deepEqual(loaded.state.cursor, { epoch: 0, row: 6 });
    assert.deepEqual(Array.from(loaded.trainable.get('w')!.data as Float32Array), [3, 3.5]);
    assert.equal(loaded.optimizer.step, 3);
    assert.deepEqual(Array.from(loaded.optimizer.v.w.data as Float32Array), [Math.fround(0.2), Math.fround(0.3)]);
    const kept = fs.readdirSync(path.join(run.dir, 'checkpoints')).sort();
    assert.deepEqual(kept, ['latest.json', 'step-0000002', 'step-0000003']);
    // A damaged newest checkpoint: the previous one is used.
    fs.writeFileSync(path.join(run.dir, 'checkpoints', 'step-0000003', 'trainable.safetensors'), 'garbage');
    assert.equal(run.loadCheckpoint()!.state.step, 2);
  });

  it('finds resumable runs of the same kind, newest first, and skips runs a live process owns', () => {
    const older = RunFolder.create(dir, { method: 'lora' });
    const full = RunFolder.create(dir, { method: 'full' });
    const found = RunFolder.findResumable<{ method: string }>(dir, (info) => info.method === 'lora');
    // This process owns them (it created them), which does not block itself.
    assert.deepEqual(
      found.map((r) => r.id),
      [older.id],
    );
    fs.writeFileSync(path.join(full.dir, 'owner.json'), JSON.stringify({ pid: process.ppid }));
    assert.deepEqual(
      RunFolder.findResumable<{ method: string }>(dir, (info) => info.method === 'full'),
      [],
    );
  });
});
