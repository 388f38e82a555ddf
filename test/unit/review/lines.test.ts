import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { changedLineNumbers, headVersion } from '../../../trainer/modes/review/changes';
import {
  aggregateLines,
  contentLines,
  percentileThreshold,
  pickTokenNll,
  removedLinesFromUnifiedDiff,
  rocAuc,
  scoringWindows,
  splitLines,
  tokenLines,
} from '../../../trainer/modes/review/lines';
import { reviewLines } from '../../../trainer/modes/review/review';
import { Rng } from '../../../trainer/model/random';
import { commitFiles, initRepo } from '../../fixtures/mining/git-repo';

// Review's pure steps against independent references: token → line assignment, windows that
// give every token the longest context, percentile, AUC (vs counting pairs), diffs.

describe('review: tokens to lines', () => {
  it('puts a token on the line of its first byte that is not a line break', () => {
    const text = 'ab;\n  cd\n\nxé\n';
    // tokens: "ab" ";\n" "  cd" "\n\n" "x" "é" "\n"
    const pieces = ['ab', ';\n', '  cd', '\n\n', 'x', 'é', '\n'];
    const lines = tokenLines(
      text,
      pieces.map((p) => Buffer.byteLength(p)),
    );
    assert.deepEqual([...lines], [0, 0, 1, 1, 3, 3, 3]);
    const indent = tokenLines(
      'a\n    b',
      ['a', '\n    ', 'b'].map((p) => Buffer.byteLength(p)),
    );
    assert.deepEqual([...indent], [0, 1, 1], "a newline + indentation token is the next line's indentation");
    assert.throws(() => tokenLines('abc', [1, 1]), /add up to 2, the text has 3 bytes/);
  });

  it('aggregates bits per line (mean, max), skipping lines without content and unscored tokens', () => {
    const lines = splitLines('a\n   \nb');
    const scores = aggregateLines(
      Int32Array.from([0, 0, 1, 2, 2]),
      [NaN, 2, 5, 1, 3],
      lines.length,
      contentLines(lines),
    );
    assert.deepEqual(
      [...scores.mean].map((v) => (Number.isNaN(v) ? null : v)),
      [2, null, 2],
    );
    assert.deepEqual(
      [...scores.max].map((v) => (Number.isNaN(v) ? null : v)),
      [2, null, 3],
    );
    assert.deepEqual([...scores.tokens], [1, 1, 2]);
  });
});

describe('review: scoring windows', () => {
  it('cover every token, each from the window that gives it the most context', () => {
    for (const [n, max] of [
      [5, 8],
      [8, 8],
      [9, 8],
      [100, 8],
      [1000, 64],
      [513, 512],
    ]) {
      const { starts, length } = scoringWindows(n, max);
      assert.equal(length, Math.min(n, max));
      assert.equal(starts[starts.length - 1] + length, n, 'the last window ends at the last token');
      // Reference NLL of token p = p (any function of p); windows report it at their offsets.
      const nll = new Float64Array(starts.length * (length - 1));
      starts.forEach((s, w) => {
        for (let i = 0; i < length - 1; i++) nll[w * (length - 1) + i] = (s + i + 1) * 1000 + s; // encodes which window
      });
      const picked = pickTokenNll(nll, starts, length, n);
      assert.ok(Number.isNaN(picked[0]));
      for (let p = 1; p < n; p++) {
        const windowStart = picked[p] % 1000;
        assert.equal(Math.floor(picked[p] / 1000), p);
        const best = Math.min(...starts.filter((s) => s < p && p <= s + length - 1));
        assert.equal(windowStart, best, `n ${n} max ${max} p ${p}`);
        if (n > max)
          assert.ok(p - windowStart >= Math.min(p, max - Math.floor(max / 2)), 'at least half a window of context');
      }
    }
  });
});

describe('review: percentile and AUC', () => {
  it('percentile threshold: the top p % of the sample is above it', () => {
    const sorted = Array.from({ length: 1001 }, (_, i) => i / 10);
    assert.equal(percentileThreshold(sorted, 2), 98);
    assert.equal(sorted.filter((v) => v > percentileThreshold(sorted, 2)).length, 20);
    assert.throws(() => percentileThreshold(sorted, 0), /must be in \(0, 100\)/);
    assert.throws(() => percentileThreshold([], 2), /no line scores/);
  });

  it('AUC equals the share of (positive, negative) pairs ranked right, ties counting half', () => {
    const rng = new Rng(7);
    for (let trial = 0; trial < 20; trial++) {
      const pos = Array.from({ length: 1 + rng.int(30) }, () => rng.int(10));
      const neg = Array.from({ length: 1 + rng.int(30) }, () => rng.int(10) - 1);
      let wins = 0;
      for (const p of pos) for (const q of neg) wins += p > q ? 1 : p === q ? 0.5 : 0;
      assert.ok(Math.abs(rocAuc(pos, neg) - wins / (pos.length * neg.length)) < 1e-12);
    }
    assert.equal(rocAuc([3, 4], [1, 2]), 1);
    assert.equal(rocAuc([1], [1]), 0.5);
    assert.ok(Number.isNaN(rocAuc([], [1])));
  });

  it('reviewLines keeps selected lines with content and flags those above the threshold', () => {
    const lines = ['a', '', 'b', 'c'];
    const scores = aggregateLines(Int32Array.from([0, 2, 3]), [1, 9, 3], lines.length, contentLines(lines));
    const reviewed = reviewLines(lines, scores, null, new Set([3, 4]), 2.5, 'mean');
    assert.deepEqual(
      reviewed.map((l) => [l.line, l.surprisal, l.baseSurprisal, l.flagged]),
      [
        [3, 9, null, true],
        [4, 3, null, true],
      ],
    );
    assert.deepEqual(
      reviewLines(lines, scores, scores, null, 5, 'max').map((l) => [l.line, l.baseSurprisal, l.flagged]),
      [
        [1, 1, false],
        [3, 9, true],
        [4, 3, false],
      ],
    );
  });
});

describe('review: changed lines', () => {
  it('in-process diff: added and modified lines of the new text', () => {
    assert.deepEqual(changedLineNumbers('a\nb\nc\n', 'a\nB\nc\nd\n'), [2, 4]);
    assert.deepEqual(changedLineNumbers('a\nb\nc\n', 'a\nc\n'), []);
    assert.deepEqual(changedLineNumbers(null, 'x\ny'), [1, 2]);
    assert.deepEqual(changedLineNumbers('a\r\nb\r\n', 'a\nb\nz\n'), [3]);
  });

  it('git -U0 diff: the old lines each hunk removed, per file', () => {
    const diff = [
      'diff --git a/src/a.ts b/src/a.ts',
      '--- a/src/a.ts',
      '+++ b/src/a.ts',
      '@@ -3,2 +3 @@ function f() {',
      '-x',
      '-y',
      '+z',
      '@@ -10 +9,2 @@',
      '-q',
      '+r',
      '+s',
      '@@ -20,0 +21 @@',
      '+added only',
      'diff --git a/gone.ts b/gone.ts',
      '--- a/gone.ts',
      '+++ /dev/null',
      '@@ -1,2 +0,0 @@',
    ].join('\n');
    assert.deepEqual([...removedLinesFromUnifiedDiff(diff)], [['src/a.ts', [3, 4, 10]]]);
  });

  it('headVersion: the file at HEAD through git, null for a new file', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-review-head-'));
    try {
      const root = initRepo(path.join(dir, 'repo'));
      commitFiles(root, '2024-01-01T00:00:00Z', 'one', { 'src/a.ts': 'const a = 1;\n' });
      fs.writeFileSync(path.join(root, 'src', 'a.ts'), 'const a = 2;\n');
      fs.writeFileSync(path.join(root, 'src', 'b.ts'), 'new\n');
      const a = await headVersion(path.join(root, 'src', 'a.ts'));
      assert.equal(a.relativePath, 'src/a.ts');
      assert.equal(a.text, 'const a = 1;\n');
      assert.deepEqual(changedLineNumbers(a.text, fs.readFileSync(path.join(root, 'src', 'a.ts'), 'utf8')), [1]);
      assert.equal((await headVersion(path.join(root, 'src', 'b.ts'))).text, null);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
