import { strict as assert } from 'node:assert';
import type { CommitRecord } from '../../../trainer/data/mining/git';
import { temporalSplit } from '../../../trainer/data/mining/split';

// The temporal split on synthetic histories (newest commit first): its size rules, computed.

function history(filesPerCommit: number[][]): CommitRecord[] {
  return filesPerCommit.map((files, i) => ({ id: `c${i}`, time: 1_000_000 - i, files }));
}

describe('mining/split temporalSplit', () => {
  it('holds out the newest 10% of commits and the files they changed', () => {
    const commits = history(Array.from({ length: 40 }, (_, i) => [i]));
    const split = temporalSplit(commits, () => true, 40);
    assert.equal(split.heldOutCommits.length, Math.ceil(40 * 0.1));
    assert.deepEqual(
      [...split.heldOutFiles].sort((a, b) => a - b),
      [0, 1, 2, 3],
    );
    assert.equal(split.baseCommit, 'c4');
  });

  it('stops before the held-out files pass a quarter of the minable files (long histories touch everything)', () => {
    // 100 commits over 20 files: the newest 10 commits touch 5 new files each.
    const commits = history(Array.from({ length: 100 }, (_, i) => [0, 1, 2, 3, 4].map((k) => (i * 5 + k) % 20)));
    const split = temporalSplit(commits, () => true, 20);
    const cap = Math.floor(20 * 0.25);
    assert.ok(split.heldOutFiles.size <= cap, `${split.heldOutFiles.size} held-out files > ${cap}`);
    assert.equal(split.heldOutCommits.length, 1);
    assert.ok(split.heldOutFiles.size > 0);
  });

  it('keeps one commit even when it alone passes the cap, and holds out nothing when every file would go', () => {
    const wide = temporalSplit(history([[0, 1, 2, 3, 4, 5], [6], [7], [8], [9]]), () => true, 10);
    assert.equal(wide.heldOutCommits.length, 1);
    assert.equal(wide.heldOutFiles.size, 6);
    const everything = temporalSplit(history([[0, 1], [0], [1]]), () => true, 2);
    assert.equal(everything.heldOutFiles.size, 0);
    assert.match(everything.note ?? '', /every minable file/);
  });
});
