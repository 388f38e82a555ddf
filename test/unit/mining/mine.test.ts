import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { collectExamples, type MineSummary, type MinedFile } from '../../../trainer/data/mining/mine';
import type { Example } from '../../../trainer/data/mining/examples';
import { git, initRepo, removeDir, tempDir } from '../../fixtures/mining/git-repo';
import { buildSampleRepo, type SampleRepo } from '../../fixtures/mining/sample-repo';

const textOf = (example: Example) =>
  example.kind === 'plain' ? example.text : example.prefix + example.middle + example.suffix;

describe('mining/mine (real git repositories)', () => {
  let sample: SampleRepo;
  let files: MinedFile[];
  let examples: Example[];
  let summary: MineSummary;

  before(async () => {
    sample = buildSampleRepo();
    ({ files, examples, summary } = await collectExamples(sample.root));
  });
  after(() => removeDir(sample.base));

  it('keeps the source files and excludes the rest, each for its reason', () => {
    assert.deepEqual(files.map((file) => file.path).sort(), [...sample.kept].sort());
    const expected = new Map<string, number>();
    for (const reason of Object.values(sample.excluded)) expected.set(reason, (expected.get(reason) ?? 0) + 1);
    // .gitignore, .idiomignore and .gitmodules have no grammar either.
    expected.set('unsupported-language', (expected.get('unsupported-language') ?? 0) + 3);
    assert.deepEqual(summary.files.excluded, Object.fromEntries([...expected].sort(([a], [b]) => (a < b ? -1 : 1))));
    assert.equal(summary.files.kept, sample.kept.length);
    assert.equal(
      summary.files.tracked,
      summary.files.kept + Object.values(summary.files.excluded).reduce((a, b) => a + (b ?? 0), 0),
    );
  });

  it('counts languages, including an extensionless #! script', () => {
    const byLanguage: Record<string, number> = {};
    for (const file of files) byLanguage[file.language] = (byLanguage[file.language] ?? 0) + 1;
    assert.deepEqual(summary.languages, byLanguage);
    assert.equal(files.find((file) => file.path === 'tools/run')?.language, 'python');
    for (const id of ['typescript', 'tsx', 'javascript', 'python', 'go', 'rust', 'java'])
      assert.ok(byLanguage[id] > 0, id);
  });

  it('follows renames for churn and last commit time', () => {
    const renamed = files.find((file) => file.path === 'src/new_name.py')!;
    assert.equal(renamed.churn, 2); // added as old_name.py, then grown; the pure rename is no change
    assert.equal(renamed.lastCommitTime, Date.parse('2021-09-01T10:00:00Z') / 1000);
    const util = files.find((file) => file.path === 'src/util.ts')!;
    assert.equal(util.churn, 2);
    assert.equal(util.lastCommitTime, Date.parse('2022-09-01T10:00:00Z') / 1000);
  });

  it('holds out the newest 10% of commits and records their ids and changed lines', () => {
    const newest = sample.commits[sample.commits.length - 1];
    assert.equal(summary.split.commits, sample.commits.length);
    assert.deepEqual(summary.split.heldOutCommits, [newest.id]);
    assert.equal(summary.split.baseCommit, sample.commits[sample.commits.length - 2].id);
    const heldOut = files.filter((file) => file.split === 'heldout');
    assert.deepEqual(
      heldOut.map((file) => file.path),
      ['src/feature.ts'],
    );
    assert.deepEqual(heldOut[0].changedLines, sample.heldOutLines);
    assert.equal(summary.split.heldOutLines, sample.heldOutLines.length);
    for (const example of examples) {
      if (example.path === 'src/feature.ts') assert.equal(example.split, 'heldout');
      else assert.equal(example.split, 'train');
    }
    // Training never sees the held-out lines.
    for (const example of examples.filter((e) => e.split === 'train')) {
      for (const line of sample.heldOutText.filter((l) => l.length > 3)) assert.ok(!textOf(example).includes(line));
    }
    const completions = examples.filter((e) => e.split === 'heldout' && e.kind !== 'plain');
    assert.deepEqual(
      completions.map((e) => (e.kind === 'plain' ? '' : e.middle)),
      sample.heldOutText.filter((l) => l.trim().length >= 3).map((l) => l.trim()),
    );
  });

  it('lets no planted secret, history-only secret or symlink target reach an example', () => {
    const all = examples.map(textOf).join('\n\u0000\n');
    for (const secret of sample.secrets) assert.ok(!all.includes(secret.canary), secret.kind);
    assert.ok(!all.includes(sample.historyCanary));
    assert.ok(!all.includes(sample.outsideCanary));
    assert.equal(summary.secretsExcluded, sample.secrets.length);
    assert.ok(!JSON.stringify(summary).includes(sample.secrets[0].canary));
  });

  it('normalises CRLF and chunks every kept file', () => {
    assert.ok(examples.every((example) => !textOf(example).includes('\r')));
    const crlf = files.find((file) => file.path === 'src/crlf.ts')!;
    assert.ok(crlf.chunks.length >= 12);
    // Train files are covered exactly by their examples.
    for (const file of files.filter((f) => f.split === 'train')) {
      const own = examples.filter((example) => example.path === file.path);
      assert.equal(own.map(textOf).join(''), file.text, file.path);
    }
    assert.equal(summary.examples, examples.length);
  });

  it('gives the same examples on a second run', async () => {
    const again = await collectExamples(sample.root);
    assert.equal(JSON.stringify(again.examples), JSON.stringify(examples));
  });

  it('mines a detached HEAD and a subfolder', async () => {
    const clone = path.join(sample.base, 'detached');
    git(sample.base, ['clone', '-q', '--no-local', sample.root, clone]);
    const older = sample.commits[sample.commits.length - 3].id;
    git(clone, ['checkout', '-q', '--detach', older]);
    const detached = await collectExamples(clone);
    assert.equal(detached.summary.repo.head, older);
    assert.ok(!detached.files.some((file) => file.path === 'src/feature.ts' && file.text.includes('featureFlag')));
    const sub = await collectExamples(path.join(sample.root, 'src'));
    assert.equal(sub.summary.repo.folder, 'src/');
    assert.ok(sub.files.length > 0);
    assert.ok(sub.files.every((file) => file.path.startsWith('src/')));
  });

  it('mines a shallow clone', async () => {
    const shallow = path.join(sample.base, 'shallow');
    git(sample.base, ['clone', '-q', '--depth', '3', `file://${sample.root}`, shallow]);
    const result = await collectExamples(shallow);
    assert.equal(result.summary.repo.shallow, true);
    assert.equal(result.summary.split.commits, 3);
    assert.deepEqual(result.summary.split.heldOutCommits, [sample.commits[sample.commits.length - 1].id]);
    assert.deepEqual(result.files.map((file) => file.path).sort(), [...sample.kept].sort());
    // Files older than the shallow boundary date from the boundary commit.
    const boundary = Date.parse(sample.commits[sample.commits.length - 3].date) / 1000;
    assert.equal(result.files.find((file) => file.path === 'src/crlf.ts')?.lastCommitTime, boundary);
  });

  it('returns an empty summary for a repository without commits', async () => {
    const dir = tempDir('empty');
    try {
      initRepo(dir);
      const warnings: string[] = [];
      const result = await collectExamples(dir, { onWarning: (message) => warnings.push(message) });
      assert.equal(result.summary.files.kept, 0);
      assert.equal(result.examples.length, 0);
      assert.equal(result.summary.repo.head, null);
      assert.match(warnings.join('\n'), /no commits/);
    } finally {
      removeDir(dir);
    }
  });

  it('rejects a folder that is not a git repository with one clear line', async () => {
    const dir = tempDir('plain');
    try {
      fs.writeFileSync(path.join(dir, 'a.ts'), 'export const a = 1;\n');
      await assert.rejects(collectExamples(dir), (error: Error) => {
        assert.match(error.message, /^not a git repository: /);
        assert.ok(!error.message.includes('\n'));
        return true;
      });
      await assert.rejects(collectExamples(path.join(dir, 'missing')), /no such folder/);
    } finally {
      removeDir(dir);
    }
  });

  it('skips the held-out split, saying why, when there is one commit', async () => {
    const dir = tempDir('single');
    try {
      initRepo(dir);
      fs.writeFileSync(path.join(dir, 'a.ts'), 'export function a() {\n  return 1;\n}\n');
      git(dir, ['add', '-A']);
      git(dir, ['commit', '-q', '-m', 'one'], '2020-01-01T00:00:00Z');
      const result = await collectExamples(dir);
      assert.equal(result.summary.files.kept, 1);
      assert.deepEqual(result.summary.split.heldOutCommits, []);
      assert.match(result.summary.split.note ?? '', /only 1 commit/);
    } finally {
      removeDir(dir);
    }
  });
});
