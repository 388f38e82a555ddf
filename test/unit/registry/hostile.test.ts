import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeAdapter } from '../../../trainer/adapters/peft';
import { Registry } from '../../../trainer/adapters/registry';
import { git, initRepo } from '../../fixtures/mining/git-repo';
import { draftManifest, randomLoraTensors, tempDir, tinyConfig } from '../adapters/helpers';

// A registry Idiom did not write (a cloned repository's committed .idiom/, or --registry pointed
// at a folder of the user's) must never make Idiom delete or follow anything outside its own files.

const bin = path.join(__dirname, '..', '..', '..', 'trainer', 'cli', 'bin.js');

function idiom(cwd: string, ...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const run = spawnSync(process.execPath, [bin, ...args], { cwd, encoding: 'utf8' });
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

/** A folder of the user's that a hostile repository points at. */
function makeVictim(base: string): string {
  const victim = path.join(base, 'victim');
  fs.mkdirSync(path.join(victim, 'sub'), { recursive: true });
  fs.writeFileSync(path.join(victim, 'keep.txt'), 'precious\n');
  fs.writeFileSync(path.join(victim, 'sub', 'also.txt'), 'precious too\n');
  return victim;
}

function victimIntact(victim: string): void {
  assert.equal(fs.readFileSync(path.join(victim, 'keep.txt'), 'utf8'), 'precious\n');
  assert.equal(fs.readFileSync(path.join(victim, 'sub', 'also.txt'), 'utf8'), 'precious too\n');
}

/** The repro: a repository that commits .idiom/<entry> as a symlink to `target`, cloned. */
function hostileClone(base: string, entry: string, target: string): string {
  const mal = initRepo(path.join(base, 'mal'));
  fs.writeFileSync(path.join(mal, 'a.ts'), 'export const x = 1;\n');
  fs.mkdirSync(path.join(mal, '.idiom'));
  fs.symlinkSync(target, path.join(mal, '.idiom', entry));
  fs.writeFileSync(path.join(mal, '.idiom', 'registry.json'), '{"version":1,"active":{},"previous":{},"history":[]}\n');
  git(mal, ['add', '-f', '.']);
  git(mal, ['commit', '-qm', 'x']);
  const clone = path.join(base, 'clone');
  git(base, ['clone', '-q', mal, clone]);
  assert.ok(fs.lstatSync(path.join(clone, '.idiom', entry)).isSymbolicLink(), 'git checks the link out as a link');
  return clone;
}

async function addAdapter(registry: Registry, second: number): Promise<string> {
  const staging = registry.stagingPath();
  await writeAdapter(staging, {
    config: { r: 2, alpha: 4, targets: ['q_proj'] },
    tensors: randomLoraTensors(tinyConfig, 2, ['q_proj'], second),
    manifest: draftManifest({ created: new Date(Date.UTC(2026, 0, 1, 0, 0, second)).toISOString() }),
    baseConfig: tinyConfig,
  });
  return (await registry.add(staging)).id;
}

describe('registry of a repository Idiom did not write', function () {
  this.timeout(60_000);
  let base: string;
  let victim: string;
  beforeEach(() => {
    base = tempDir('hostile-registry');
    victim = makeVictim(base);
  });
  afterEach(() => fs.rmSync(base, { recursive: true, force: true }));

  it('`idiom adapters list` in a clone whose .idiom/trash is a symlink deletes nothing and refuses in one line', () => {
    const clone = hostileClone(base, 'trash', victim);
    const run = idiom(clone, 'adapters', 'list');
    victimIntact(victim);
    assert.notEqual(run.status, 0, run.stdout);
    const lines = run.stderr.trim().split('\n');
    assert.equal(lines.length, 1, run.stderr);
    assert.match(lines[0], /trash.*symbolic link/);
  });

  it('refuses a registry whose adapters/ or whose folder itself is a symlink, before writing through it', async () => {
    const clone = hostileClone(base, 'adapters', victim);
    await assert.rejects(Registry.open(clone), /adapters.*symbolic link/);
    await assert.rejects(Registry.open(clone, { readOnly: true }), /adapters.*symbolic link/);
    const linked = path.join(base, 'linked-registry');
    fs.symlinkSync(victim, linked);
    await assert.rejects(Registry.open(clone, { location: linked }), /linked-registry.*symbolic link/);
    victimIntact(victim);
    assert.deepEqual(fs.readdirSync(victim).sort(), ['keep.txt', 'sub']);
  });

  it('--registry pointed at an existing folder never deletes its trash/ (reading or writing)', async () => {
    const repo = initRepo(path.join(base, 'repo'));
    const folder = path.join(base, 'my-folder');
    fs.mkdirSync(path.join(folder, 'trash', '20260101-000000-abcdef-123456'), { recursive: true });
    fs.writeFileSync(path.join(folder, 'trash', 'notes.txt'), 'mine\n');
    fs.writeFileSync(path.join(folder, 'trash', '20260101-000000-abcdef-123456', 'x.txt'), 'mine too\n');
    const list = idiom(repo, 'adapters', 'list', '--registry', folder, '--json');
    assert.equal(list.status, 0, list.stderr);
    // A write takes the lock and tidies; only what Idiom itself left there may go.
    const registry = await Registry.open(repo, { location: folder });
    const id = await addAdapter(registry, 1);
    await registry.remove(id);
    assert.equal(fs.readFileSync(path.join(folder, 'trash', 'notes.txt'), 'utf8'), 'mine\n');
    assert.equal(
      fs.readFileSync(path.join(folder, 'trash', '20260101-000000-abcdef-123456', 'x.txt'), 'utf8'),
      'mine too\n',
    );
  });

  it('opening and reading never delete; a write tidies only what Idiom left behind', async () => {
    const repo = initRepo(path.join(base, 'repo'));
    const writer = await Registry.open(repo);
    const kept = await addAdapter(writer, 1);
    const gone = await addAdapter(writer, 2);
    const dir = path.join(repo, '.idiom');
    const staleState = path.join(dir, '.registry.json.99999999.abc123.tmp');
    fs.writeFileSync(staleState, '{}');
    const strangers = [path.join(dir, 'trash', 'notes.txt'), path.join(dir, 'trash', `${kept}-abcdef`, 'x.txt')];
    for (const file of strangers) {
      fs.mkdirSync(path.dirname(file), { recursive: true });
      fs.writeFileSync(file, 'not idiom\n');
    }
    const before = spawnSync('find', [dir, '-print'], { encoding: 'utf8' }).stdout.split('\n').sort();
    const reader = await Registry.open(repo, { readOnly: true });
    assert.deepEqual(
      (await reader.list()).map((entry) => entry.id),
      [kept, gone],
    );
    await Registry.open(repo);
    assert.deepEqual(
      spawnSync('find', [dir, '-print'], { encoding: 'utf8' }).stdout.split('\n').sort(),
      before,
      'open or list changed the folder',
    );
    await assert.rejects(reader.activate(kept, 'complete'), /read-only/);

    await writer.remove(gone);
    assert.equal(fs.existsSync(staleState), false, 'a dead writer’s temp file goes');
    for (const file of strangers) assert.equal(fs.readFileSync(file, 'utf8'), 'not idiom\n');
    assert.deepEqual(
      (await writer.list()).map((entry) => entry.id),
      [kept],
    );
  });

  it('removing an adapter whose folder holds a link deletes the link, never its target', async () => {
    const repo = initRepo(path.join(base, 'repo'));
    const registry = await Registry.open(repo);
    const id = await addAdapter(registry, 1);
    fs.symlinkSync(victim, path.join(registry.adapterPath(id), 'escape'));
    await registry.remove(id);
    victimIntact(victim);
    assert.equal(fs.existsSync(registry.adapterPath(id)), false);
  });
});
