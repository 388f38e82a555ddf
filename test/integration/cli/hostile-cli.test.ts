import { strict as assert } from 'node:assert';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeAdapter } from '../../../trainer/adapters/peft';
import { Registry } from '../../../trainer/adapters/registry';
import { loadCheckpoint, saveCheckpoint } from '../../../trainer/model/checkpoint';
import { commitFiles, initRepo, removeDir, tempDir } from '../../fixtures/mining/git-repo';
import { tsModule } from '../../fixtures/mining/sample-repo';
import { buildIdiomRepo } from '../../fixtures/pipeline/idiom-repo';
import { makeTinyModel } from '../../fixtures/pipeline/tiny-model';
import { draftManifest, randomLoraTensors, tinyConfig } from '../../unit/adapters/helpers';

const bin = path.join(__dirname, '..', '..', '..', 'trainer', 'cli', 'bin.js');

function idiom(args: string[], timeoutMs = 120_000) {
  const started = Date.now();
  // SIGKILL on timeout: a command that spins would ignore a gentler signal.
  const run = spawnSync(process.execPath, [bin, ...args], {
    encoding: 'utf8',
    timeout: timeoutMs,
    killSignal: 'SIGKILL',
    maxBuffer: 1 << 26,
  });
  return { status: run.status, signal: run.signal, stdout: run.stdout, stderr: run.stderr, ms: Date.now() - started };
}

const oneLine = (text: string) => text.trim().split('\n').length === 1;

// The command line given bad paths and signals: every case ends, in one clear line, and leaves
// nothing behind.
describe('idiom CLI: hostile paths, signals and broken state', function () {
  this.timeout(300_000);
  let base: string;
  let repo: string;

  before(() => {
    base = tempDir('hostile-cli');
    repo = initRepo(path.join(base, 'repo'));
    commitFiles(repo, '2024-01-01T10:00:00Z', 'code', { 'src/util.ts': tsModule('util') });
  });
  after(() => removeDir(base));

  it('mine --out under /proc fails at once with one line instead of spinning forever', function () {
    if (!fs.existsSync('/proc/self')) this.skip();
    const run = idiom(['mine', repo, '--out', '/proc/nope/x.idiomds'], 60_000);
    assert.equal(run.signal, null, `killed after ${run.ms} ms: it hung`);
    assert.equal(run.status, 1);
    assert.match(run.stderr, /^idiom: cannot create folder \/proc\/nope/);
    assert.ok(oneLine(run.stderr), run.stderr);
  });

  it('a registry under /proc fails at once with one line instead of spinning forever', function () {
    if (!fs.existsSync('/proc/self')) this.skip();
    const run = idiom(
      ['adapters', 'activate', '20240101-000000-abcdef', '--repo', repo, '--registry', '/proc/nope/registry'],
      60_000,
    );
    assert.equal(run.signal, null, `killed after ${run.ms} ms: it hung`);
    assert.equal(run.status, 1);
    assert.match(run.stderr, /cannot create folder \/proc\/nope/);
    assert.ok(oneLine(run.stderr), run.stderr);
  });

  it('mine --out <folder> says it is a folder, not EISDIR on a temp file, and leaves no temp file', () => {
    const folder = path.join(base, 'out-folder');
    fs.mkdirSync(folder);
    const run = idiom(['mine', repo, '--out', folder]);
    assert.equal(run.status, 1);
    assert.match(run.stderr, /^idiom: --out .*out-folder is a folder/);
    assert.doesNotMatch(run.stderr, /EISDIR|\.tmp/);
    assert.ok(oneLine(run.stderr), run.stderr);
    assert.deepEqual(fs.readdirSync(folder), []);
  });

  for (const [signal, code] of [
    ['SIGTERM', 143],
    ['SIGINT', 130],
  ] as const) {
    it(`${signal} ends a running command with status ${code} and one line`, async () => {
      // The language server waits on stdin forever: only the signal can end it.
      const child = spawn(process.execPath, [bin, 'lsp', '--stdio'], { stdio: ['pipe', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (chunk) => (stderr += String(chunk)));
      child.stdout.resume();
      await new Promise((resolve) => setTimeout(resolve, 3000));
      const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) =>
        child.once('exit', (exitCode, exitSignal) => resolve({ code: exitCode, signal: exitSignal })),
      );
      child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      const result = await exited;
      clearTimeout(timer);
      assert.deepEqual(result, { code, signal: null }, stderr);
      assert.match(stderr, new RegExp(`idiom: stopped by ${signal}`));
    });
  }

  it('review <folder> says it is a folder', () => {
    const run = idiom(['review', path.join(repo, 'src')]);
    assert.equal(run.status, 1);
    assert.match(run.stderr, /src is a folder: review takes one file/);
    assert.doesNotMatch(run.stderr, /no such file/);
    assert.ok(oneLine(run.stderr), run.stderr);
  });

  it('adapters list flags a missing or corrupt active adapter, and its table survives a multi-line problem', async () => {
    const root = initRepo(path.join(base, 'adapters-repo'));
    const registry = await Registry.open(root);
    const ids: string[] = [];
    for (const second of [1, 2, 3]) {
      const staging = registry.stagingPath();
      await writeAdapter(staging, {
        config: { r: 2, alpha: 4, targets: ['q_proj'] },
        tensors: randomLoraTensors(tinyConfig, 2, ['q_proj'], second),
        manifest: draftManifest({
          created: new Date(Date.UTC(2026, 0, 1, 0, 0, second)).toISOString(),
          mode: (['complete', 'review', 'compliance'] as const)[second - 1],
        }),
        baseConfig: tinyConfig,
      });
      ids.push((await registry.add(staging)).id);
    }
    await registry.activate(ids[0], 'complete');
    await registry.activate(ids[1], 'review');
    await registry.activate(ids[2], 'compliance');
    // complete: weights changed; review: folder gone; compliance: a manifest naming another id over two lines.
    const weights = path.join(registry.adapterPath(ids[0]), 'adapter_model.safetensors');
    const bytes = fs.readFileSync(weights);
    bytes[bytes.length - 1] ^= 0xff;
    fs.writeFileSync(weights, bytes);
    fs.rmSync(registry.adapterPath(ids[1]), { recursive: true });
    const manifestFile = path.join(registry.adapterPath(ids[2]), 'manifest.json');
    const manifest = JSON.parse(fs.readFileSync(manifestFile, 'utf8'));
    fs.writeFileSync(manifestFile, JSON.stringify({ ...manifest, id: 'x\nINJECTED ROW' }));

    const json = idiom(['adapters', 'list', '--repo', root, '--json']);
    assert.equal(json.status, 0, json.stderr);
    const listed = JSON.parse(json.stdout) as { adapters: { id: string; problem?: string; activeModes: string[] }[] };
    const problem = (id: string) => listed.adapters.find((a) => a.id === id)?.problem ?? '';
    assert.match(problem(ids[0]), /weights/);
    assert.match(problem(ids[1]), /missing/);
    assert.ok(problem(ids[2]).length > 0);

    const human = idiom(['adapters', 'list', '--repo', root]);
    assert.equal(human.status, 0, human.stderr);
    const lines = human.stdout.trimEnd().split('\n');
    // A header, one row per adapter, one warning per broken one; nothing else.
    assert.equal(lines.length, 1 + 3 + 3, human.stdout);
    assert.ok(!lines.some((line) => line.startsWith('INJECTED')), human.stdout);
    for (const id of ids)
      assert.ok(
        lines.some((line) => line.startsWith(`warning: active ${id} is unusable`)),
        human.stdout,
      );
  });

  it('a train that fails on NaN base weights says so (not "lower learning rate") and leaves no .idiom/', async () => {
    const model = await makeTinyModel(path.join(base, 'nan-model'));
    const checkpoint = await loadCheckpoint(model.dir);
    const [name, tensor] = [...checkpoint.weights].find(([key]) => key.includes('layers.0.mlp'))!;
    (tensor.data as Float32Array).fill(Number.NaN);
    checkpoint.weights.set(name, tensor);
    const nanDir = path.join(base, 'nan-base');
    await saveCheckpoint(nanDir, checkpoint.config, checkpoint.weights);
    fs.copyFileSync(path.join(model.dir, 'tokenizer.json'), path.join(nanDir, 'tokenizer.json'));
    const trainRepo = buildIdiomRepo(path.join(base, 'nan-train')).root;

    const run = idiom([
      'train',
      trainRepo,
      '--base',
      nanDir,
      '--tokens',
      '4000',
      '--threads',
      '1',
      '--no-report',
      '--backend',
      'ort',
    ]);
    assert.equal(run.status, 1, run.stderr);
    assert.match(run.stderr, /base model's weights are not finite/);
    assert.doesNotMatch(run.stderr, /lower learning rate/);
    assert.ok(
      !fs.existsSync(path.join(trainRepo, '.idiom')),
      `.idiom/ left behind: ${fs.existsSync(path.join(trainRepo, '.idiom')) ? fs.readdirSync(path.join(trainRepo, '.idiom')).join(', ') : ''}`,
    );
  });
});
