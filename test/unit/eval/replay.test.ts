import { strict as assert } from 'node:assert';
import { mineRepository, type MinedFile } from '../../../trainer/data/mining/mine';
import { replayDocument, replayPoints, type ReplayPoint } from '../../../trainer/training/eval/replay';
import { commitFiles, initRepo, removeDir, tempDir } from '../../fixtures/mining/git-repo';

// The held-out replay on a real git repository with dated commits: the newest commit is the
// held-out split, and the replay must find exactly the lines it added or changed, cut at the
// start of their code and after their first token, the same way for a seed.

// In the newest commit's files, '‸' marks a line the commit adds (or changes) that has code to
// replay, at the mid-line cursor (after the first token); at the end of the code: no mid point.
// Lines without the mark are old, or added but only punctuation (nothing to replay).
const MARK = '‸';

const ORDERS_OLD = [
  "import { Money, addMoney } from './money';",
  '',
  'export interface Order {',
  '  id: string;',
  '  lines: Money[];',
  '}',
  '',
  'export function orderTotal(order: Order): Money {',
  '  return order.lines.reduce(addMoney, { cents: 0 });',
  '}',
  '',
];

// The newest commit inserts lines (unique text, so git's diff cannot align them elsewhere) and
// rewrites one (the return).
const ORDERS_NEW = [
  "import { Money, addMoney } from './money';",
  `import${MARK} { audit } from './audit';`,
  '',
  'export interface Order {',
  '  id: string;',
  `  placedAt${MARK}: number;`,
  '  lines: Money[];',
  '}',
  '',
  'export function orderTotal(order: Order): Money {',
  `  const${MARK} empty = { cents: 0 };   `,
  `  audit${MARK}.record('orderTotal', order.id);`,
  `  return${MARK} order.lines.reduce(addMoney, empty);`,
  '}',
  '',
];

// A new file: every line is added.
const REFUNDS_NEW = [
  `import${MARK} { Order, orderTotal } from './orders';`,
  '',
  `export${MARK} function refundAll(orders: Order[]): number {`,
  `\tlet${MARK} refunded = 0;`,
  `\tfor${MARK} (const order of orders) {`,
  `\t\tif${MARK} (order.lines.length === 0) {`,
  `\t\t\tcontinue${MARK}`,
  '\t\t}',
  `\t\trefunded${MARK} += orderTotal(order).cents;`,
  '\t}',
  `\treturn${MARK} refunded;`,
  '}',
  '',
];

const OTHERS: Record<string, string> = {
  'src/money.ts':
    'export interface Money {\n  cents: number;\n}\n\nexport function addMoney(a: Money, b: Money): Money {\n  return { cents: a.cents + b.cents };\n}\n',
  'src/audit.ts':
    'const entries: string[] = [];\n\nexport const audit = {\n  record(kind: string, id: string): void {\n    entries.push(`${kind} ${id}`);\n  },\n};\n',
  'src/users.ts':
    'export interface User {\n  id: string;\n  name: string;\n}\n\nexport function displayName(user: User): string {\n  return user.name.trim();\n}\n',
  'src/format.ts': 'export function formatCents(cents: number): string {\n  return (cents / 100).toFixed(2);\n}\n',
  'src/config.ts': 'export const config = {\n  currency: "EUR",\n  locale: "de-DE",\n};\n',
};

const unmark = (lines: string[]) => lines.map((line) => line.replace(MARK, '')).join('\n');

/** The replay points the marks in `lines` ask for, in line order. */
function markedPoints(path: string, lines: string[]): ReplayPoint[] {
  const points: ReplayPoint[] = [];
  lines.forEach((marked, line) => {
    const mid = marked.indexOf(MARK);
    if (mid < 0) return;
    const text = marked.replace(MARK, '').replace(/\s+$/, '');
    const indent = text.length - text.trimStart().length;
    points.push({ path, line, kind: 'start', column: indent, expected: text.slice(indent) });
    if (mid < text.length) points.push({ path, line, kind: 'mid', column: mid, expected: text.slice(mid) });
  });
  return points;
}

const lineKey = (point: { path: string; line: number }) => `${point.path}:${point.line}`;

describe('held-out replay points on a real git repository', () => {
  let dir: string;
  let mined: MinedFile[];
  let expected: ReplayPoint[];
  let expectedLines: string[];

  before(async () => {
    dir = initRepo(tempDir('replay'));
    commitFiles(dir, '2024-01-01T09:00:00Z', 'money and orders', {
      'src/money.ts': OTHERS['src/money.ts'],
      'src/orders.ts': unmark(ORDERS_OLD),
    });
    commitFiles(dir, '2024-01-02T09:00:00Z', 'users and audit', {
      'src/users.ts': OTHERS['src/users.ts'],
      'src/audit.ts': OTHERS['src/audit.ts'],
    });
    commitFiles(dir, '2024-01-03T09:00:00Z', 'format and config', {
      'src/format.ts': OTHERS['src/format.ts'],
      'src/config.ts': OTHERS['src/config.ts'],
    });
    // The newest commit: the held-out split.
    commitFiles(dir, '2024-01-10T09:00:00Z', 'audit order totals, refunds', {
      'src/orders.ts': unmark(ORDERS_NEW),
      'src/refunds.ts': unmark(REFUNDS_NEW),
    });
    mined = [];
    await mineRepository(dir, {}, (file) => void mined.push(file));
    expected = [...markedPoints('src/orders.ts', ORDERS_NEW), ...markedPoints('src/refunds.ts', REFUNDS_NEW)];
    expectedLines = [...new Set(expected.map(lineKey))];
  });
  after(() => removeDir(dir));

  it('replays exactly the lines the held-out commit added or changed: at the start of their code and after the first token', () => {
    const set = replayPoints(mined, expectedLines.length + 10, 1);
    assert.deepEqual(set.files.map((file) => file.path).sort(), ['src/orders.ts', 'src/refunds.ts']);
    assert.equal(
      set.files.find((file) => file.path === 'src/refunds.ts')!.text,
      unmark(REFUNDS_NEW),
      'the file as it is at HEAD',
    );
    assert.deepEqual(set.trainingFiles.map((file) => file.path).sort(), Object.keys(OTHERS).sort());
    assert.equal(set.candidates, expectedLines.length);
    assert.equal(set.lines, expectedLines.length);
    // Points come in file order, then line order.
    const fileOrder = set.files.map((file) => file.path);
    const inOrder = [...expected].sort(
      (a, b) => fileOrder.indexOf(a.path) - fileOrder.indexOf(b.path) || a.line - b.line,
    );
    assert.deepEqual(set.points, inOrder);
    // The fixture has both a line without a mid point and added punctuation-only lines.
    assert.ok(expectedLines.some((key) => !expected.some((p) => lineKey(p) === key && p.kind === 'mid')));
    assert.ok(REFUNDS_NEW.some((line) => !line.includes(MARK) && line.trim() !== ''));

    // The document at each point is the file with the rest of the line removed.
    for (const point of set.points) {
      const text = set.files.find((file) => file.path === point.path)!.text;
      const lines = text.split('\n');
      const { prefix, suffix, text: shown } = replayDocument(text, point);
      const lineStart = lines.slice(0, point.line).join('\n').length + (point.line > 0 ? 1 : 0);
      assert.equal(
        prefix + point.expected,
        text.slice(0, lineStart) + lines[point.line].replace(/\s+$/, ''),
        `${lineKey(point)} ${point.kind}`,
      );
      assert.equal(suffix, text.slice(lineStart + lines[point.line].length));
      assert.equal(shown, prefix + suffix);
    }
  });

  it('samples at most maxLines lines, the same ones for a seed, and other ones for other seeds', () => {
    const maxLines = Math.floor(expectedLines.length / 2);
    assert.ok(maxLines >= 2 && maxLines < expectedLines.length);
    const byKey = new Map<string, ReplayPoint[]>();
    for (const point of expected) byKey.set(lineKey(point), [...(byKey.get(lineKey(point)) ?? []), point]);
    const samples = new Set<string>();
    for (let seed = 1; seed <= 12; seed++) {
      const set = replayPoints(mined, maxLines, seed);
      assert.deepEqual(replayPoints(mined, maxLines, seed), set, `seed ${seed} again`);
      assert.equal(set.lines, maxLines);
      assert.equal(set.candidates, expectedLines.length);
      const chosen = [...new Set(set.points.map(lineKey))];
      assert.equal(chosen.length, maxLines);
      // Each chosen line is replayed with exactly the points the whole set has for it.
      for (const key of chosen)
        assert.deepEqual(
          set.points.filter((p) => lineKey(p) === key),
          byKey.get(key),
          key,
        );
      samples.add(chosen.sort().join(' '));
    }
    assert.ok(samples.size > 1, `12 seeds chose ${samples.size} different sample(s)`);
  });
});
