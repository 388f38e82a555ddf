import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { adapterLabel, ageText, labelWithAge } from '../../../trainer/adapters/label';
import {
  appendStatsEvent,
  BASE_KEY,
  parseStatsLine,
  readStats,
  STATS_FILE,
  statsLine,
  summarizeStats,
  type StatsEvent,
} from '../../../trainer/adapters/stats';
import { tempDir } from './helpers';

const A = '20260101-000000-aaaaaa';
const B = '20260102-000000-bbbbbb';
const at = '2026-01-03T10:00:00.000Z';
const event = (kind: StatsEvent['event'], adapter: string | null, chars = 0): StatsEvent => ({
  at,
  event: kind,
  adapter,
  mode: 'complete',
  chars,
});

describe('adapters: suggestion stats (stats.jsonl)', () => {
  let dir: string;
  beforeEach(() => {
    dir = tempDir('stats');
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('parses what it writes, and nothing that is not an event', () => {
    const written = event('partial', A, 7);
    assert.deepEqual(parseStatsLine(statsLine(written).trim()), written);
    for (const bad of [
      '',
      '{"at": "2026-01-03T10:00:00Z", "event": "acc', // truncated
      'null',
      '[1,2]',
      JSON.stringify({ ...written, event: 'clicked' }),
      JSON.stringify({ ...written, at: 'yesterday' }),
      JSON.stringify({ ...written, adapter: '' }),
      JSON.stringify({ ...written, adapter: 42 }),
      JSON.stringify({ ...written, mode: 'nope' }),
      JSON.stringify({ ...written, chars: -1 }),
      JSON.stringify({ ...written, chars: 1.5 }),
    ])
      assert.equal(parseStatsLine(bad), null, bad);
  });

  it('counts per adapter from the next good line after corrupt or truncated ones', () => {
    const events = [
      event('shown', A),
      event('accepted', A, 10),
      event('shown', A),
      event('dismissed', A),
      event('shown', B),
      event('partial', B, 4),
      event('shown', null),
    ];
    const lines = events.map((e) => statsLine(e));
    // A torn write glued to the next line, binary garbage, and a cut last line.
    const text = [
      lines[0],
      lines[1],
      '\u0000\u00ff garbage\n',
      lines[2].slice(0, 20),
      `${lines[3]}`,
      lines[4],
      lines[5],
      lines[6],
      lines[0].slice(0, 30),
    ].join('');
    const summary = summarizeStats(text);
    // lines[2] lost its newline, so it and lines[3] form one bad line.
    assert.equal(summary.skipped, 3);
    assert.equal(summary.events, events.length - 2);
    const a = summary.byAdapter.get(A)!;
    assert.deepEqual(a, { shown: 1, accepted: 1, partial: 0, dismissed: 0, acceptedChars: 10, rate: 1 / 1 });
    const b = summary.byAdapter.get(B)!;
    assert.deepEqual(b, { shown: 1, accepted: 0, partial: 1, dismissed: 0, acceptedChars: 4, rate: 0 / 1 });
    assert.equal(summary.byAdapter.get(BASE_KEY)?.shown, 1);
  });

  it('appends each event on a line of its own, even after a torn last line', () => {
    appendStatsEvent(dir, event('shown', A));
    fs.appendFileSync(path.join(dir, STATS_FILE), '{"at": "2026-01-03T10:00:00Z", "ev');
    appendStatsEvent(dir, event('accepted', A, 3));
    const stats = readStats(dir);
    assert.equal(stats.skipped, 1);
    assert.deepEqual(stats.byAdapter.get(A), {
      shown: 1,
      accepted: 1,
      partial: 0,
      dismissed: 0,
      acceptedChars: 3,
      rate: 1,
    });
  });

  it('reads nothing through a symbolic link and writes nothing through one', () => {
    assert.deepEqual(readStats(dir), { byAdapter: new Map(), events: 0, skipped: 0 });
    const victim = path.join(dir, 'victim.txt');
    fs.writeFileSync(victim, 'keep me\n');
    fs.symlinkSync(victim, path.join(dir, STATS_FILE));
    assert.throws(() => appendStatsEvent(dir, event('shown', A)), /ELOOP|symbolic/);
    assert.equal(fs.readFileSync(victim, 'utf8'), 'keep me\n');
    const read = readStats(dir);
    assert.equal(read.events, 0);
    assert.match(read.problem ?? '', /cannot read/);
  });
});

describe('adapters: labels', () => {
  it('names the method, the rank, the commit and the age', () => {
    const head = 'c0ffee1234'.padEnd(40, '0');
    assert.equal(adapterLabel({ method: 'lora', rank: 16, head }), `LoRA r16 · ${head.slice(0, 7)}`);
    assert.equal(adapterLabel({ method: 'full', rank: null, head, dirty: true }), `full · ${head.slice(0, 7)}+`);
    assert.equal(adapterLabel({ method: 'lora', rank: null, head: null }), 'LoRA · no commit');
    const created = '2026-01-01T00:00:00.000Z';
    const t = Date.parse(created);
    const minute = 60_000;
    assert.equal(ageText(created, t + 30_000), 'just now');
    assert.equal(ageText(created, t + 5 * minute), '5 min ago');
    assert.equal(ageText(created, t + 2 * 60 * minute + 5 * minute), '2 h ago');
    assert.equal(ageText(created, t + 3 * 24 * 60 * minute), '3 d ago');
    assert.equal(ageText('not a date', t), '');
    assert.equal(labelWithAge('LoRA r16 · abc', created, t + 5 * minute), 'LoRA r16 · abc · 5 min ago');
  });
});
