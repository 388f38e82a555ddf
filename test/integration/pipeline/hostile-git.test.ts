import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { dirtyWorkTree } from '../../../trainer/data/mining/git-command';
import { evaluateFixCommits } from '../../../trainer/modes/review/evaluate';
import { reviewFile } from '../../../trainer/modes/review/review';
import { trainRepository } from '../../../trainer/training/pipeline/train-repository';
import { commitFiles, git } from '../../fixtures/mining/git-repo';
import { buildIdiomRepo, entityModule } from '../../fixtures/pipeline/idiom-repo';
import { makeTinyModel, type TinyModel } from '../../fixtures/pipeline/tiny-model';

// A repository's own git config names programs: core.fsmonitor, filter drivers (clean, smudge,
// process), diff drivers (textconv, command), diff.external and hooks. Mining, review and training
// only read the repository, so none of them may run: each program here leaves a marker file.

const bin = path.join(__dirname, '..', '..', '..', 'trainer', 'cli', 'bin.js');
const HOOKS = [
  'post-index-change',
  'reference-transaction',
  'post-checkout',
  'pre-commit',
  'post-commit',
  'pre-auto-gc',
  'fsmonitor-watchman',
];

describe('git programs named by a repository Idiom did not write never run', function () {
  this.timeout(180_000);
  let base: string;
  let markers: string;
  let model: TinyModel;
  let root: string;

  /** A script that records its run in markers/<name> (and passes a filter's content through). */
  function script(name: string, body = ''): string {
    const file = path.join(base, 'programs', name);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, `#!/bin/sh\necho "$@" >> '${path.join(markers, name)}'\n${body}`, { mode: 0o755 });
    return file;
  }

  /** The test's own git calls on the armed repository, with its programs off. */
  function safeTestGit(args: string[]): string {
    return git(root, ['-c', 'core.fsmonitor=', '-c', 'core.hooksPath=/dev/null', ...args]);
  }

  function restore(file: string): void {
    fs.writeFileSync(path.join(root, file), safeTestGit(['cat-file', 'blob', `HEAD:${file}`]));
  }

  /** New mtimes, same content: comparing the work tree with the index now means hashing (and cleaning) files. */
  function touchTrackedFiles(): void {
    const later = new Date(Date.now() + 5_000);
    for (const file of safeTestGit(['ls-files', '-z']).split('\0').filter(Boolean))
      fs.utimesSync(path.join(root, file), later, later);
  }

  function assertNothingRan(step: string): void {
    const ran = fs.readdirSync(markers);
    assert.deepEqual(
      ran,
      [],
      `${step} ran ${ran.map((name) => `${name} (${fs.readFileSync(path.join(markers, name), 'utf8').trim()})`).join(', ')}`,
    );
  }

  before(async () => {
    base = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-hostile-git-'));
    markers = path.join(base, 'markers');
    fs.mkdirSync(markers);
    model = await makeTinyModel(path.join(base, 'model'));
    root = buildIdiomRepo(base, 6).root;
    commitFiles(root, '2024-01-01T10:00:00Z', 'fix: order lookup throws', {
      'src/order.ts': entityModule('order').replace('repo.get(id)', 'repo.get(id.trim())'),
    });
    commitFiles(root, '2024-02-01T10:00:00Z', 'attributes', {
      '.gitattributes': '* filter=evil diff=evil\n*.json filter=proc\n',
      'settings.json': '{"a": 1}\n',
    });

    // Armed only now, so that building the repository ran none of them.
    const config: Array<[string, string]> = [
      ['core.fsmonitor', script('fsmonitor')],
      ['filter.evil.clean', script('clean', 'cat\n')],
      ['filter.evil.smudge', script('smudge', 'cat\n')],
      ['filter.evil.required', 'true'],
      ['filter.proc.process', script('process', 'exit 1\n')],
      ['diff.evil.textconv', script('textconv', 'cat "$1"\n')],
      ['diff.evil.command', script('diff-command')],
      ['diff.external', script('diff-external')],
    ];
    for (const [key, value] of config) git(root, ['config', key, value]);
    for (const hook of HOOKS) fs.copyFileSync(script(`hook-${hook}`), path.join(root, '.git', 'hooks', hook));
    fs.chmodSync(path.join(root, '.git', 'hooks'), 0o755);
    for (const hook of HOOKS) fs.chmodSync(path.join(root, '.git', 'hooks', hook), 0o755);
    // The scripts work: plain git runs them.
    touchTrackedFiles();
    spawnSync('git', ['status', '--porcelain'], { cwd: root });
    assert.ok(
      fs.existsSync(path.join(markers, 'fsmonitor')) && fs.existsSync(path.join(markers, 'clean')),
      'the armed repository runs its programs under plain git',
    );
  });
  after(() => fs.rmSync(base, { recursive: true, force: true }));

  beforeEach(() => {
    for (const name of fs.readdirSync(markers)) fs.rmSync(path.join(markers, name));
    touchTrackedFiles();
  });

  it('idiom mine', () => {
    const run = spawnSync(process.execPath, [bin, 'mine', root, '--json'], { encoding: 'utf8' });
    assert.equal(run.status, 0, run.stderr);
    assert.ok(JSON.parse(run.stdout).files.kept >= 7, run.stdout);
    assertNothingRan('mine');
  });

  it('idiom review (a file against HEAD) and review --eval-fixes', async () => {
    fs.appendFileSync(path.join(root, 'src', 'user.ts'), 'export const unusual = 42;\n');
    try {
      const review = await reviewFile({
        file: path.join(root, 'src', 'user.ts'),
        base: model.dir,
        threads: 1,
        sampleLines: 40,
      });
      assert.ok(review.lines.length >= 1);
      const fixes = await evaluateFixCommits({
        repo: root,
        base: model.dir,
        includeTrained: true,
        threads: 1,
        maxCommits: 1,
      });
      assert.equal(fixes.commits.evaluated, 1);
    } finally {
      restore('src/user.ts');
    }
    assertNothingRan('review');
  });

  it('the work tree check (content compared with every filter off, index untouched)', () => {
    const index = fs.statSync(path.join(root, '.git', 'index')).mtimeMs;
    assert.equal(dirtyWorkTree(root), false, 'touched files with unchanged content are clean');
    fs.appendFileSync(path.join(root, 'src', 'core.ts'), '// edited\n');
    assert.equal(dirtyWorkTree(root), true);
    restore('src/core.ts');
    assert.equal(fs.statSync(path.join(root, '.git', 'index')).mtimeMs, index, 'the index was rewritten');
    assertNothingRan('the work tree check');
  });

  it('idiom train', async () => {
    const result = await trainRepository({
      repo: root,
      base: model.dir,
      budget: { tokens: 4000 },
      threads: 1,
      report: false,
      force: true,
    });
    const manifest = JSON.parse(fs.readFileSync(path.join(result.adapter.path, 'manifest.json'), 'utf8'));
    assert.equal(manifest.repo.dirty, false);
    assertNothingRan('train');
  });
});
