import { strict as assert } from 'node:assert';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadFullModel } from '../../../trainer/adapters/full';
import { loadAdapter } from '../../../trainer/adapters/peft';
import { loadCheckpoint } from '../../../trainer/model/checkpoint';
import { Rng } from '../../../trainer/model/random';
import { TrainingCancelledError } from '../../../trainer/training/pipeline/events';
import { trainRepository } from '../../../trainer/training/pipeline/train-repository';
import { Registry } from '../../../trainer/adapters/registry';
import { git } from '../../fixtures/mining/git-repo';
import { buildIdiomRepo, type IdiomRepo } from '../../fixtures/pipeline/idiom-repo';
import { makeTinyModel, type TinyModel } from '../../fixtures/pipeline/tiny-model';

// End to end on a real git repository with a tiny model made here (random weights, BPE trained by
// the test): the CLI trains, evaluates, registers and reports; kill -9 and Ctrl-C at random moments
// never break the registry and --resume finishes with the same adapter as an uninterrupted run;
// full fine-tuning works and is compared with LoRA in the report.

const bin = path.join(__dirname, '..', '..', '..', 'trainer', 'cli', 'bin.js');
// Small and fast: ~70 steps of 4 × 128 tokens, one thread (bitwise reproducible).
const COMMON = ['--tokens', '36000', '--lr', '3e-3', '--threads', '1', '--max-lines', '12', '--seed', '1'];

type JsonLine = Record<string, unknown> & { type: string };

function runCli(args: string[]): { status: number | null; lines: JsonLine[]; stderr: string } {
  const out = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', maxBuffer: 1 << 26 });
  const lines = out.stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as JsonLine);
  return { status: out.status, lines, stderr: out.stderr };
}

/** Starts the CLI; `onLine` sees each JSON line of stdout as it comes. */
function startCli(
  args: string[],
  onLine: (line: JsonLine, child: ChildProcess) => void = () => {},
): { child: ChildProcess; done: Promise<{ code: number | null; signal: NodeJS.Signals | null; lines: JsonLine[] }> } {
  const child = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: JsonLine[] = [];
  let buffer = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    buffer += chunk.toString('utf8');
    let newline: number;
    while ((newline = buffer.indexOf('\n')) >= 0) {
      const text = buffer.slice(0, newline);
      buffer = buffer.slice(newline + 1);
      if (!text) continue;
      const line = JSON.parse(text) as JsonLine;
      lines.push(line);
      onLine(line, child);
    }
  });
  child.stderr!.resume();
  return {
    child,
    done: new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal, lines }))),
  };
}

async function registryIntact(root: string): Promise<void> {
  const registry = await Registry.open(root);
  await registry.readState(); // parses or throws
  for (const entry of await registry.list()) assert.equal(entry.problem, undefined, `${entry.id}: ${entry.problem}`);
}

describe('idiom train: end to end on a fixture repository with a tiny model', function () {
  this.timeout(120_000);
  let base: string;
  let model: TinyModel;
  let repo: IdiomRepo;

  before(async () => {
    base = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-train-'));
    model = await makeTinyModel(path.join(base, 'model'));
    repo = buildIdiomRepo(base);
  });
  after(() => fs.rmSync(base, { recursive: true, force: true }));

  let loraId = '';
  let loraLoss = 0;

  it('trains a LoRA adapter whose held-out loss beats the base, registers, activates and reports it', async () => {
    const { status, lines, stderr } = runCli(['train', repo.root, '--base', model.dir, '--json', ...COMMON]);
    assert.equal(status, 0, stderr);
    const result = lines[lines.length - 1] as JsonLine & {
      adapter: { id: string; path: string };
      metrics: {
        base: { loss: number; bitsPerByte: number; exactMatch: number; editSimilarity: number };
        adapter: { loss: number };
      };
      activated: boolean;
      tokens: number;
      tokensPerSecond: number;
      report: string;
      heldOut: { commits: number; lines: number };
    };
    assert.equal(result.type, 'result');
    // Progress came as JSON lines before it: phases in order, steps with loss/ETA.
    const phases = lines.filter((l) => l.type === 'phase').map((l) => l.phase);
    assert.deepEqual(phases, ['mining', 'tokenizing', 'compiling', 'training', 'evaluating', 'saving']);
    const steps = lines.filter((l) => l.type === 'step');
    assert.ok(
      steps.length > 0 &&
        steps.every(
          (s) =>
            typeof s.loss === 'number' && typeof s.etaSeconds === 'number' && typeof s.tokensPerSecond === 'number',
        ),
    );

    assert.ok(
      result.metrics.adapter.loss < result.metrics.base.loss,
      `adapter ${result.metrics.adapter.loss} vs base ${result.metrics.base.loss}`,
    );
    assert.ok(result.heldOut.commits >= 1 && result.heldOut.lines > 0);
    assert.ok(result.tokens > 0 && result.tokensPerSecond > 0);
    assert.equal(result.activated, true);

    // The adapter loads against this base; its manifest carries the provenance.
    const checkpoint = await loadCheckpoint(model.dir);
    const loaded = await loadAdapter(result.adapter.path, checkpoint.config, { baseSha256: checkpoint.sha256 });
    assert.equal(loaded.config.r, 16);
    assert.equal(loaded.config.alpha, 32);
    assert.deepEqual(loaded.config.targets, [
      'q_proj',
      'k_proj',
      'v_proj',
      'o_proj',
      'gate_proj',
      'up_proj',
      'down_proj',
    ]);
    const manifest = loaded.manifest!;
    assert.equal(manifest.repo.head, git(repo.root, ['rev-parse', 'HEAD']).trim());
    assert.equal(manifest.training.method, 'lora');
    assert.equal(manifest.metrics.adapter!.loss, result.metrics.adapter.loss);
    assert.ok(manifest.dataset.heldOut && manifest.dataset.heldOut.commits === result.heldOut.commits);
    const registry = await Registry.open(repo.root);
    assert.equal(await registry.activeId('complete'), result.adapter.id);
    assert.deepEqual(
      fs.readdirSync(path.join(registry.dir, 'staging')),
      [],
      'the run folder is removed once registered',
    );

    const html = fs.readFileSync(result.report, 'utf8');
    assert.match(html, /new Chart\(/);
    assert.ok(html.includes(result.adapter.id));
    loraId = result.adapter.id;
    loraLoss = result.metrics.adapter.loss;
  });

  it('idiom eval recomputes the same held-out loss for the active adapter', () => {
    const { status, lines, stderr } = runCli([
      'eval',
      repo.root,
      '--base',
      model.dir,
      '--json',
      '--threads',
      '1',
      '--max-lines',
      '12',
    ]);
    assert.equal(status, 0, stderr);
    const result = lines[0] as JsonLine & {
      metrics: { base: { loss: number }; adapter: { loss: number } };
      heldOut: { commits: number; lines: number };
      adapter: { id: string };
    };
    assert.equal(result.adapter.id, loraId);
    assert.ok(Math.abs(result.metrics.adapter.loss - loraLoss) < 1e-6, `${result.metrics.adapter.loss} vs ${loraLoss}`);
    assert.ok(result.metrics.adapter.loss < result.metrics.base.loss);
    assert.ok(result.heldOut.commits >= 1 && result.heldOut.lines > 0);
  });

  it('full fine-tuning trains every weight, loads as a model folder and is compared with LoRA in the report', async () => {
    const result = await trainRepository({
      repo: repo.root,
      base: model.dir,
      method: 'full',
      budget: { tokens: 36_000 },
      learningRate: 1e-3,
      threads: 1,
      seed: 1,
      heldOut: { maxLines: 12 },
    });
    assert.ok(result.metrics.adapter!.loss < result.metrics.base!.loss);
    const checkpoint = await loadCheckpoint(model.dir);
    const full = await loadFullModel(result.adapter.path, checkpoint.config, { baseSha256: checkpoint.sha256 });
    assert.equal(full.manifest.training.method, 'full');
    assert.equal(
      result.trainableParameters,
      [...checkpoint.weights.values()].reduce((n, t) => n + t.data.length, 0),
    );
    const methods = result.comparison.map((row) => row.method);
    assert.deepEqual(methods.filter((m) => m !== 'base').sort(), ['full', 'lora']);
    const lora = result.comparison.find((row) => row.method === 'lora')!;
    assert.equal(lora.id, loraId);
    for (const row of result.comparison.filter((r) => r.method !== 'base')) {
      assert.ok(
        row.trainableParameters! > 0 && row.fileBytes! > 0 && row.seconds! > 0 && row.peakRssBytes! > 0,
        JSON.stringify(row),
      );
    }
    assert.ok(result.comparison.find((r) => r.method === 'full')!.trainableParameters! > lora.trainableParameters!);
    const html = fs.readFileSync(result.report!, 'utf8');
    assert.ok(html.includes(loraId) && html.includes(result.adapter.id));
  });
});

describe('idiom train: kill -9 and Ctrl-C at random moments, then --resume', function () {
  this.timeout(180_000);
  let base: string;
  let model: TinyModel;

  before(async () => {
    base = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-resume-'));
    model = await makeTinyModel(path.join(base, 'model'));
  });
  after(() => fs.rmSync(base, { recursive: true, force: true }));

  it('never corrupts the registry, and the resumed adapter equals an uninterrupted run', async () => {
    const reference = buildIdiomRepo(path.join(base, 'reference'));
    const interrupted = buildIdiomRepo(path.join(base, 'interrupted'));
    // More steps than the other tests: the child runs ahead of the signals it is sent (its progress
    // lines reach the test a little late), so a short run could finish before all three land.
    // No memorisation check: its canaries are fresh in every run, so two runs could not be equal.
    const args = (root: string) => [
      'train',
      root,
      '--base',
      model.dir,
      '--json',
      '--checkpoint-steps',
      '7',
      '--no-report',
      '--no-memorisation-check',
      ...COMMON,
      '--tokens',
      '150000',
      '--epochs',
      '30',
    ];

    const seed = Number(process.env.IDIOM_TEST_SEED) || Date.now() % 1_000_000;
    const rng = new Rng(seed);
    const why = `random seed ${seed}`;
    /**
     * Runs the CLI and sends `how` when `trigger` picks a line of its progress output. Moments are
     * chosen by event, not by clock, so a fast machine cannot finish a run before its signal arrives.
     */
    const interrupt = async (
      extra: string[],
      how: NodeJS.Signals,
      trigger: (line: JsonLine, index: number) => boolean,
    ) => {
      let index = 0;
      let sent = false;
      const { done } = startCli([...args(interrupted.root), ...extra], (line, process) => {
        if (!sent && trigger(line, index++)) {
          sent = true;
          process.kill(how);
        }
      });
      const result = await done;
      await registryIntact(interrupted.root);
      return result;
    };
    // While mining, compiling or early training: at one of the first few progress lines.
    const firstKillAt = rng.int(6);
    const startKill = await interrupt([], 'SIGKILL', (_, index) => index === firstKillAt);
    assert.equal(startKill.signal, 'SIGKILL', why);
    for (let i = 0; i < 2; i++) {
      // Just after a checkpoint, or a few steps past it.
      const stepsPast = rng.int(3);
      let seenCheckpoint = false;
      let steps = 0;
      const killed = await interrupt(['--resume'], 'SIGKILL', (line) => {
        if (line.type === 'checkpoint') seenCheckpoint = true;
        else if (seenCheckpoint && line.type === 'step') steps++;
        return seenCheckpoint && steps >= stepsPast;
      });
      assert.equal(killed.signal, 'SIGKILL', why);
    }
    const stopped = await interrupt(['--resume'], 'SIGINT', (line) => line.type === 'step');
    assert.equal(
      stopped.code,
      130,
      `Ctrl-C stops cleanly with status 130 (${why}; ${stopped.lines.map((l) => l.type).join(' ')})`,
    );
    const cancelled = stopped.lines.find((l) => l.type === 'cancelled');
    assert.ok(
      cancelled && typeof cancelled.checkpoint === 'string' && fs.existsSync(cancelled.checkpoint as string),
      'Ctrl-C leaves a checkpoint',
    );

    const finished = runCli([...args(interrupted.root), '--resume']);
    assert.equal(finished.status, 0, finished.stderr);
    const resumed = finished.lines[finished.lines.length - 1] as JsonLine & {
      adapter: { id: string; path: string };
      resumedFrom: number | null;
      steps: number;
    };
    assert.ok(resumed.resumedFrom !== null && resumed.resumedFrom > 0, `resumed from ${resumed.resumedFrom}`);
    await registryIntact(interrupted.root);

    const straight = runCli(args(reference.root));
    assert.equal(straight.status, 0, straight.stderr);
    const uninterrupted = straight.lines[straight.lines.length - 1] as JsonLine & {
      adapter: { path: string };
      steps: number;
    };
    assert.equal(resumed.steps, uninterrupted.steps);

    const checkpoint = await loadCheckpoint(model.dir);
    const a1 = await loadAdapter(resumed.adapter.path, checkpoint.config, { baseSha256: checkpoint.sha256 });
    const a2 = await loadAdapter(uninterrupted.adapter.path, checkpoint.config, { baseSha256: checkpoint.sha256 });
    assert.equal(a1.weightsSha256, a2.weightsSha256, 'same data order, optimizer state and schedule after resuming');
    const registry = await Registry.open(interrupted.root);
    assert.equal(await registry.activeId('complete'), resumed.adapter.id);
    assert.equal((await registry.ids()).length, 1, 'one adapter: interrupted runs never registered a partial one');
  });

  /** In-process trainRepository on `repo` with the tiny model, small and single-threaded. */
  const inProcess = (repo: IdiomRepo, options: Partial<Parameters<typeof trainRepository>[0]> = {}) =>
    trainRepository({
      repo: repo.root,
      base: model.dir,
      budget: { tokens: 36_000 },
      threads: 1,
      report: false,
      heldOut: { maxLines: 4 },
      ...options,
    });

  it('plans a --minutes run from the measured token slots per second, so the run uses its budget', async () => {
    const repo = buildIdiomRepo(path.join(base, 'minutes'));
    const result = await inProcess(repo, { budget: { minutes: 0.1 }, maxEpochs: 1000 });
    const { batch, seqLen, measuredTokensPerSecond: measured, totalSteps } = result.plan;
    assert.ok(measured !== null && measured > 0);
    assert.equal(totalSteps, Math.max(1, Math.floor((0.1 * 60 * measured) / (batch * seqLen))));
    // What the steps achieved, in the same unit, in this run (the measurement is the fastest of
    // three steps, so ~0.9 here). Measuring targets/s (a share of the slots) instead planned too
    // few steps: 1.44 on this fixture, ~2 on real repositories.
    const achieved = (result.steps * batch * seqLen) / result.seconds;
    assert.ok(
      achieved / measured > 0.25 && achieved / measured < 1.25,
      `achieved ${achieved.toFixed(0)} vs measured ${measured.toFixed(0)} slots/s`,
    );
  });

  it('an AbortSignal while mining stops before training and leaves no run folder behind', async () => {
    const repo = buildIdiomRepo(path.join(base, 'abort-mining'));
    const controller = new AbortController();
    const phases: string[] = [];
    await assert.rejects(
      inProcess(repo, {
        signal: controller.signal,
        onProgress: (event) => {
          if (event.type !== 'phase') return;
          phases.push(event.phase);
          if (event.phase === 'mining') controller.abort();
        },
      }),
      (error: unknown) =>
        error instanceof TrainingCancelledError && error.checkpoint === null && /while mining/.test(error.message),
    );
    assert.deepEqual(phases, ['mining'], 'nothing after mining started');
    const staging = path.dirname((await Registry.open(repo.root)).stagingPath('probe'));
    assert.deepEqual(fs.existsSync(staging) ? fs.readdirSync(staging) : [], [], 'no run folder to resume');
  });

  it('an AbortSignal stops in-process training with a checkpoint that resume continues', async () => {
    const repo = buildIdiomRepo(path.join(base, 'abort'));
    const controller = new AbortController();
    let steps = 0;
    await assert.rejects(
      inProcess(repo, {
        signal: controller.signal,
        onProgress: (event) => {
          if (event.type === 'step' && ++steps === 3) controller.abort();
        },
      }),
      (error: unknown) =>
        error instanceof TrainingCancelledError && error.checkpoint !== null && fs.existsSync(error.checkpoint),
    );
    const result = await inProcess(repo, { resume: true });
    assert.ok(result.resumedFrom !== null && result.resumedFrom > 0);
  });
});
