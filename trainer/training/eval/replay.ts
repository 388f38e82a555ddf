import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { QualityComparison, ReplayScore } from '../../adapters/manifest';
import type { MinedFile } from '../../data/mining/mine';
import { Rng } from '../../model/random';
import { percentile, startLspClient } from './lsp-client';
import { editSimilarity } from './metrics';
import { round } from '../../util/round';

// Replaying what a user sees: the lines that the temporal held-out commits added (their files were
// never trained on) are typed again at two points each, the start of the line's code (after its
// indentation) and mid-line (after its first word or token). The file is as it is at HEAD with the
// rest of that line removed, and one inline completion is asked for through the real language
// server over stdio, so the prompt, context snippets, recall, generation, post-processing,
// credential filter and (in compliance mode) the policy gate are the ones users get. Used by
// `idiom bench quality` and by `idiom train`'s promotion rule.

export type ReplayPointKind = 'start' | 'mid';

export interface ReplayPoint {
  path: string;
  /** 0-based line in the file at HEAD. */
  line: number;
  kind: ReplayPointKind;
  /** Cursor column: the characters of the line kept. */
  column: number;
  /** The rest of the line as the commit wrote it (trailing whitespace dropped). */
  expected: string;
}

export interface ReplayFile {
  path: string;
  text: string;
  languageId: string;
}

export interface ReplaySet {
  files: ReplayFile[];
  points: ReplayPoint[];
  lines: number;
  /** Lines the held-out commits added or changed (before sampling). */
  candidates: number;
  /** Mined training files: what the copy-from-repository reference (and training) saw. */
  trainingFiles: { path: string; text: string }[];
}

/** The LSP language id of a mined file (mining names languages by grammar). */
function languageIdOf(filePath: string, language: string): string {
  if (filePath.endsWith('.tsx')) return 'typescriptreact';
  if (filePath.endsWith('.jsx')) return 'javascriptreact';
  return language;
}

const firstToken = /^([A-Za-z_$][\w$]*|\d+|\S)/;

/** Lines worth replaying: some code (not only brackets or punctuation). */
function replayable(text: string): boolean {
  const code = text.trim();
  return code.length >= 2 && /[\w$]/.test(code);
}

/** The held-out lines of `files` (mined), sampled with `seed`, as replay points. */
export function replayPoints(mined: readonly MinedFile[], maxLines: number, seed: number): ReplaySet {
  const heldOut = mined.filter((file) => file.split === 'heldout');
  const candidates: { file: number; line: number }[] = [];
  const files: ReplayFile[] = heldOut.map((file) => ({
    path: file.path,
    text: file.text,
    languageId: languageIdOf(file.path, file.language),
  }));
  heldOut.forEach((file, index) => {
    const lines = file.text.split('\n');
    for (const oneBased of file.changedLines) {
      const text = lines[oneBased - 1];
      if (text !== undefined && replayable(text)) candidates.push({ file: index, line: oneBased - 1 });
    }
  });
  // A seeded shuffle, then file order: the same repository and seed give the same lines.
  const rng = new Rng(seed);
  for (let i = candidates.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [candidates[i], candidates[j]] = [candidates[j], candidates[i]];
  }
  const chosen = candidates.slice(0, maxLines).sort((a, b) => a.file - b.file || a.line - b.line);
  const points: ReplayPoint[] = [];
  for (const { file, line } of chosen) {
    const text = files[file].text.split('\n')[line].replace(/\s+$/, '');
    const indent = text.length - text.trimStart().length;
    points.push({ path: files[file].path, line, kind: 'start', column: indent, expected: text.slice(indent) });
    const token = firstToken.exec(text.slice(indent));
    const column = indent + (token ? token[0].length : 0);
    if (token && column < text.length)
      points.push({ path: files[file].path, line, kind: 'mid', column, expected: text.slice(column) });
  }
  return {
    files,
    points,
    lines: chosen.length,
    candidates: candidates.length,
    trainingFiles: mined.filter((file) => file.split === 'train').map((file) => ({ path: file.path, text: file.text })),
  };
}

/** The document as the replay shows it: line `point.line` cut at the cursor; prefix and suffix. */
export function replayDocument(text: string, point: ReplayPoint): { text: string; prefix: string; suffix: string } {
  const lines = text.split('\n');
  const before = lines.slice(0, point.line).join('\n');
  const cut = lines[point.line].slice(0, point.column);
  const prefix = (point.line > 0 ? `${before}\n` : '') + cut;
  const after = lines.slice(point.line + 1);
  const suffix = after.length > 0 ? `\n${after.join('\n')}` : '';
  return { text: prefix + suffix, prefix, suffix };
}

/**
 * Copy-from-file: the longest tail of `prefix` that occurs earlier in `prefix`, and what followed
 * its last such occurrence to the end of that line ('' when nothing did).
 */
export function copyFromFile(prefix: string, maxChars = 512): string {
  let best = -1;
  // A tail of k characters occurs earlier only if its tail of k - 1 does: grow until it does not.
  for (let k = 1; k <= Math.min(maxChars, prefix.length - 1); k++) {
    const at = prefix.lastIndexOf(prefix.slice(prefix.length - k), prefix.length - k - 1);
    if (at < 0) break;
    best = at + k;
  }
  if (best < 0) return '';
  const end = prefix.indexOf('\n', best);
  return prefix.slice(best, end < 0 ? prefix.length : end).replace(/\s+$/, '');
}

export interface VariantResult {
  name: string;
  /** Replay points with a suggestion shown, of all points. */
  shown: number;
  /** The suggestion's first line equals the rest of the line. */
  exactMatch: number;
  /** Characters of suggestions that are right as far as they go (a prefix of the rest of the line), over all characters of the rest of the replayed lines. */
  acceptedCharShare: number;
  /** Exact among those shown. */
  precision: number;
  /** Mean edit similarity of the suggestion's first line ('' when none) to the rest of the line. */
  editSimilarity: number;
  p50Ms: number | null;
  p95Ms: number | null;
  /** The same, per replay point kind. */
  byPoint: Record<
    ReplayPointKind,
    { points: number; shown: number; exactMatch: number; acceptedCharShare: number; precision: number }
  >;
  adapter?: string | null;
}

export interface Answer {
  text: string | null;
  ms?: number;
}

function firstLineOf(text: string): string {
  const newline = text.indexOf('\n');
  return (newline < 0 ? text : text.slice(0, newline)).replace(/\s+$/, '');
}

export function scoreVariant(name: string, points: readonly ReplayPoint[], answers: readonly Answer[]): VariantResult {
  const tally = (indices: number[]) => {
    let shown = 0;
    let exact = 0;
    let accepted = 0;
    let total = 0;
    let similarity = 0;
    for (const i of indices) {
      const expected = points[i].expected;
      const text = answers[i].text;
      total += expected.length;
      const line = text === null ? '' : firstLineOf(text);
      similarity += editSimilarity(line, expected);
      if (text === null || text.trim() === '') continue;
      shown++;
      if (line === expected) exact++;
      if (line !== '' && expected.startsWith(line)) accepted += line.length;
    }
    const n = Math.max(1, indices.length);
    return {
      points: indices.length,
      shown: round(shown / n, 4),
      exactMatch: round(exact / n, 4),
      acceptedCharShare: round(accepted / Math.max(1, total), 4),
      precision: round(shown === 0 ? 0 : exact / shown, 4),
      similarity: round(similarity / n, 4),
    };
  };
  const all = tally(points.map((_, i) => i));
  const byKind = (kind: ReplayPointKind) => {
    const {
      points: count,
      shown,
      exactMatch,
      acceptedCharShare,
      precision,
    } = tally(points.flatMap((p, i) => (p.kind === kind ? [i] : [])));
    return { points: count, shown, exactMatch, acceptedCharShare, precision };
  };
  const times = answers.flatMap((a) => (a.ms === undefined ? [] : [a.ms]));
  return {
    name,
    shown: all.shown,
    exactMatch: all.exactMatch,
    acceptedCharShare: all.acceptedCharShare,
    precision: all.precision,
    editSimilarity: all.similarity,
    p50Ms: times.length ? round(percentile(times, 50), 1) : null,
    p95Ms: times.length ? round(percentile(times, 95), 1) : null,
    byPoint: { start: byKind('start'), mid: byKind('mid') },
  };
}

export interface ServedVariant {
  name: string;
  /** initializationOptions.adapter: an id, or 'none' for the base alone; omitted: the registry's active one. */
  adapter?: string;
  settings?: Record<string, unknown>;
}

/** Asks the real server for a completion at every replay point; one answer per point. */
export async function replayThroughServer(
  set: ReplaySet,
  repo: string,
  base: string,
  variant: ServedVariant,
  log: (line: string) => void,
): Promise<{ answers: Answer[]; adapter: string | null }> {
  const client = await startLspClient({ base, repo, cwd: repo, adapter: variant.adapter, settings: variant.settings });
  const { connection } = client;
  try {
    await client.ready();
    const adapter = client.status().adapter;
    log(`${variant.name}: ${client.status().message}`);
    const answers: Answer[] = [];
    const byPath = new Map(set.files.map((file) => [file.path, file]));
    let version = 0;
    let openUri: string | null = null;
    for (const point of set.points) {
      const file = byPath.get(point.path)!;
      const uri = pathToFileURL(path.join(repo, point.path)).href;
      const document = replayDocument(file.text, point);
      if (openUri !== uri) {
        if (openUri) await connection.sendNotification('textDocument/didClose', { textDocument: { uri: openUri } });
        await connection.sendNotification('textDocument/didOpen', {
          textDocument: { uri, languageId: file.languageId, version: ++version, text: document.text },
        });
        openUri = uri;
      } else {
        await connection.sendNotification('textDocument/didChange', {
          textDocument: { uri, version: ++version },
          contentChanges: [{ text: document.text }],
        });
      }
      const started = performance.now();
      const answer = await connection.sendRequest<{ items: { insertText: string }[] } | null>(
        'textDocument/inlineCompletion',
        {
          textDocument: { uri },
          position: { line: point.line, character: point.column },
          context: { triggerKind: 2 },
        },
      );
      answers.push({ text: answer?.items[0]?.insertText ?? null, ms: performance.now() - started });
    }
    return { answers, adapter };
  } finally {
    await client.stop();
  }
}

export interface CompareOnReplayOptions {
  repo: string;
  base: string;
  /** The candidate adapter's folder. */
  candidate: string;
  /** What served before it: an adapter id of the registry, or 'none' for the base. */
  reference: string;
  mined: readonly MinedFile[];
  lines: number;
  seed: number;
  mode: 'complete' | 'compliance';
  log: (line: string) => void;
}

function replayScore(result: VariantResult): ReplayScore {
  return {
    shown: result.shown,
    exactMatch: result.exactMatch,
    acceptedCharShare: result.acceptedCharShare,
    precision: result.precision,
  };
}

/** The candidate against the reference on the same replayed held-out lines; null when there are none. */
export async function compareOnReplay(options: CompareOnReplayOptions): Promise<QualityComparison | null> {
  const set = replayPoints(options.mined, options.lines, options.seed);
  if (set.points.length === 0) return null;
  const settings = { mode: options.mode };
  const candidate = await replayThroughServer(
    set,
    options.repo,
    options.base,
    { name: 'candidate', adapter: options.candidate, settings },
    options.log,
  );
  const reference = await replayThroughServer(
    set,
    options.repo,
    options.base,
    { name: 'reference', adapter: options.reference, settings },
    options.log,
  );
  return {
    lines: set.lines,
    points: set.points.length,
    seed: options.seed,
    candidate: replayScore(scoreVariant('candidate', set.points, candidate.answers)),
    reference: {
      name: options.reference === 'none' ? 'base' : options.reference,
      score: replayScore(scoreVariant('reference', set.points, reference.answers)),
    },
  };
}
