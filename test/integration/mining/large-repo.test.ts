import { strict as assert } from 'node:assert';
import * as path from 'node:path';
import { mineRepository } from '../../../trainer/data/mining/mine';
import { git, initRepo, removeDir, tempDir } from '../../fixtures/mining/git-repo';

const FILES = 100_000;
const CHANGED = 5_000;

// One small, distinct TypeScript module per index.
function moduleText(i: number, version: number): string {
  return `export function value${i}(x: number): number {\n  return x * ${i + 7} + ${version};\n}\n`;
}

// Builds the repository with git fast-import: two dated commits, the second changing CHANGED files.
function buildLargeRepo(root: string): void {
  initRepo(root);
  const parts: string[] = [];
  const commit = (date: number, message: string, files: [string, string][]) => {
    parts.push('commit refs/heads/main\n');
    parts.push(`committer Idiom Test <test@idiom.invalid> ${date} +0000\n`);
    parts.push(`data ${Buffer.byteLength(message)}\n${message}\n`);
    for (const [name, text] of files) parts.push(`M 100644 inline ${name}\ndata ${Buffer.byteLength(text)}\n${text}\n`);
  };
  const all: [string, string][] = [];
  for (let i = 0; i < FILES; i++) all.push([`src/d${i % 1000}/m${i}.ts`, moduleText(i, 1)]);
  commit(1_600_000_000, 'import', all);
  const changed: [string, string][] = [];
  for (let i = 0; i < CHANGED; i++)
    changed.push([`src/d${i % 1000}/m${i}.ts`, `${moduleText(i, 1)}export const revision${i} = 2;\n`]);
  commit(1_700_000_000, 'revise', changed);
  git(root, ['fast-import', '--quiet'], undefined, parts.join(''));
  // HEAD points at main; no checkout needed: mining reads blobs, not the work tree.
}

describe('mining a repository with 100k files', function () {
  this.timeout(600_000);
  let base: string;

  before(() => {
    base = tempDir('large');
    buildLargeRepo(path.join(base, 'repo'));
  });
  after(() => removeDir(base));

  it('keeps every file, holds out the newest commit and streams examples', async () => {
    let examples = 0;
    let heldOutExamples = 0;
    const summary = await mineRepository(path.join(base, 'repo'), {}, (file, fileExamples) => {
      examples += fileExamples.length;
      if (file.split === 'heldout') heldOutExamples += fileExamples.length;
    });
    assert.equal(summary.files.tracked, FILES);
    assert.equal(summary.files.kept, FILES);
    assert.deepEqual(summary.files.excluded, {});
    assert.equal(summary.split.commits, 2);
    assert.equal(summary.split.heldOutCommits.length, 1);
    assert.equal(summary.files.heldOut, CHANGED);
    assert.equal(summary.split.heldOutLines, CHANGED); // one appended line per changed file
    assert.equal(summary.examples, examples);
    assert.ok(heldOutExamples >= CHANGED * 2); // a plain window and a changed-line completion each
    assert.deepEqual(summary.languages, { typescript: FILES });
  });
});
