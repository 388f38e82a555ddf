import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  AuditLog,
  auditKeyFrom,
  canonicalJson,
  entryHash,
  headFileOf,
  verifyAuditLog,
  type AuditRecord,
} from '../../../trainer/modes/compliance/audit';

// The audit log's writer never repairs away tampering: after a cut-off tail, a removed head or an
// edited last entry it refuses to append and says why, and nothing in the file changes. Only
// `idiom audit repair` goes on, and it writes what it found into the chain. With a key (outside
// the repository) even a full, consistent rewrite of the log is detected.

const bin = path.join(__dirname, '..', '..', '..', 'trainer', 'cli', 'bin.js');
const secret = 'a key of at least sixteen bytes, kept outside the repository';
const key = auditKeyFrom(secret);

function record(i: number): AuditRecord {
  return {
    event: 'served',
    mode: 'compliance',
    adapter: { id: null, sha256: null },
    path: 'src/a.ts',
    suggestion: `const v${i} = ${i};`,
    verdicts: [],
    policySha256: null,
  };
}

function idiom(env: NodeJS.ProcessEnv, ...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const run = spawnSync(process.execPath, [bin, ...args], {
    encoding: 'utf8',
    env: { ...process.env, XDG_CONFIG_HOME: path.join(os.tmpdir(), 'idiom-no-config'), ...env },
  });
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

const bytesOf = (file: string) => (fs.existsSync(file) ? fs.readFileSync(file) : null);

describe('audit log: tampering is refused, never repaired away', function () {
  this.timeout(60_000);
  let dir: string;
  let file: string;
  let log: AuditLog;
  beforeEach(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-audit-tamper-'));
    file = path.join(dir, '.idiom', 'audit.jsonl');
    log = AuditLog.open(file, { durable: false, key: null });
    for (let i = 0; i < 5; i++) await log.append(record(i));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  /** The next append is refused with one line naming `reason`, and the log and its head stay byte for byte. */
  async function assertRefused(reason: RegExp): Promise<void> {
    const before = [bytesOf(file), bytesOf(headFileOf(file))];
    await assert.rejects(log.append(record(99)), (error: Error) => {
      assert.match(error.message, reason);
      assert.match(error.message, /idiom audit repair/);
      assert.doesNotMatch(error.message, /\n/);
      return true;
    });
    assert.deepEqual([bytesOf(file), bytesOf(headFileOf(file))], before, 'the refused append changed the log');
    assert.equal(verifyAuditLog(file, { key: null }).ok, false, 'verify still reports the tampering');
  }

  it('truncate -s -10: the next append refuses and verify keeps failing', async () => {
    fs.truncateSync(file, fs.statSync(file).size - 10);
    await assertRefused(/incomplete line/);
  });

  it('the tail deleted together with the head file: verify fails and the writer refuses', async () => {
    const lines = fs.readFileSync(file, 'utf8').split('\n').filter(Boolean);
    fs.writeFileSync(file, `${lines.slice(0, 3).join('\n')}\n`);
    fs.rmSync(headFileOf(file));
    const result = verifyAuditLog(file, { key: null });
    assert.equal(result.ok, false);
    assert.match(result.message, /no audit\.jsonl\.head/);
    await assertRefused(/no head file/);
  });

  it('whole entries cut from the end (head kept), an edited last entry, a deleted log', async () => {
    const original = fs.readFileSync(file, 'utf8');
    const lines = original.split('\n').filter(Boolean);
    fs.writeFileSync(file, `${lines.slice(0, 3).join('\n')}\n`);
    await assertRefused(/ends at entry 2 but its head records entry 4/);
    fs.writeFileSync(file, original.replace(/"served"(?=[^\n]*\n$)/, '"rejected"'));
    await assertRefused(/last entry/);
    fs.rmSync(file);
    await assertRefused(/missing or empty but its head records entry 4/);
  });

  it('a writer killed between its line and the head update is not tampering: the next append goes on', async () => {
    const head = fs.readFileSync(headFileOf(file));
    await log.append(record(5));
    fs.writeFileSync(headFileOf(file), head); // the head one entry behind, as a crash leaves it
    await log.append(record(6));
    assert.equal(verifyAuditLog(file, { key: null }).ok, true);
  });

  it('refuses a log, head or log folder that is a symbolic link', async () => {
    const elsewhere = path.join(dir, 'elsewhere.txt');
    fs.writeFileSync(elsewhere, 'not a log\n');
    const linked = path.join(dir, 'linked.jsonl');
    fs.symlinkSync(elsewhere, linked);
    await assert.rejects(AuditLog.open(linked, { key: null }).append(record(0)), /symbolic link/);
    assert.equal(fs.readFileSync(elsewhere, 'utf8'), 'not a log\n');
    fs.symlinkSync(path.join(dir, '.idiom'), path.join(dir, 'linked-folder'));
    await assert.rejects(
      AuditLog.open(path.join(dir, 'linked-folder', 'audit.jsonl'), { key: null }).append(record(0)),
      /symbolic link/,
    );
  });

  it('idiom audit repair records what it found in the chain; appends go on; verify shows the repair', async () => {
    fs.truncateSync(file, fs.statSync(file).size - 10);
    const torn = fs.readFileSync(file).subarray(fs.readFileSync(file).lastIndexOf(0x0a) + 1);
    const refused = idiom({}, 'audit', 'repair', '--log', file, '--reason', 'disk full on the build host', '--json');
    assert.equal(refused.status, 0, refused.stderr);
    const repaired = JSON.parse(refused.stdout);
    assert.equal(repaired.entry.seq, 4, 'the repair follows the last intact entry');
    assert.match(repaired.entry.repair.problems.join(' '), /incomplete line/);
    assert.deepEqual(repaired.entry.repair.head.seq, 4, 'the head as found is kept in the entry');
    assert.equal(repaired.entry.repair.cut.bytes, torn.length);
    assert.equal(repaired.entry.repair.cut.sha256, createHash('sha256').update(torn).digest('hex'));
    assert.deepEqual(
      fs.readFileSync(path.join(path.dirname(file), repaired.entry.repair.cut.keptIn)),
      torn,
      'the cut bytes are kept beside the log',
    );
    assert.equal(repaired.entry.repair.reason, 'disk full on the build host');

    await log.append(record(5));
    const result = verifyAuditLog(file, { key: null });
    assert.equal(result.ok, true, result.message);
    assert.equal(result.entries, 6);
    assert.deepEqual(result.repairs, [4]);
    assert.match(result.message, /1 repair recorded \(entry 4\)/);
    const verified = idiom({}, 'audit', 'verify', '--log', file);
    assert.equal(verified.status, 0, verified.stdout);
    assert.match(verified.stdout, /warning: entry 4 records a repair/);

    const nothing = idiom({}, 'audit', 'repair', '--log', file);
    assert.equal(nothing.status, 1);
    assert.match(nothing.stderr, /^idiom: .*nothing to repair/);
    assert.equal(nothing.stderr.trim().split('\n').length, 1);
  });

  it('with a key, a full consistent rewrite without it is detected, and a keyed log takes no unkeyed append', async () => {
    const keyed = path.join(dir, 'keyed.jsonl');
    const writer = AuditLog.open(keyed, { durable: false, key });
    for (let i = 0; i < 4; i++) await writer.append(record(i));
    assert.equal(verifyAuditLog(keyed, { key }).ok, true, verifyAuditLog(keyed, { key }).message);

    // Rewrite every entry (one edited) and recompute every hash and the head: consistent, but unkeyed.
    let prev = '0'.repeat(64);
    const rewritten = fs
      .readFileSync(keyed, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((line, i) => {
        const { mac: _mac, keyId: _keyId, ...entry } = JSON.parse(line);
        if (i === 2) entry.event = 'blocked';
        entry.prev = prev;
        entry.hash = entryHash(entry);
        prev = entry.hash;
        return canonicalJson(entry);
      });
    fs.writeFileSync(keyed, `${rewritten.join('\n')}\n`);
    fs.writeFileSync(headFileOf(keyed), JSON.stringify({ seq: 3, hash: prev }));
    assert.equal(verifyAuditLog(keyed, { key: null }).ok, true, 'without the key the rewrite is consistent');
    const checked = verifyAuditLog(keyed, { key });
    assert.equal(checked.ok, false);
    assert.match(checked.message, /no entry carries a MAC/);

    // The same rewrite with a made-up key: the MACs do not match.
    fs.rmSync(keyed);
    fs.rmSync(headFileOf(keyed));
    const forger = AuditLog.open(keyed, {
      durable: false,
      key: { ...auditKeyFrom('another key, also sixteen bytes or more'), id: key.id },
    });
    for (let i = 0; i < 4; i++) await forger.append(record(i));
    assert.match(verifyAuditLog(keyed, { key }).message, /entry 0 \(line 1\): its MAC does not match/);

    fs.rmSync(keyed);
    fs.rmSync(headFileOf(keyed));
    for (let i = 0; i < 2; i++) await writer.append(record(i));
    await assert.rejects(AuditLog.open(keyed, { key: null }).append(record(2)), /keyed .*IDIOM_AUDIT_KEY/);

    // The CLI takes the key from the environment (or the user's config folder), never the repository.
    const withKey = idiom({ IDIOM_AUDIT_KEY: secret }, 'audit', 'verify', '--log', keyed);
    assert.equal(withKey.status, 0, withKey.stdout);
    assert.match(withKey.stdout, /MACs checked/);
    const withoutKey = idiom({}, 'audit', 'verify', '--log', keyed);
    assert.equal(withoutKey.status, 0, withoutKey.stdout);
    assert.match(withoutKey.stdout, /warning: 2 entries carry MACs .* not checked/);
    const wrongKey = idiom({ IDIOM_AUDIT_KEY: 'a different key of sixteen bytes' }, 'audit', 'verify', '--log', keyed);
    assert.equal(wrongKey.status, 1);
    assert.match(wrongKey.stdout, /keyed with key .*, not the configured key/);
  });
});
