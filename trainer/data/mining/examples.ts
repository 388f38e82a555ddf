// Text-level training examples from one source file: plain left-to-right windows, and FIM
// (prefix-suffix-middle) examples whose middle is cut at an AST boundary.
//
// A file is split into windows of at most `windowChars`, cut preferably where a top-level chunk
// starts, else at a blank line, else at a line end. Each window becomes a FIM example with
// probability `fimRate` (default 0.5, as StarCoder and Refact), else a plain example. A FIM middle
// is, mixed the way AST-aware FIM (SAFIM) and completion traffic look:
//   - fim-block (40%): a whole syntax node that starts a line, through the end of its last line
//     (a statement, a method, a block: what "complete the body" asks for);
//   - fim-line-rest (30%): from a node that starts mid-line to the end of that line (typing a line);
//   - fim-line-part (30%): a node inside one line with more code after it (an argument, a call).
// All randomness comes from a PRNG seeded by (seed, path): the same seed gives the same examples,
// whatever order files are visited in.

import type { SyntaxIndex } from './syntax';
import { lineAt } from './syntax';

export type Split = 'train' | 'heldout';
export type FimKind = 'fim-block' | 'fim-line-rest' | 'fim-line-part';

interface ExampleBase {
  path: string;
  language: string;
  split: Split;
}
export interface PlainExample extends ExampleBase {
  kind: 'plain';
  text: string;
  // The window ends the file: the tokenised example ends with the end-of-text token.
  endsFile: boolean;
}
export interface FimExample extends ExampleBase {
  kind: FimKind;
  prefix: string;
  middle: string;
  suffix: string;
}
export type Example = PlainExample | FimExample;

export interface ExampleOptions {
  seed: number;
  fimRate: number;
  windowChars: number;
  maxMiddleChars: number;
  // Held-out files: at most this many changed lines become line-completion (FIM) examples.
  maxHeldOutLinesPerFile: number;
}

export const DEFAULT_EXAMPLE_OPTIONS: ExampleOptions = {
  seed: 0,
  fimRate: 0.5,
  windowChars: 3000,
  maxMiddleChars: 1200,
  maxHeldOutLinesPerFile: 32,
};

const FIM_MODES: { kind: FimKind; weight: number }[] = [
  { kind: 'fim-block', weight: 0.4 },
  { kind: 'fim-line-rest', weight: 0.3 },
  { kind: 'fim-line-part', weight: 0.3 },
];

export interface ExampleSource {
  path: string;
  language: string;
  text: string;
  split: Split;
  // Held-out files: 1-based line numbers changed in the held-out commits.
  changedLines?: readonly number[];
}

function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

// mulberry32: a small, fast, well-distributed 32-bit PRNG; deterministic across platforms.
export function seededRandom(seed: number, key: string): () => number {
  let state = (fnv1a(key) ^ Math.imul(seed >>> 0, 0x9e3779b1)) >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function isBlank(text: string, from: number, to: number): boolean {
  for (let i = from; i < to; i++) {
    const c = text.charCodeAt(i);
    if (c !== 32 && c !== 9) return false;
  }
  return true;
}

function countNonSpace(text: string, from: number, to: number): number {
  let n = 0;
  for (let i = from; i < to; i++) {
    const c = text.charCodeAt(i);
    if (c !== 32 && c !== 9 && c !== 10) n++;
  }
  return n;
}

class SourceLines {
  readonly starts: number[] = [0];
  constructor(readonly text: string) {
    for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) === 10) this.starts.push(i + 1);
  }
  lineOf(index: number): number {
    return lineAt(this.starts, index);
  }
  // End of the line holding `index`: the offset of its '\n', or the text length.
  lineEnd(index: number): number {
    const newline = this.text.indexOf('\n', index);
    return newline < 0 ? this.text.length : newline;
  }
}

function largestAtMost(sorted: readonly number[], limit: number): number {
  let lo = 0;
  let hi = sorted.length - 1;
  let found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid] <= limit) {
      found = sorted[mid];
      lo = mid + 1;
    } else hi = mid - 1;
  }
  return found;
}

// [start, end) windows covering the text, cut at chunk starts, blank lines or line ends.
export function windowsOf(text: string, syntax: SyntaxIndex | null, windowChars: number): [number, number][] {
  const lines = new SourceLines(text);
  const chunkCuts = syntax
    ? [
        ...new Set(syntax.chunks.filter((chunk) => chunk.depth === 0).map((chunk) => lines.starts[chunk.startLine])),
      ].sort((a, b) => a - b)
    : [];
  const blankCuts: number[] = [];
  for (let line = 1; line < lines.starts.length; line++) {
    const previous = lines.starts[line - 1];
    if (isBlank(text, previous, lines.starts[line] - 1)) blankCuts.push(lines.starts[line]);
  }
  const windows: [number, number][] = [];
  let start = 0;
  while (start < text.length) {
    if (text.length - start <= windowChars) {
      windows.push([start, text.length]);
      break;
    }
    const limit = start + windowChars;
    const floor = start + Math.floor(windowChars / 3);
    let cut = largestAtMost(chunkCuts, limit);
    if (cut <= floor) cut = largestAtMost(blankCuts, limit);
    if (cut <= floor) cut = largestAtMost(lines.starts, limit);
    if (cut <= start) {
      cut = limit;
      const c = text.charCodeAt(cut - 1);
      if (c >= 0xd800 && c <= 0xdbff) cut--; // never split a surrogate pair
    }
    windows.push([start, cut]);
    start = cut;
  }
  return windows;
}

function firstNodeAtOrAfter(syntax: SyntaxIndex, offset: number): number {
  let lo = 0;
  let hi = syntax.nodeCount;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (syntax.nodeStarts[mid] < offset) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// Middle [start, end) candidates of one FIM kind inside a window.
function middleCandidates(
  kind: FimKind,
  lines: SourceLines,
  syntax: SyntaxIndex,
  windowStart: number,
  windowEnd: number,
  maxMiddleChars: number,
): [number, number][] {
  const text = lines.text;
  const out: [number, number][] = [];
  let previous = -1;
  for (let i = firstNodeAtOrAfter(syntax, windowStart); i < syntax.nodeCount; i++) {
    const start = syntax.nodeStarts[i];
    if (start >= windowEnd) break;
    const end = syntax.nodeEnds[i];
    if (end > windowEnd) continue;
    const line = lines.lineOf(start);
    const lineStart = lines.starts[line];
    const atLineStart = isBlank(text, lineStart, start);
    let middle: [number, number] | undefined;
    if (kind === 'fim-block') {
      if (!atLineStart) continue;
      const lastLineEnd = lines.lineEnd(Math.max(start, end - 1));
      if (!isBlank(text, end, lastLineEnd) && !/^[;,]\s*$/.test(text.slice(end, lastLineEnd))) continue;
      const middleEnd = Math.min(windowEnd, lastLineEnd + 1);
      if (middleEnd - start > maxMiddleChars || countNonSpace(text, start, middleEnd) < 2) continue;
      middle = [start, middleEnd];
    } else if (kind === 'fim-line-rest') {
      if (atLineStart) continue;
      const middleEnd = Math.min(windowEnd, lines.lineEnd(start));
      if (countNonSpace(text, start, middleEnd) < 2) continue;
      middle = [start, middleEnd];
    } else {
      const lineEnd = lines.lineEnd(start);
      if (end > lineEnd || end - start < 2) continue;
      if (isBlank(text, end, lineEnd) || (atLineStart && end === lineEnd)) continue;
      middle = [start, end];
    }
    // Nested nodes often share a span (`x = 1` and its expression): keep one of each.
    const key = middle[0] * 4294967296 + middle[1];
    if (key === previous) continue;
    previous = key;
    out.push(middle);
  }
  return out;
}

function pickKind(random: () => number): FimKind {
  let r = random();
  for (const mode of FIM_MODES) {
    if (r < mode.weight) return mode.kind;
    r -= mode.weight;
  }
  return FIM_MODES[FIM_MODES.length - 1].kind;
}

// Changed lines of a held-out file as line-completion examples: the prefix ends where the line's
// code starts (after its indentation), the middle is the rest of the line.
function heldOutLineExamples(source: ExampleSource, lines: SourceLines, options: ExampleOptions): FimExample[] {
  const text = source.text;
  const eligible = (source.changedLines ?? []).filter((line) => {
    if (line < 1 || line > lines.starts.length) return false;
    const start = lines.starts[line - 1];
    return countNonSpace(text, start, lines.lineEnd(start)) >= 3;
  });
  const take = Math.min(eligible.length, options.maxHeldOutLinesPerFile);
  const examples: FimExample[] = [];
  for (let k = 0; k < take; k++) {
    // Evenly spaced over the changed lines, so a big change is sampled across its length.
    const line = eligible[Math.floor((k * eligible.length) / take)];
    const lineStart = lines.starts[line - 1];
    const lineEnd = lines.lineEnd(lineStart);
    let codeStart = lineStart;
    while (codeStart < lineEnd && (text.charCodeAt(codeStart) === 32 || text.charCodeAt(codeStart) === 9)) codeStart++;
    // Context cut at line starts: up to 2/3 of a window before the line, 1/3 after it.
    const prefixStart = Math.max(0, lineStart - Math.floor((options.windowChars * 2) / 3));
    const prefixLine = prefixStart === 0 ? 0 : Math.min(lines.lineOf(prefixStart - 1) + 1, line - 1);
    const suffixEnd = Math.min(text.length, lineEnd + Math.floor(options.windowChars / 3));
    examples.push({
      kind: 'fim-line-rest',
      path: source.path,
      language: source.language,
      split: 'heldout',
      prefix: text.slice(lines.starts[prefixLine], codeStart),
      middle: text.slice(codeStart, lineEnd),
      suffix: text.slice(lineEnd, suffixEnd),
    });
  }
  return examples;
}

// The examples of one file, deterministic for (options.seed, source.path, source.text).
export function buildExamples(source: ExampleSource, syntax: SyntaxIndex | null, options: ExampleOptions): Example[] {
  const text = source.text;
  const random = seededRandom(options.seed, source.path);
  const lines = new SourceLines(text);
  const examples: Example[] = [];
  const base = { path: source.path, language: source.language, split: source.split };
  for (const [start, end] of windowsOf(text, syntax, options.windowChars)) {
    if (countNonSpace(text, start, end) === 0) continue;
    const wantFim = source.split === 'train' && random() < options.fimRate;
    if (wantFim && syntax) {
      const first = pickKind(random);
      const order = [first, ...FIM_MODES.map((mode) => mode.kind).filter((kind) => kind !== first)];
      let made = false;
      for (const kind of order) {
        const candidates = middleCandidates(kind, lines, syntax, start, end, options.maxMiddleChars);
        if (candidates.length === 0) continue;
        const [middleStart, middleEnd] = candidates[Math.floor(random() * candidates.length)];
        examples.push({
          ...base,
          kind,
          prefix: text.slice(start, middleStart),
          middle: text.slice(middleStart, middleEnd),
          suffix: text.slice(middleEnd, end),
        });
        made = true;
        break;
      }
      if (made) continue;
    }
    examples.push({ ...base, kind: 'plain', text: text.slice(start, end), endsFile: end === text.length });
  }
  if (source.split === 'heldout') examples.push(...heldOutLineExamples(source, lines, options));
  return examples;
}
