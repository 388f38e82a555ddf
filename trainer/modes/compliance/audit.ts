// The compliance audit log: one JSON line per suggestion event (served, blocked, accepted,
// rejected), append-only and hash-chained. Each entry holds the sha256 of the entry before it and
// its own sha256 over a canonical serialization (keys sorted, no spaces), so editing, removing,
// duplicating or reordering any entry breaks the chain at a point `idiom audit verify` names.
// A head file beside the log (`<log>.head`) records the last entry's number and hash, so a cut-off
// tail is detected too. The log never holds code or paths in clear: the suggestion and the file
// path are stored as sha256 only.
//
// Writers: appends take a lock (proper-lockfile, across processes; a queue within one), read the
// last entry, write one line with O_APPEND + fsync, then replace the head file atomically.

import * as fs from 'node:fs';
import * as path from 'node:path';
import * as lockfile from 'proper-lockfile';
import type { Mode } from '../../adapters/manifest';
import { MODES } from '../../adapters/manifest';
import type { Verdict } from './check';
import { sha256Hex } from './policy';

export const AUDIT_FILE = 'audit.jsonl';
export const AUDIT_VERSION = 1;
export const GENESIS_HASH = '0'.repeat(64);
export const AUDIT_EVENTS = ['served', 'blocked', 'accepted', 'rejected'] as const;
export type AuditEvent = (typeof AUDIT_EVENTS)[number];

/** What a caller records; hashes are computed here. */
export interface AuditRecord {
  event: AuditEvent;
  mode: Mode;
  /** The adapter that produced the suggestion; id and sha256 null for the base model alone. */
  adapter: { id: string | null; sha256: string | null };
  /** Repository-relative path of the file (stored as sha256 only). */
  path: string;
  /** The suggestion text (stored as sha256 only). */
  suggestion: string;
  verdicts: readonly Verdict[];
  /** sha256 of the policy file the verdicts came from. */
  policySha256: string | null;
  time?: Date;
}

/** One line of the log. */
export interface AuditEntry {
  v: typeof AUDIT_VERSION;
  seq: number;
  time: string;
  prev: string;
  event: AuditEvent;
  mode: Mode;
  adapter: { id: string | null; sha256: string | null };
  pathSha256: string;
  suggestionSha256: string;
  policySha256: string | null;
  verdicts: { rule: string; passed: boolean; violations: string[] }[];
  hash: string;
}

export interface AuditHead {
  seq: number;
  hash: string;
}

/**
 * JSON with object keys sorted by UTF-16 code units and no whitespace: RFC 8785 (JCS) for the
 * values an entry holds (strings, booleans, null, integers). Written here because it is ten lines.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') {
    if (typeof value === 'number' && !Number.isFinite(value)) throw new Error('canonicalJson: non-finite number');
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const object = value as Record<string, unknown>;
  const keys = Object.keys(object).filter((k) => object[k] !== undefined).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(object[k])}`).join(',')}}`;
}

/** sha256 of the canonical serialization of the entry without its `hash` field. */
export function entryHash(entry: Omit<AuditEntry, 'hash'> | AuditEntry): string {
  const { hash: _ignored, ...body } = entry as AuditEntry;
  return sha256Hex(canonicalJson(body));
}

export function headFileOf(logFile: string): string {
  return `${logFile}.head`;
}

// Serializes one process's appends to a log (the file lock serializes processes).
const queues = new Map<string, Promise<unknown>>();

export interface AuditLogOptions {
  /** fsync each line (default true). */
  durable?: boolean;
  /** A lock older than this is taken over (its holder died); proper-lockfile's minimum is 2000. */
  lockStaleMs?: number;
  lockWaitMs?: number;
}

export class AuditLog {
  private constructor(
    readonly file: string,
    private readonly options: Required<AuditLogOptions>,
  ) {}

  /** The log at `file` (created with its folder on the first append). */
  static open(file: string, options: AuditLogOptions = {}): AuditLog {
    return new AuditLog(path.resolve(file), { durable: options.durable ?? true, lockStaleMs: options.lockStaleMs ?? 10_000, lockWaitMs: options.lockWaitMs ?? 30_000 });
  }

  /** Appends one entry and returns it (with its number and hash). */
  append(record: AuditRecord): Promise<AuditEntry> {
    validateRecord(record);
    const before = queues.get(this.file) ?? Promise.resolve();
    const run = before.catch(() => undefined).then(() => this.withFileLock(() => this.appendLocked(record)));
    queues.set(this.file, run);
    void run.finally(() => {
      if (queues.get(this.file) === run) queues.delete(this.file);
    }).catch(() => undefined);
    return run;
  }

  private appendLocked(record: AuditRecord): AuditEntry {
    const last = this.lastEntry();
    const body: Omit<AuditEntry, 'hash'> = {
      v: AUDIT_VERSION,
      seq: last ? last.seq + 1 : 0,
      time: (record.time ?? new Date()).toISOString(),
      prev: last ? last.hash : GENESIS_HASH,
      event: record.event,
      mode: record.mode,
      adapter: { id: record.adapter.id, sha256: record.adapter.sha256 },
      pathSha256: sha256Hex(record.path),
      suggestionSha256: sha256Hex(record.suggestion),
      policySha256: record.policySha256,
      verdicts: record.verdicts.map((v) => ({ rule: v.rule, passed: v.passed, violations: v.violations.map((x) => x.id) })),
    };
    const entry: AuditEntry = { ...body, hash: entryHash(body) };
    const fd = fs.openSync(this.file, 'a'); // O_APPEND: the line lands at the end whatever else wrote
    try {
      fs.writeSync(fd, `${canonicalJson(entry)}\n`);
      if (this.options.durable) fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    // Temp + rename so readers never see half a head; not fsynced: the line above is, and a head
    // lost in a crash only lags the log (verify warns) while a cut-off tail still shows.
    const head = headFileOf(this.file);
    const temp = `${head}.${process.pid}.tmp`;
    fs.writeFileSync(temp, `${JSON.stringify({ seq: entry.seq, hash: entry.hash } satisfies AuditHead)}\n`);
    fs.renameSync(temp, head);
    return entry;
  }

  /**
   * The last complete entry, or null for an empty log. A torn last line (a writer died mid-write,
   * so it was never acknowledged) is cut off; a complete entry missing only its newline gets one.
   */
  private lastEntry(): { seq: number; hash: string } | null {
    let size: number;
    try {
      size = fs.statSync(this.file).size;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw new Error(`${this.file}: cannot read the audit log (${(error as NodeJS.ErrnoException).code})`);
    }
    if (size === 0) return null;
    const fd = fs.openSync(this.file, 'r');
    try {
      // Read backwards until the last full line is in the buffer.
      for (let chunk = 64 * 1024; ; chunk *= 4) {
        const start = Math.max(0, size - chunk);
        const buffer = Buffer.alloc(size - start);
        fs.readSync(fd, buffer, 0, buffer.length, start);
        const text = buffer.toString('utf8');
        const lines = text.split('\n');
        const tail = lines.pop()!; // after the last newline
        if (tail.length > 0) {
          const complete = parseEntryLine(tail);
          if (complete) {
            fs.appendFileSync(this.file, '\n');
            return { seq: complete.seq, hash: complete.hash };
          }
          fs.truncateSync(this.file, size - Buffer.byteLength(tail));
          return this.lastEntry();
        }
        const candidates = start === 0 ? lines : lines.slice(1); // the first piece may be cut
        for (let i = candidates.length - 1; i >= 0; i--) {
          if (candidates[i].length === 0) continue;
          const entry = parseEntryLine(candidates[i]);
          if (!entry) throw new Error(`${this.file}: the last entry is not valid; run \`idiom audit verify --log ${this.file}\``);
          return { seq: entry.seq, hash: entry.hash };
        }
        if (start === 0) return null;
      }
    } finally {
      fs.closeSync(fd);
    }
  }

  private async withFileLock<T>(fn: () => T): Promise<T> {
    fs.mkdirSync(path.dirname(this.file), { recursive: true });
    let release: () => Promise<void>;
    try {
      release = await lockfile.lock(this.file, {
        lockfilePath: `${this.file}.lock`,
        realpath: false,
        stale: Math.max(this.options.lockStaleMs, 2000),
        retries: { retries: Math.ceil(this.options.lockWaitMs / 20), factor: 1, minTimeout: 20, maxTimeout: 20 },
        onCompromised: () => undefined, // the default throws from a timer (would take a server down)
      });
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ELOCKED') throw new Error(`${this.file}: the audit log is locked by another process (waited ${this.options.lockWaitMs} ms)`);
      throw new Error(`${this.file}: cannot lock the audit log (${code ?? (error as Error).message})`);
    }
    try {
      return fn();
    } finally {
      await release().catch(() => undefined);
    }
  }
}

function validateRecord(record: AuditRecord): void {
  if (!AUDIT_EVENTS.includes(record.event)) throw new Error(`audit: unknown event "${record.event}" (expected ${AUDIT_EVENTS.join(', ')})`);
  if (!MODES.includes(record.mode)) throw new Error(`audit: unknown mode "${record.mode}"`);
  if (typeof record.path !== 'string' || typeof record.suggestion !== 'string') throw new Error('audit: path and suggestion must be strings');
}

/** Parses one line as an entry whose fields have the right types (the hash is not checked here). */
export function parseEntryLine(line: string): AuditEntry | null {
  let json: unknown;
  try {
    json = JSON.parse(line);
  } catch {
    return null;
  }
  return shapeProblem(json) === null ? (json as AuditEntry) : null;
}

const HEX64 = /^[0-9a-f]{64}$/;

/** Why `json` is not an audit entry, or null. */
function shapeProblem(json: unknown): string | null {
  if (json === null || typeof json !== 'object' || Array.isArray(json)) return 'not a JSON object';
  const e = json as Record<string, unknown>;
  if (e.v !== AUDIT_VERSION) return `v is ${JSON.stringify(e.v)}, expected ${AUDIT_VERSION}`;
  if (!(typeof e.seq === 'number' && Number.isInteger(e.seq) && e.seq >= 0)) return 'seq must be a non-negative integer';
  if (typeof e.time !== 'string' || Number.isNaN(Date.parse(e.time))) return 'time must be an ISO 8601 date';
  for (const key of ['prev', 'hash', 'pathSha256', 'suggestionSha256'] as const) {
    if (typeof e[key] !== 'string' || !HEX64.test(e[key] as string)) return `${key} must be 64 hex digits`;
  }
  if (!AUDIT_EVENTS.includes(e.event as AuditEvent)) return `event ${JSON.stringify(e.event)} is unknown`;
  if (!MODES.includes(e.mode as Mode)) return `mode ${JSON.stringify(e.mode)} is unknown`;
  const adapter = e.adapter as Record<string, unknown> | null;
  if (adapter === null || typeof adapter !== 'object' || !('id' in adapter) || !('sha256' in adapter)) return 'adapter must be {id, sha256}';
  if (!Array.isArray(e.verdicts)) return 'verdicts must be a list';
  return null;
}

export interface AuditVerification {
  ok: boolean;
  file: string;
  entries: number;
  /** The last entry's hash (GENESIS_HASH for an empty log). */
  lastHash: string;
  /** Every problem found, first first; `message` is the first (or the summary when ok). */
  problems: string[];
  /** Not failures: e.g. no head file, so a cut-off tail cannot be detected. */
  warnings: string[];
  message: string;
}

/**
 * Checks the whole chain: every line an entry, every hash matching its content, entries numbered
 * 0, 1, 2 … in order, each pointing at the hash of the one before, and the head file agreeing with
 * the last entry. Problems name the entry and line.
 */
export function verifyAuditLog(file: string): AuditVerification {
  const resolved = path.resolve(file);
  let text: string;
  try {
    text = fs.readFileSync(resolved, 'utf8');
  } catch (error) {
    throw new Error(`${resolved}: cannot read the audit log (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
  }
  const problems: string[] = [];
  const warnings: string[] = [];
  const add = (problem: string) => {
    if (problems.length < 50) problems.push(problem);
  };
  const rawLines = text.split('\n');
  if (rawLines[rawLines.length - 1] === '') rawLines.pop();
  else if (rawLines.length > 0) add(`line ${rawLines.length} is not terminated by a newline (a torn or hand-made write)`);

  const entries: (AuditEntry | null)[] = rawLines.map((line, i) => {
    if (line.trim() === '') {
      add(`line ${i + 1} is empty`);
      return null;
    }
    let json: unknown;
    try {
      json = JSON.parse(line);
    } catch {
      add(`line ${i + 1} is not valid JSON (edited or torn)`);
      return null;
    }
    const problem = shapeProblem(json);
    if (problem) {
      add(`line ${i + 1} is not an audit entry: ${problem}`);
      return null;
    }
    return json as AuditEntry;
  });

  let expected = 0;
  let prevHash = GENESIS_HASH;
  entries.forEach((entry, i) => {
    const line = i + 1;
    if (!entry) return;
    const name = `entry ${entry.seq} (line ${line})`;
    if (entryHash(entry) !== entry.hash) add(`${name} was edited: its content does not match its sha256`);
    if (entry.seq !== expected) {
      if (entry.seq > expected) {
        const later = entries.findIndex((e, j) => j > i && e?.seq === expected);
        if (later >= 0) add(`entries out of order: line ${line} holds entry ${entry.seq} but entry ${expected} comes later, at line ${later + 1} (reordered)`);
        else add(`entry ${expected}${entry.seq - expected > 1 ? `..${entry.seq - 1}` : ''} missing before line ${line}, which holds entry ${entry.seq} (removed)`);
      } else {
        add(`line ${line} holds entry ${entry.seq} after entry ${expected - 1}: reordered or duplicated`);
      }
    } else if (entry.prev !== prevHash) {
      add(`${name} does not chain to the entry before it: its prev hash differs (that entry was edited, replaced or removed)`);
    }
    prevHash = entry.hash;
    expected = Math.max(expected, entry.seq + 1);
  });

  const last = [...entries].reverse().find((e) => e !== null) ?? null;
  const headFile = headFileOf(resolved);
  let head: AuditHead | null = null;
  if (fs.existsSync(headFile)) {
    try {
      const json = JSON.parse(fs.readFileSync(headFile, 'utf8')) as AuditHead;
      if (!(Number.isInteger(json.seq) && json.seq >= 0 && typeof json.hash === 'string' && HEX64.test(json.hash))) throw new Error('bad shape');
      head = json;
    } catch {
      add(`${path.basename(headFile)} is not a valid head record ({"seq", "hash"})`);
    }
  } else if (entries.length > 0) {
    warnings.push(`no ${path.basename(headFile)} beside the log: a removed tail cannot be detected`);
  }
  if (head) {
    const lastSeq = last ? last.seq : -1;
    if (head.seq > lastSeq) {
      add(`the log was truncated: it ends at ${last ? `entry ${lastSeq}` : 'no entry'} but its head records entry ${head.seq}; entries ${lastSeq + 1}..${head.seq} are missing`);
    } else {
      const atHead = entries.find((e) => e?.seq === head!.seq);
      if (atHead && atHead.hash !== head.hash) add(`entry ${head.seq} differs from the one the head recorded (replaced)`);
      if (head.seq < lastSeq) warnings.push(`${lastSeq - head.seq} entr${lastSeq - head.seq === 1 ? 'y' : 'ies'} after the head's entry ${head.seq} (a writer stopped between appending and updating the head?)`);
    }
  }
  const count = entries.filter((e) => e !== null).length;
  const ok = problems.length === 0;
  return {
    ok,
    file: resolved,
    entries: count,
    lastHash: last ? last.hash : GENESIS_HASH,
    problems,
    warnings,
    message: ok ? `${resolved}: ${count} entries, chain intact${last ? `, last entry ${last.seq} ${last.hash.slice(0, 12)}` : ''}` : `${resolved}: ${problems[0]}`,
  };
}
