import { strict as assert } from 'node:assert';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeAdapter } from '../../../trainer/adapters/peft';
import { Rng } from '../../../trainer/model/random';
import { Registry, parseRegistryState, type RegistryState } from '../../../trainer/adapters/registry';
import type { Mode } from '../../../trainer/adapters/mode';
import { draftManifest, randomLoraTensors, tempDir, tinyConfig } from '../adapters/helpers';

const HAMMER = path.join(__dirname, 'hammer.ts');

function startHammer(repo: string, mode: Mode, count: number, startAt?: number): ChildProcess {
  const args = [
    '--import',
    'tsx',
    HAMMER,
    repo,
    mode,
    String(count),
    ...(startAt === undefined ? [] : [String(startAt)]),
  ];
  return spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
}

function waitForLine(child: ChildProcess, line: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    child.stdout!.on('data', (chunk) => {
      out += chunk;
      if (out.split('\n').includes(line)) resolve();
    });
    child.stderr!.on('data', (chunk) => (err += chunk));
    child.on('exit', (code, signal) => reject(new Error(`hammer exited (${code ?? signal}) before "${line}": ${err}`)));
  });
}

function exited(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null)
      resolve({ code: child.exitCode, signal: child.signalCode });
    else child.on('exit', (code, signal) => resolve({ code, signal }));
  });
}

/**
 * The only valid registry after k hammer steps on `mode` (see hammer.ts): step i activated
 * ids[i % n] from ids[(i - 1) % n] (the base model at i = 0).
 */
function assertHammerState(state: RegistryState, mode: Mode, ids: string[]): number {
  const steps = state.history.filter((entry) => entry.mode === mode);
  const k = steps.length;
  steps.forEach((entry, i) => {
    assert.equal(entry.action, 'activate');
    assert.equal(entry.reason, `hammer ${i}`);
    assert.equal(entry.to, ids[i % ids.length], `step ${i}`);
    assert.equal(entry.from, i === 0 ? null : ids[(i - 1) % ids.length], `step ${i}`);
  });
  assert.equal(state.active[mode] ?? null, k === 0 ? null : ids[(k - 1) % ids.length]);
  const previous = Array.from({ length: k }, (_, i) => (i === 0 ? null : ids[(i - 1) % ids.length])).slice(-50);
  assert.deepEqual(state.previous[mode] ?? [], previous);
  return k;
}

describe('registry under kill -9 and concurrent writers', function () {
  this.timeout(60_000);
  let repo: string;
  let ids: string[];

  beforeEach(async () => {
    repo = tempDir('registry-crash');
    const registry = await Registry.open(repo, { excludeFromGit: false });
    ids = [];
    for (let i = 0; i < 3; i++) {
      const staging = registry.stagingPath();
      await writeAdapter(staging, {
        config: { r: 2, alpha: 4, targets: ['q_proj'] },
        tensors: randomLoraTensors(tinyConfig, 2, ['q_proj'], 200 + i),
        manifest: draftManifest({ created: new Date(Date.UTC(2026, 0, 1, 0, 0, i)).toISOString(), mode: 'complete' }),
        baseConfig: tinyConfig,
      });
      ids.push((await registry.add(staging)).id);
    }
    ids.sort();
  });
  afterEach(() => fs.rmSync(repo, { recursive: true, force: true }));

  it('a kill -9 at random moments leaves registry.json in one of the valid states', async () => {
    const rng = new Rng(20261128);
    const stateFile = path.join(repo, '.idiom', 'registry.json');
    let steps = 0;
    for (let kill = 0; kill < 4; kill++) {
      const child = startHammer(repo, 'complete', -1);
      await waitForLine(child, 'ready');
      await new Promise((resolve) => setTimeout(resolve, 20 + rng.int(280)));
      child.kill('SIGKILL');
      assert.equal((await exited(child)).signal, 'SIGKILL');
      const state = parseRegistryState(fs.readFileSync(stateFile, 'utf8'), stateFile);
      const k = assertHammerState(state, 'complete', ids);
      assert.ok(k > steps, `no progress after kill ${kill} (${k} steps)`);
      steps = k;
    }
    // A later writer gets past the dead holder's lock and leftovers, and the registry still works.
    const registry = await Registry.open(repo, { lockStaleMs: 2000, excludeFromGit: false });
    await registry.activate(ids[steps % ids.length], 'complete', { reason: `hammer ${steps}` });
    assert.equal(assertHammerState(await registry.readState(), 'complete', ids), steps + 1);
    assert.deepEqual(
      (await registry.list()).map((entry) => entry.id),
      ids,
    );
    assert.deepEqual(
      fs.readdirSync(path.join(repo, '.idiom')).filter((name) => name.endsWith('.tmp')),
      [],
    );
  });

  it('two processes writing at once lose no update (the lock serializes them)', async () => {
    const perProcess = 40;
    // Both start writing at the same moment (after their start-up), so their writes interleave.
    const startAt = Date.now() + 2500;
    const children = [
      startHammer(repo, 'complete', perProcess, startAt),
      startHammer(repo, 'review', perProcess, startAt),
    ];
    const results = await Promise.all(children.map(exited));
    assert.deepEqual(
      results.map((r) => r.code),
      [0, 0],
    );
    const state = await (await Registry.open(repo, { excludeFromGit: false })).readState();
    assert.equal(state.history.length, 2 * perProcess);
    assert.equal(assertHammerState(state, 'complete', ids), perProcess);
    assert.equal(assertHammerState(state, 'review', ids), perProcess);
  });
});
