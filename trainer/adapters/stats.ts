// .idiom/stats.jsonl: what users did with the suggestions each adapter served (shown, accepted,
// partially accepted, dismissed), one JSON object a line, appended by the language server and
// read by `idiom adapters` and the adapters report. Local only: nothing here is sent anywhere.
// A line that does not parse (a torn write, an edit by hand) is skipped and counted; reading
// goes on at the next line, so a damaged file costs its damaged lines and nothing else.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { MODES, type Mode } from './mode';

export const STATS_FILE = 'stats.jsonl';
export const SUGGESTION_EVENTS = ['shown', 'accepted', 'partial', 'dismissed'] as const;
export type SuggestionEvent = (typeof SUGGESTION_EVENTS)[number];

/** At most this much of the file's tail is read: older events count no more than the newest ones. */
const MAX_READ_BYTES = 32 * 1024 * 1024;

export interface StatsEvent {
  /** ISO 8601. */
  at: string;
  event: SuggestionEvent;
  /** The adapter that served the suggestion; null for the base model alone. */
  adapter: string | null;
  mode: Mode;
  /** Characters the event accepted (accepted, partial); 0 for shown and dismissed. */
  chars: number;
}

export interface Acceptance {
  shown: number;
  accepted: number;
  /** Partial accepts (a word or a line of a suggestion). */
  partial: number;
  dismissed: number;
  /** Characters inserted by accepts and partial accepts. */
  acceptedChars: number;
  /** accepted / shown, null before anything was shown. */
  rate: number | null;
}

export interface StatsSummary {
  /** Per adapter id; the key `base` is the base model alone. */
  byAdapter: Map<string, Acceptance>;
  /** Events counted. */
  events: number;
  /** Lines that were not a valid event (corrupt, truncated), skipped. */
  skipped: number;
}

/** The map key of the base model alone. */
export const BASE_KEY = 'base';

export function emptyAcceptance(): Acceptance {
  return { shown: 0, accepted: 0, partial: 0, dismissed: 0, acceptedChars: 0, rate: null };
}

/** One line as an event, or null when it is not one. */
export function parseStatsLine(line: string): StatsEvent | null {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return null;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return null;
  const record = value as Record<string, unknown>;
  const { at, event, adapter, mode, chars } = record;
  if (typeof at !== 'string' || Number.isNaN(Date.parse(at))) return null;
  if (!SUGGESTION_EVENTS.includes(event as SuggestionEvent)) return null;
  if (adapter !== null && (typeof adapter !== 'string' || adapter === '')) return null;
  if (!MODES.includes(mode as Mode)) return null;
  if (!Number.isSafeInteger(chars) || (chars as number) < 0) return null;
  return {
    at,
    event: event as SuggestionEvent,
    adapter: adapter as string | null,
    mode: mode as Mode,
    chars: chars as number,
  };
}

export function statsLine(event: StatsEvent): string {
  return `${JSON.stringify({ at: event.at, event: event.event, adapter: event.adapter, mode: event.mode, chars: event.chars })}\n`;
}

/** Counts per adapter over the text of a stats file. */
export function summarizeStats(text: string): StatsSummary {
  const byAdapter = new Map<string, Acceptance>();
  let events = 0;
  let skipped = 0;
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const event = parseStatsLine(line);
    if (!event) {
      skipped++;
      continue;
    }
    events++;
    const key = event.adapter ?? BASE_KEY;
    let counts = byAdapter.get(key);
    if (!counts) {
      counts = emptyAcceptance();
      byAdapter.set(key, counts);
    }
    counts[event.event]++;
    if (event.event === 'accepted' || event.event === 'partial') counts.acceptedChars += event.chars;
  }
  for (const counts of byAdapter.values()) counts.rate = counts.shown > 0 ? counts.accepted / counts.shown : null;
  return { byAdapter, events, skipped };
}

/**
 * The registry's stats; empty when there is no file or it cannot be read (a problem line says
 * why). A file larger than the read limit is read from the first whole line of its tail.
 */
export function readStats(registryDir: string): StatsSummary & { problem?: string } {
  const tail = readLogTail(path.join(registryDir, STATS_FILE));
  const summary = summarizeStats(tail.text);
  return tail.problem ? { ...summary, problem: tail.problem } : summary;
}

/** Appends one event (appendLogLine). */
export function appendStatsEvent(registryDir: string, event: StatsEvent): void {
  appendLogLine(path.join(registryDir, STATS_FILE), statsLine(event));
}

/**
 * The text of an append-only log in the registry, '' when it does not exist or cannot be read (a
 * problem line says why). A file past the read limit is read from the first whole line of its tail.
 */
export function readLogTail(file: string): { text: string; problem?: string } {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    return code === 'ENOENT' ? { text: '' } : { text: '', problem: `${file}: cannot read (${code ?? String(error)})` };
  }
  try {
    const size = fs.fstatSync(fd).size;
    const length = Math.min(size, MAX_READ_BYTES);
    const buffer = Buffer.alloc(length);
    let read = 0;
    while (read < length) {
      const n = fs.readSync(fd, buffer, read, length - read, size - length + read);
      if (n === 0) break;
      read += n;
    }
    const text = buffer.subarray(0, read).toString('utf8');
    // A cut into the middle of a line: start at the next whole one.
    return { text: length < size ? text.slice(text.indexOf('\n') + 1) : text };
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Appends one line (ending in a newline) to an append-only log. A file whose last line was torn
 * (no final newline) gets a newline first, so the new line stays one of its own. Never follows a
 * symbolic link.
 */
export function appendLogLine(file: string, line: string): void {
  const fd = fs.openSync(
    file,
    fs.constants.O_RDWR | fs.constants.O_APPEND | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW,
    0o644,
  );
  try {
    const size = fs.fstatSync(fd).size;
    let prefix = '';
    if (size > 0) {
      const last = Buffer.alloc(1);
      fs.readSync(fd, last, 0, 1, size - 1);
      if (last[0] !== 0x0a) prefix = '\n';
    }
    fs.writeSync(fd, prefix + line);
  } finally {
    fs.closeSync(fd);
  }
}
