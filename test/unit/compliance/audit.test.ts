import { strict as assert } from 'node:assert';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  AuditLog,
  canonicalJson,
  entryHash,
  headFileOf,
  verifyAuditLog,
  type AuditRecord,
} from '../../../trainer/modes/compliance/audit';
import { checkSuggestion } from '../../../trainer/modes/compliance/check';
import { parsePolicy } from '../../../trainer/modes/compliance/policy';

// The audit log on real files: a written log verifies; an edited, removed, reordered, duplicated
// entry or a cut-off tail is detected and named; several processes appending at once keep one
// unbroken chain; after a torn last line from a dead writer appends wait for `repair`.

const root = path.join(__dirname, '..', '..', '..');
const bin = path.join(root, 'trainer', 'cli', 'bin.js');
const policy = parsePolicy(JSON.stringify({ version: 1, bannedApis: ['eval'], paths: { training: ['src/**'] } }));

function record(i: number, event: AuditRecord['event'] = 'served'): AuditRecord {
  const text = i % 3 === 0 ? 'eval(input)' : `const value${i} = compute(${i});`;
  const { verdicts } = checkSuggestion(policy, { path: 'src/app.ts', text, fileText: '' });
  return {
    event: verdicts.every((v) => v.passed) ? event : 'blocked',
    mode: 'compliance',
    adapter: { id: '20261128-130501-ab12cd', sha256: 'a'.repeat(64) },
    path: 'src/app.ts',
    suggestion: text,
    verdicts,
    policySha256: policy.sha256,
  };
}

async function writeLog(file: string, n: number): Promise<void> {
  const log = AuditLog.open(file, { durable: false });
  for (let i = 0; i < n; i++) await log.append(record(i));
}

const lines = (file: string) => fs.readFileSync(file, 'utf8').split('\n').filter(Boolean);
const writeLines = (file: string, content: string[]) => fs.writeFileSync(file, `${content.join('\n')}\n`);

describe('compliance audit log', function () {
  this.timeout(60_000);
  let dir: string;
  let file: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-audit-'));
    file = path.join(dir, '.idiom', 'audit.jsonl');
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('writes a chain that verifies: numbered entries, each pointing at the previous hash, no code or path in clear', async () => {
    await writeLog(file, 6);
    const result = verifyAuditLog(file);
    assert.equal(result.ok, true, result.message);
    assert.equal(result.entries, 6);
    const entries = lines(file).map((l) => JSON.parse(l));
    assert.deepEqual(
      entries.map((e) => e.seq),
      [0, 1, 2, 3, 4, 5],
    );
    for (let i = 1; i < entries.length; i++) assert.equal(entries[i].prev, entries[i - 1].hash);
    for (const e of entries) assert.equal(e.hash, entryHash(e));
    assert.equal(entries[0].event, 'blocked', 'eval( was blocked by the policy');
    assert.deepEqual(entries[0].verdicts.find((v: { rule: string }) => v.rule === 'banned-api').violations, ['eval']);
    const text = fs.readFileSync(file, 'utf8');
    assert.ok(!text.includes('src/app.ts') && !text.includes('compute('), 'only hashes of the path and the suggestion');
    assert.equal(JSON.parse(fs.readFileSync(headFileOf(file), 'utf8')).hash, entries[5].hash);
    assert.equal(canonicalJson({ b: 1, a: [true, null, 'x'] }), '{"a":[true,null,"x"],"b":1}');
  });

  it('detects an edited entry and names it', async () => {
    await writeLog(file, 5);
    const content = lines(file);
    content[2] = content[2].replace('"served"', '"accepted"');
    writeLines(file, content);
    const result = verifyAuditLog(file);
    assert.equal(result.ok, false);
    assert.match(result.message, /entry 2 \(line 3\) was edited: its content does not match its sha256/);
  });

  it('detects an edited entry whose hash was recomputed: the next entry no longer chains to it', async () => {
    await writeLog(file, 5);
    const content = lines(file);
    const forged = { ...JSON.parse(content[2]), event: 'rejected' };
    forged.hash = entryHash(forged);
    content[2] = canonicalJson(forged);
    writeLines(file, content);
    const result = verifyAuditLog(file);
    assert.equal(result.ok, false);
    assert.match(result.message, /entry 3 \(line 4\) does not chain to the entry before it/);
  });

  it('detects a removed entry', async () => {
    await writeLog(file, 5);
    const content = lines(file);
    content.splice(2, 1);
    writeLines(file, content);
    const result = verifyAuditLog(file);
    assert.equal(result.ok, false);
    assert.match(result.message, /entry 2 missing before line 3, which holds entry 3 \(removed\)/);
  });

  it('detects reordered entries', async () => {
    await writeLog(file, 5);
    const content = lines(file);
    [content[1], content[3]] = [content[3], content[1]];
    writeLines(file, content);
    const result = verifyAuditLog(file);
    assert.equal(result.ok, false);
    assert.match(
      result.message,
      /entries out of order: line 2 holds entry 3 but entry 1 comes later, at line 4 \(reordered\)/,
    );
  });

  it('detects a duplicated entry', async () => {
    await writeLog(file, 4);
    const content = lines(file);
    content.push(content[1]);
    writeLines(file, content);
    assert.match(verifyAuditLog(file).message, /line 5 holds entry 1 after entry 3: reordered or duplicated/);
  });

  it('detects a cut-off tail through the head file, and a missing head file', async () => {
    await writeLog(file, 5);
    writeLines(file, lines(file).slice(0, 3));
    const result = verifyAuditLog(file);
    assert.equal(result.ok, false);
    assert.match(
      result.message,
      /the log was truncated: it ends at entry 2 but its head records entry 4; entries 3\.\.4 are missing/,
    );
    fs.rmSync(headFileOf(file));
    const unanchored = verifyAuditLog(file);
    assert.equal(unanchored.ok, false);
    assert.match(unanchored.message, /no audit\.jsonl\.head beside the log: its tail may have been removed with it/);
  });

  it('a torn last line (a writer killed mid-write) stops appends until a repair records it; then the chain continues', async () => {
    await writeLog(file, 3);
    fs.appendFileSync(file, '{"v":1,"seq":3,"time":"2026-');
    assert.equal(verifyAuditLog(file).ok, false, 'torn line is reported until repaired');
    await assert.rejects(AuditLog.open(file).append(record(3)), /incomplete line/);
    await AuditLog.open(file).repair('writer killed');
    await AuditLog.open(file).append(record(3));
    const result = verifyAuditLog(file);
    assert.equal(result.ok, true, result.message);
    assert.equal(result.entries, 5);
    assert.deepEqual(result.repairs, [3]);
  });

  it('keeps one chain under concurrent appends from several processes and within one', async () => {
    const perProcess = 25;
    const child = `require(${JSON.stringify(require.resolve('tsx/cjs'))});
      const { AuditLog } = require(${JSON.stringify(path.join(root, 'trainer', 'modes', 'compliance', 'audit.ts'))});
      (async () => {
        const log = AuditLog.open(process.argv[1]);
        const record = (i) => ({ event: 'served', mode: 'compliance', adapter: { id: null, sha256: null }, path: 'src/a.ts', suggestion: process.pid + ':' + i, verdicts: [], policySha256: null });
        await Promise.all(Array.from({ length: ${perProcess} }, (_, i) => log.append(record(i))));
      })().catch((e) => { console.error(e.message); process.exit(1); });`;
    const runs = [0, 1, 2].map(
      () =>
        new Promise<number | null>((resolve) => {
          const p = spawn(process.execPath, ['-e', child, file], { stdio: ['ignore', 'ignore', 'inherit'] });
          p.on('exit', resolve);
        }),
    );
    const local = AuditLog.open(file);
    const mine = Promise.all(Array.from({ length: perProcess }, (_, i) => local.append(record(i))));
    const [codes] = await Promise.all([Promise.all(runs), mine]);
    assert.deepEqual(codes, [0, 0, 0]);
    const result = verifyAuditLog(file);
    assert.equal(result.ok, true, result.message);
    assert.equal(result.entries, 4 * perProcess);
  });

  it('idiom audit verify: exit 0 on an intact log, 1 with the entry named on a tampered one', async () => {
    await writeLog(file, 3);
    const good = spawnSync(process.execPath, [bin, 'audit', 'verify', '--log', file, '--json'], { encoding: 'utf8' });
    assert.equal(good.status, 0, good.stderr);
    assert.equal(JSON.parse(good.stdout).entries, 3);
    const content = lines(file);
    content[1] = content[1].replace('compliance', 'complete');
    writeLines(file, content);
    const bad = spawnSync(process.execPath, [bin, 'audit', 'verify', '--log', file], { encoding: 'utf8' });
    assert.equal(bad.status, 1);
    assert.match(bad.stdout, /TAMPERED: .*entry 1 \(line 2\) was edited/);
    const missing = spawnSync(process.execPath, [bin, 'audit', 'verify', '--log', path.join(dir, 'nope.jsonl')], {
      encoding: 'utf8',
    });
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /^idiom: .*nope\.jsonl: cannot read the audit log \(ENOENT\)\n$/);
  });
});
