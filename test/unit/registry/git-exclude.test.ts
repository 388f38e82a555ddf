import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeAdapter } from '../../../trainer/adapters/peft';
import { Registry, findRepoRoot } from '../../../trainer/adapters/registry';
import { draftManifest, randomLoraTensors, tempDir, tinyConfig } from '../adapters/helpers';

function git(cwd: string, ...args: string[]): string {
  return execFileSync('git', ['-c', 'user.name=Idiom Test', '-c', 'user.email=test@example.invalid', ...args], {
    cwd,
    encoding: 'utf8',
  });
}

function excludeLines(repo: string): string[] {
  const file = path.join(repo, '.git', 'info', 'exclude');
  return fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n') : [];
}

async function addOne(registry: Registry): Promise<string> {
  const staging = registry.stagingPath();
  await writeAdapter(staging, {
    config: { r: 2, alpha: 4, targets: ['q_proj'] },
    tensors: randomLoraTensors(tinyConfig, 2, ['q_proj'], 1),
    manifest: draftManifest(),
    baseConfig: tinyConfig,
  });
  return (await registry.add(staging)).id;
}

describe('registry and .git/info/exclude', () => {
  let root: string;
  let repo: string;
  beforeEach(() => {
    root = tempDir('git-exclude');
    repo = path.join(root, 'repo');
    fs.mkdirSync(repo);
    git(repo, 'init', '-q');
    fs.writeFileSync(path.join(repo, 'main.ts'), 'export const x = 1;\n');
    git(repo, 'add', 'main.ts');
    git(repo, 'commit', '-q', '-m', 'first');
  });
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  it('adds /.idiom/ once, creating the file if needed, and git then ignores the registry', async () => {
    fs.rmSync(path.join(repo, '.git', 'info'), { recursive: true, force: true });
    const registry = await Registry.open(repo);
    await addOne(registry);
    await Registry.open(repo);
    await Registry.open(repo);
    assert.equal(excludeLines(repo).filter((line) => line === '/.idiom/').length, 1);
    assert.equal(git(repo, 'status', '--porcelain', '--untracked-files=all'), '');
    assert.equal(findRepoRoot(path.join(repo, '.idiom', 'adapters')), repo);
  });

  it('keeps what the file had, appends after a last line without a newline, and respects an existing entry', async () => {
    const file = path.join(repo, '.git', 'info', 'exclude');
    fs.writeFileSync(file, '# mine\n*.log');
    await Registry.open(repo);
    assert.equal(fs.readFileSync(file, 'utf8'), '# mine\n*.log\n/.idiom/\n');

    fs.writeFileSync(file, '.idiom\n');
    await Registry.open(repo);
    assert.equal(fs.readFileSync(file, 'utf8'), '.idiom\n');
  });

  it('excludes a configured location inside the repository, and leaves git alone for one outside', async () => {
    const inside = await Registry.open(repo, { location: path.join('tools', 'idiom-registry') });
    await addOne(inside);
    assert.ok(excludeLines(repo).includes('/tools/idiom-registry/'));
    assert.equal(git(repo, 'status', '--porcelain', '--untracked-files=all'), '');

    const before = excludeLines(repo);
    const outside = await Registry.open(repo, { location: path.join(root, 'elsewhere') });
    const id = await addOne(outside);
    assert.deepEqual(excludeLines(repo), before);
    assert.ok(fs.existsSync(path.join(root, 'elsewhere', 'adapters', id, 'manifest.json')));
  });

  it('writes to the common git folder from a linked worktree', async () => {
    const worktree = path.join(root, 'wt');
    git(repo, 'worktree', 'add', '-q', worktree);
    await Registry.open(worktree);
    assert.ok(excludeLines(repo).includes('/.idiom/'));
    assert.equal(git(worktree, 'status', '--porcelain', '--untracked-files=all'), '');
  });
});
