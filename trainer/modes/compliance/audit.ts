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
// A writer never repairs: when the tail and the head disagree (a cut-off or torn tail, a missing
// head, an edited last entry) it refuses to append and says why. `idiom audit repair` is the one
// way on, and it writes what it found as a `repair` entry into the chain.
//
// Keying (optional): with a key from outside the repository ($IDIOM_AUDIT_KEY, or audit.key in the
// user's config folder) every entry and the head carry an HMAC-SHA256, so even a consistent
// rewrite of the whole log (every hash recomputed) is detected by whoever holds the key.

import { createHmac, timingSafeEqual } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as lockfile from 'proper-lockfile';
import type { Mode } from '../../adapters/mode';
import { MODES } from '../../adapters/mode';
import type { Verdict } from './check';
import { sha256Hex } from './policy';

export const AUDIT_FILE = 'audit.jsonl';
export const AUDIT_VERSION = 1;
export const GENESIS_HASH = '0'.repeat(64);
export const AUDIT_EVENTS = ['served', 'blocked', 'accepted', 'rejected'] as const;
export type AuditEvent = (typeof AUDIT_EVENTS)[number];
/** The event of the entries only `idiom audit repair` writes. */
export const REPAIR_EVENT = 'repair';
export const AUDIT_KEY_ENV = 'IDIOM_AUDIT_KEY';

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
  /** Which key signed it (keyed logs only; part of the hashed content). */
  keyId?: string;
  hash: string;
  /** HMAC-SHA256 of `hash` under the key (keyed logs only). */
  mac?: string;
}

/** What `idiom audit repair` found and did, kept in the chain. */
export interface AuditRepair {
  reason: string;
  /** What verify and the writer reported before the repair. */
  problems: string[];
  /** The head file as found (null: none, or not a head record). */
  head: AuditHead | null;
  /** A torn tail cut off the log: its length, sha256 and the file beside the log that keeps it. */
  cut: { bytes: number; sha256: string; keptIn: string } | null;
}

export interface RepairEntry {
  v: typeof AUDIT_VERSION;
  seq: number;
  time: string;
  prev: string;
  event: typeof REPAIR_EVENT;
  repair: AuditRepair;
  keyId?: string;
  hash: string;
  mac?: string;
}

export type AnyAuditEntry = AuditEntry | RepairEntry;

export interface AuditHead {
  seq: number;
  hash: string;
  /** HMAC of `head:<seq>:<hash>` (keyed logs only). */
  mac?: string;
}

/** A key for the HMACs: `id` (public, in every keyed entry) names it, `secret` never leaves the machine. */
export interface AuditKey {
  id: string;
  secret: Buffer;
}

export function auditKeyFrom(secret: Buffer | string): AuditKey {
  const bytes = typeof secret === 'string' ? Buffer.from(secret, 'utf8') : secret;
  if (bytes.length < 16) throw new Error(`the audit key must be at least 16 bytes (got ${bytes.length})`);
  return { id: sha256Hex(`idiom audit key id\n${bytes.toString('base64')}`).slice(0, 16), secret: bytes };
}

/** Where the key file lives: the user's config folder, never the repository. */
export function auditKeyFile(env: NodeJS.ProcessEnv = process.env): string {
  const config =
    env.XDG_CONFIG_HOME || (process.platform === 'win32' && env.APPDATA) || path.join(os.homedir(), '.config');
  return path.join(config, 'idiom', 'audit.key');
}

/** The key from $IDIOM_AUDIT_KEY, else from auditKeyFile(); null when neither is set. */
export function loadAuditKey(env: NodeJS.ProcessEnv = process.env): AuditKey | null {
  const value = env[AUDIT_KEY_ENV];
  if (value !== undefined && value !== '') {
    try {
      return auditKeyFrom(value);
    } catch (error) {
      throw new Error(`$${AUDIT_KEY_ENV}: ${(error as Error).message}`);
    }
  }
  const file = auditKeyFile(env);
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new Error(`${file}: cannot read the audit key (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
  }
  try {
    return auditKeyFrom(bytes.toString('utf8').replace(/\r?\n$/, ''));
  } catch (error) {
    throw new Error(`${file}: ${(error as Error).message}`);
  }
}

function hmac(key: AuditKey, text: string): string {
  return createHmac('sha256', key.secret).update(text).digest('hex');
}

function sameHex(a: string, b: string): boolean {
  return a.length === b.length && timingSafeEqual(Buffer.from(a), Buffer.from(b));
}

const headMacText = (seq: number, hash: string) => `head:${seq}:${hash}`;

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
  const keys = Object.keys(object)
    .filter((k) => object[k] !== undefined)
    .sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(object[k])}`).join(',')}}`;
}

/** sha256 of the canonical serialization of the entry without its `hash` and `mac` fields. */
export function entryHash(entry: Omit<AuditEntry, 'hash'> | Omit<RepairEntry, 'hash'> | AnyAuditEntry): string {
  const { hash: _hash, mac: _mac, ...body } = entry as AnyAuditEntry;
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
  /** The HMAC key; null for none; default: loadAuditKey() at each write. */
  key?: AuditKey | null;
}

const REFUSED =
  'nothing was appended (a writer never repairs a log: run `idiom audit verify`, and `idiom audit repair` to record a repair in the chain)';

export class AuditLog {
  private constructor(
    readonly file: string,
    private readonly options: Required<Omit<AuditLogOptions, 'key'>> & Pick<AuditLogOptions, 'key'>,
  ) {}

  /** The log at `file` (created with its folder on the first append). */
  static open(file: string, options: AuditLogOptions = {}): AuditLog {
    return new AuditLog(path.resolve(file), {
      durable: options.durable ?? true,
      lockStaleMs: options.lockStaleMs ?? 10_000,
      lockWaitMs: options.lockWaitMs ?? 30_000,
      key: options.key,
    });
  }

  /** Appends one entry and returns it (with its number and hash); refuses, in one line, a log that was tampered with. */
  append(record: AuditRecord): Promise<AuditEntry> {
    validateRecord(record);
    return this.queued(() => this.appendLocked(record));
  }

  /**
   * `idiom audit repair`: when the writer refuses to append, cuts a torn tail off (kept beside the
   * log as <log>.cut-<seq>) and appends a `repair` entry, chained to the last intact entry, that
   * records what was wrong. Everything else stays as found, so verify still names edits in the
   * middle. Throws when nothing blocks the writer.
   */
  repair(reason: string): Promise<RepairEntry> {
    return this.queued(() => this.repairLocked(reason));
  }

  private queued<T>(fn: () => T): Promise<T> {
    const before = queues.get(this.file) ?? Promise.resolve();
    const run = before.catch(() => undefined).then(() => this.withFileLock(fn));
    queues.set(this.file, run);
    void run
      .finally(() => {
        if (queues.get(this.file) === run) queues.delete(this.file);
      })
      .catch(() => undefined);
    return run;
  }

  private key(): AuditKey | null {
    return this.options.key === undefined ? loadAuditKey() : this.options.key;
  }

  private appendLocked(record: AuditRecord): AuditEntry {
    const key = this.key();
    const { problem, tail } = appendProblem(this.file, key);
    if (problem) throw new Error(`${this.file}: ${problem}; ${REFUSED}`);
    const last = tail.lines[tail.lines.length - 1] ?? null;
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
      verdicts: record.verdicts.map((v) => ({
        rule: v.rule,
        passed: v.passed,
        violations: v.violations.map((x) => x.id),
      })),
      ...(key ? { keyId: key.id } : {}),
    };
    return this.write(body, key);
  }

  private repairLocked(reason: string): RepairEntry {
    const key = this.key();
    const { problem: blocking, tail, head: found } = appendProblem(this.file, key);
    const head = found === 'invalid' ? null : found;
    if (!blocking)
      throw new Error(
        `${this.file}: nothing to repair: the writer appends to it (\`idiom audit verify\` names any other problem; those stay in the log as found)`,
      );
    if (tail.lines.some((entry) => entry?.keyId !== undefined) && key === null)
      throw new Error(`${this.file}: ${blocking}; the log is keyed, so its repair needs the key too`);
    const problems = fs.existsSync(this.file) ? verifyAuditLog(this.file, { key }).problems : [];
    if (!problems.includes(blocking)) problems.push(blocking);

    // The repair entry follows the last entry that is intact (its own hash matches).
    const lines = tail.exists ? fs.readFileSync(this.file, 'utf8').split('\n') : [''];
    lines.pop(); // the torn tail, or '' after the last newline
    let last: AnyAuditEntry | null = null;
    for (let i = lines.length - 1; i >= 0 && last === null; i--) {
      const entry = parseAnyEntryLine(lines[i]);
      if (entry && entryHash(entry) === entry.hash) last = entry;
    }
    const seq = last ? last.seq + 1 : 0;
    let cut: AuditRepair['cut'] = null;
    if (tail.torn > 0) {
      const size = fs.statSync(this.file).size;
      const bytes = Buffer.alloc(tail.torn);
      const fd = fs.openSync(this.file, 'r');
      try {
        fs.readSync(fd, bytes, 0, bytes.length, size - bytes.length);
      } finally {
        fs.closeSync(fd);
      }
      const keptIn = `${path.basename(this.file)}.cut-${seq}`;
      fs.writeFileSync(path.join(path.dirname(this.file), keptIn), bytes, { flag: 'wx' });
      fs.truncateSync(this.file, size - bytes.length);
      cut = { bytes: bytes.length, sha256: sha256Hex(bytes), keptIn };
    }
    const body: Omit<RepairEntry, 'hash'> = {
      v: AUDIT_VERSION,
      seq,
      time: new Date().toISOString(),
      prev: last ? last.hash : GENESIS_HASH,
      event: REPAIR_EVENT,
      repair: { reason, problems, head, cut },
      ...(key ? { keyId: key.id } : {}),
    };
    return this.write(body, key);
  }

  /** Writes one line (O_APPEND, never through a link) and then the head. */
  private write<E extends AnyAuditEntry>(body: Omit<E, 'hash'>, key: AuditKey | null): E {
    const hash = entryHash(body as unknown as AnyAuditEntry);
    const entry = { ...body, hash, ...(key ? { mac: hmac(key, hash) } : {}) } as unknown as E;
    const fd = fs.openSync(
      this.file,
      fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT | NOFOLLOW,
      0o644,
    ); // O_APPEND: the line lands at the end whatever else wrote
    try {
      fs.writeSync(fd, `${canonicalJson(entry)}\n`);
      if (this.options.durable) fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    // Temp + rename so readers never see half a head; not fsynced: the line above is, and a head
    // lost in a crash only lags the log by that line (allowed) while a cut-off tail still shows.
    const head = headFileOf(this.file);
    const temp = `${head}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
    const record: AuditHead = {
      seq: entry.seq,
      hash,
      ...(key ? { mac: hmac(key, headMacText(entry.seq, hash)) } : {}),
    };
    fs.writeFileSync(temp, `${JSON.stringify(record)}\n`, { flag: 'wx' }); // wx: never through a planted link
    fs.renameSync(temp, head);
    return entry;
  }

  private async withFileLock<T>(fn: () => T): Promise<T> {
    const folder = path.dirname(this.file);
    for (const target of [folder, this.file, headFileOf(this.file)]) {
      if (lstatOrNull(target)?.isSymbolicLink())
        throw new Error(`${target} is a symbolic link; Idiom never writes an audit log through a link`);
    }
    fs.mkdirSync(folder, { recursive: true });
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
      if (code === 'ELOCKED')
        throw new Error(
          `${this.file}: the audit log is locked by another process (waited ${this.options.lockWaitMs} ms)`,
        );
      throw new Error(`${this.file}: cannot lock the audit log (${code ?? (error as Error).message})`);
    }
    try {
      return fn();
    } finally {
      await release().catch(() => undefined);
    }
  }
}

// O_NOFOLLOW where the platform has it (not on Windows, where links need privileges anyway).
const NOFOLLOW = fs.constants.O_NOFOLLOW ?? 0;

function lstatOrNull(file: string): fs.Stats | null {
  try {
    return fs.lstatSync(file);
  } catch {
    return null;
  }
}

interface Tail {
  exists: boolean;
  /** The last complete lines (as entries; null for a line that is not one), oldest first. */
  lines: (AnyAuditEntry | null)[];
  /** Bytes after the last newline. */
  torn: number;
}

/**
 * The end of the log, read backwards (the log can be long): at least its last complete line, and
 * back to the entry numbered `back` when there is one.
 */
function readTail(file: string, back: number | null): Tail {
  let size: number;
  try {
    size = fs.statSync(file).size;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { exists: false, lines: [], torn: 0 };
    throw new Error(`${file}: cannot read the audit log (${(error as NodeJS.ErrnoException).code})`);
  }
  if (size === 0) return { exists: true, lines: [], torn: 0 };
  const fd = fs.openSync(file, 'r');
  try {
    for (let chunk = 64 * 1024; ; chunk *= 4) {
      const start = Math.max(0, size - chunk);
      const buffer = Buffer.alloc(size - start);
      fs.readSync(fd, buffer, 0, buffer.length, start);
      const lastNewline = buffer.lastIndexOf(0x0a);
      const torn = buffer.length - lastNewline - 1;
      const pieces = lastNewline < 0 ? [] : buffer.subarray(0, lastNewline).toString('utf8').split('\n');
      const complete = start === 0 ? pieces : pieces.slice(1); // the first piece may be cut
      const lines = complete.map(parseAnyEntryLine);
      const first = lines.find((entry) => entry !== null);
      if (start === 0 || (lines.length > 0 && (back === null || (first !== undefined && first.seq <= back))))
        return { exists: true, lines, torn };
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** The head record, 'invalid', or null when there is no head file. */
function readHead(file: string): AuditHead | 'invalid' | null {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    return 'invalid';
  }
  try {
    const json = JSON.parse(text) as AuditHead;
    if (!(Number.isInteger(json.seq) && json.seq >= 0 && typeof json.hash === 'string' && HEX64.test(json.hash)))
      return 'invalid';
    if (json.mac !== undefined && !(typeof json.mac === 'string' && HEX64.test(json.mac))) return 'invalid';
    return json;
  } catch {
    return 'invalid';
  }
}

/**
 * Why a writer must not append to the log at `file` (tail and head disagree, or the key does not
 * fit), or null. A head behind the last entry is what writers killed between their line and their
 * head leave: fine while the entries after it chain to the one it records.
 */
function appendProblem(
  file: string,
  key: AuditKey | null,
): { problem: string | null; tail: Tail; head: AuditHead | 'invalid' | null } {
  const head = readHead(headFileOf(file));
  const tail = readTail(file, head !== null && head !== 'invalid' ? head.seq : null);
  return { problem: tailProblem(file, tail, head, key), tail, head };
}

function tailProblem(
  file: string,
  tail: Tail,
  head: AuditHead | 'invalid' | null,
  key: AuditKey | null,
): string | null {
  const headName = path.basename(headFileOf(file));
  if (tail.torn > 0)
    return `the log ends in an incomplete line (${tail.torn} bytes after the last newline: cut off, or a writer died mid-line)`;
  const last = tail.lines.length > 0 ? tail.lines[tail.lines.length - 1] : null;
  if (tail.lines.length > 0 && last === null) return 'its last line is not a valid entry (edited?)';
  if (head === 'invalid') return `${headName} is not a valid head record`;
  if (head === null)
    return last
      ? `there is no head file (${headName}) though the log has entries: its tail may have been removed with it`
      : null;
  if (!last) return `the log is missing or empty but its head records entry ${head.seq}: it was cut or deleted`;
  if (entryHash(last) !== last.hash)
    return `the last entry (${last.seq}) was edited: its content does not match its sha256`;
  if (head.seq > last.seq)
    return `the log ends at entry ${last.seq} but its head records entry ${head.seq}: its tail was removed`;
  const at = tail.lines.findIndex((entry) => entry?.seq === head.seq);
  if (at < 0 || tail.lines[at]!.hash !== head.hash)
    return `entry ${head.seq} differs from the one the head recorded (replaced or removed)`;
  for (let i = at + 1; i < tail.lines.length; i++) {
    const before = tail.lines[i - 1]!;
    const entry = tail.lines[i];
    if (!entry || entry.seq !== before.seq + 1 || entry.prev !== before.hash || entryHash(entry) !== entry.hash) {
      return `the entries after the head's entry ${head.seq} do not chain to it (line ${tail.lines.length - i} from the end)`;
    }
  }
  if (last.keyId !== undefined) {
    if (key === null)
      return `the log is keyed (key ${last.keyId}) and no key is set: set $${AUDIT_KEY_ENV} or ${auditKeyFile()} to append`;
    if (key.id !== last.keyId) return `the log is keyed with key ${last.keyId}, not the configured key ${key.id}`;
    if (last.mac === undefined || !sameHex(last.mac, hmac(key, last.hash)))
      return `the last entry's (${last.seq}) MAC does not match: rewritten without the key`;
    const headKeyed = tail.lines[at]!.keyId !== undefined;
    if (headKeyed && (head.mac === undefined || !sameHex(head.mac, hmac(key, headMacText(head.seq, head.hash)))))
      return `${headName}'s MAC does not match: rewritten without the key`;
  }
  return null;
}

function validateRecord(record: AuditRecord): void {
  if (!AUDIT_EVENTS.includes(record.event))
    throw new Error(`audit: unknown event "${record.event}" (expected ${AUDIT_EVENTS.join(', ')})`);
  if (!MODES.includes(record.mode)) throw new Error(`audit: unknown mode "${record.mode}"`);
  if (typeof record.path !== 'string' || typeof record.suggestion !== 'string')
    throw new Error('audit: path and suggestion must be strings');
}

/** Parses one line as a suggestion entry whose fields have the right types (the hash is not checked here). */
export function parseEntryLine(line: string): AuditEntry | null {
  const entry = parseAnyEntryLine(line);
  return entry && entry.event !== REPAIR_EVENT ? entry : null;
}

/** parseEntryLine, repair entries included. */
export function parseAnyEntryLine(line: string): AnyAuditEntry | null {
  let json: unknown;
  try {
    json = JSON.parse(line);
  } catch {
    return null;
  }
  return shapeProblem(json) === null ? (json as AnyAuditEntry) : null;
}

const HEX64 = /^[0-9a-f]{64}$/;

/** Why `json` is not an audit entry, or null. */
function shapeProblem(json: unknown): string | null {
  if (json === null || typeof json !== 'object' || Array.isArray(json)) return 'not a JSON object';
  const e = json as Record<string, unknown>;
  if (e.v !== AUDIT_VERSION) return `v is ${JSON.stringify(e.v)}, expected ${AUDIT_VERSION}`;
  if (!(typeof e.seq === 'number' && Number.isInteger(e.seq) && e.seq >= 0))
    return 'seq must be a non-negative integer';
  if (typeof e.time !== 'string' || Number.isNaN(Date.parse(e.time))) return 'time must be an ISO 8601 date';
  for (const key of ['prev', 'hash'] as const) {
    if (typeof e[key] !== 'string' || !HEX64.test(e[key] as string)) return `${key} must be 64 hex digits`;
  }
  if (e.keyId !== undefined && typeof e.keyId !== 'string') return 'keyId must be a string';
  if (e.mac !== undefined && !(typeof e.mac === 'string' && HEX64.test(e.mac))) return 'mac must be 64 hex digits';
  if ((e.keyId === undefined) !== (e.mac === undefined)) return 'keyId and mac come together';
  if (e.event === REPAIR_EVENT) {
    const repair = e.repair as Record<string, unknown> | null;
    if (
      repair === null ||
      typeof repair !== 'object' ||
      typeof repair.reason !== 'string' ||
      !Array.isArray(repair.problems)
    )
      return 'repair must be {reason, problems, head, cut}';
    return null;
  }
  for (const key of ['pathSha256', 'suggestionSha256'] as const) {
    if (typeof e[key] !== 'string' || !HEX64.test(e[key] as string)) return `${key} must be 64 hex digits`;
  }
  if (!AUDIT_EVENTS.includes(e.event as AuditEvent)) return `event ${JSON.stringify(e.event)} is unknown`;
  if (!MODES.includes(e.mode as Mode)) return `mode ${JSON.stringify(e.mode)} is unknown`;
  const adapter = e.adapter as Record<string, unknown> | null;
  if (adapter === null || typeof adapter !== 'object' || !('id' in adapter) || !('sha256' in adapter))
    return 'adapter must be {id, sha256}';
  if (!Array.isArray(e.verdicts)) return 'verdicts must be a list';
  return null;
}

export interface AuditVerification {
  ok: boolean;
  file: string;
  entries: number;
  /** The last entry's hash (GENESIS_HASH for an empty log). */
  lastHash: string;
  /** Entry numbers of the repairs recorded in the chain (`idiom audit repair`). */
  repairs: number[];
  /** The key the MACs were checked with (its id); null when none was. */
  keyId: string | null;
  /** Every problem found, first first; `message` is the first (or the summary when ok). */
  problems: string[];
  /** Not failures: e.g. a recorded repair, or MACs that no key was given to check. */
  warnings: string[];
  message: string;
}

/**
 * Checks the whole chain: every line an entry, every hash matching its content, entries numbered
 * 0, 1, 2 … in order, each pointing at the hash of the one before, and the head file agreeing with
 * the last entry. With a key (default: loadAuditKey()), every MAC too. Problems name the entry and line.
 */
export function verifyAuditLog(file: string, options: { key?: AuditKey | null } = {}): AuditVerification {
  const resolved = path.resolve(file);
  const key = options.key === undefined ? loadAuditKey() : options.key;
  let text: string;
  try {
    text = fs.readFileSync(resolved, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    // A head without its log: the log was deleted (reported below, as a cut to nothing).
    if (code !== 'ENOENT' || !fs.existsSync(headFileOf(resolved)))
      throw new Error(`${resolved}: cannot read the audit log (${code ?? String(error)})`);
    text = '';
  }
  const problems: string[] = [];
  const warnings: string[] = [];
  const add = (problem: string) => {
    if (problems.length < 50) problems.push(problem);
  };
  const rawLines = text.split('\n');
  if (rawLines[rawLines.length - 1] === '') rawLines.pop();
  else if (rawLines.length > 0)
    add(`line ${rawLines.length} is not terminated by a newline (a torn or hand-made write)`);

  const entries: (AnyAuditEntry | null)[] = rawLines.map((line, i) => {
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
    return json as AnyAuditEntry;
  });

  let expected = 0;
  let prevHash = GENESIS_HASH;
  let firstKeyed: number | null = null;
  const repairs: number[] = [];
  entries.forEach((entry, i) => {
    const line = i + 1;
    if (!entry) return;
    const name = `entry ${entry.seq} (line ${line})`;
    if (entryHash(entry) !== entry.hash) add(`${name} was edited: its content does not match its sha256`);
    if (entry.seq !== expected) {
      if (entry.seq > expected) {
        const later = entries.findIndex((e, j) => j > i && e?.seq === expected);
        if (later >= 0)
          add(
            `entries out of order: line ${line} holds entry ${entry.seq} but entry ${expected} comes later, at line ${later + 1} (reordered)`,
          );
        else
          add(
            `entry ${expected}${entry.seq - expected > 1 ? `..${entry.seq - 1}` : ''} missing before line ${line}, which holds entry ${entry.seq} (removed)`,
          );
      } else {
        add(`line ${line} holds entry ${entry.seq} after entry ${expected - 1}: reordered or duplicated`);
      }
    } else if (entry.prev !== prevHash) {
      add(
        `${name} does not chain to the entry before it: its prev hash differs (that entry was edited, replaced or removed)`,
      );
    }
    if (entry.event === REPAIR_EVENT) {
      repairs.push(entry.seq);
      warnings.push(
        `entry ${entry.seq} records a repair (${entry.repair.reason}): ${entry.repair.problems[0] ?? 'no problem named'}`,
      );
    }
    if (entry.keyId !== undefined) {
      firstKeyed ??= i;
      if (key && entry.keyId !== key.id)
        add(`${name} is keyed with key ${entry.keyId}, not the configured key ${key.id}`);
      else if (key && !sameHex(entry.mac!, hmac(key, entry.hash)))
        add(`${name}: its MAC does not match (written or rewritten without the key)`);
    } else if (firstKeyed !== null) {
      add(`${name} carries no MAC though entries before it do (written or rewritten without the key)`);
    }
    prevHash = entry.hash;
    expected = Math.max(expected, entry.seq + 1);
  });

  const present = entries.filter((e): e is AnyAuditEntry => e !== null);
  const keyed = present.filter((e) => e.keyId !== undefined);
  if (key && present.length > 0) {
    if (keyed.length === 0)
      add(
        `no entry carries a MAC though a key is configured (key ${key.id}): the log was written, or rewritten, without it`,
      );
    else if (firstKeyed! > 0)
      warnings.push(`the first ${firstKeyed} lines carry no MAC (written before the key was set)`);
  } else if (!key && keyed.length > 0) {
    warnings.push(
      `${keyed.length} entries carry MACs (key ${keyed[0].keyId}) that were not checked: set $${AUDIT_KEY_ENV} or ${auditKeyFile()}`,
    );
  }

  const last = present.length > 0 ? present[present.length - 1] : null;
  const headFile = headFileOf(resolved);
  const headName = path.basename(headFile);
  const head = readHead(headFile);
  if (head === 'invalid') add(`${headName} is not a valid head record ({"seq", "hash"})`);
  else if (head === null && entries.length > 0)
    add(`no ${headName} beside the log: its tail may have been removed with it`);
  else if (head !== null) {
    const lastSeq = last ? last.seq : -1;
    if (head.seq > lastSeq) {
      add(
        `the log was truncated: it ends at ${last ? `entry ${lastSeq}` : 'no entry'} but its head records entry ${head.seq}; entries ${lastSeq + 1}..${head.seq} are missing`,
      );
    } else {
      const atHead = present.find((e) => e.seq === head.seq);
      if (atHead && atHead.hash !== head.hash)
        add(`entry ${head.seq} differs from the one the head recorded (replaced)`);
      if (
        atHead?.keyId !== undefined &&
        key &&
        atHead.keyId === key.id &&
        (head.mac === undefined || !sameHex(head.mac, hmac(key, headMacText(head.seq, head.hash))))
      ) {
        add(`${headName}: its MAC does not match (rewritten without the key)`);
      }
      if (head.seq < lastSeq)
        warnings.push(
          `${lastSeq - head.seq} entr${lastSeq - head.seq === 1 ? 'y' : 'ies'} after the head's entry ${head.seq} (a writer stopped between appending and updating the head?)`,
        );
    }
  }
  const ok = problems.length === 0;
  const checked = key && keyed.length > 0 ? `, MACs checked (key ${key.id})` : '';
  const repaired =
    repairs.length > 0
      ? `, ${repairs.length} repair${repairs.length === 1 ? '' : 's'} recorded (entr${repairs.length === 1 ? 'y' : 'ies'} ${repairs.join(', ')})`
      : '';
  return {
    ok,
    file: resolved,
    entries: present.length,
    lastHash: last ? last.hash : GENESIS_HASH,
    repairs,
    keyId: key && keyed.length > 0 ? key.id : null,
    problems,
    warnings,
    message: ok
      ? `${resolved}: ${present.length} entries, chain intact${checked}${repaired}${last ? `, last entry ${last.seq} ${last.hash.slice(0, 12)}` : ''}`
      : `${resolved}: ${problems[0]}`,
  };
}
