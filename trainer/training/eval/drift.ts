import type { AdapterManifest } from '../../adapters/manifest';
import { runGit } from '../../data/mining/git-command';
import { pathsChangedBetween } from '../../data/mining/git';
import { mineRepository } from '../../data/mining/mine';
import type { Tokenizer } from '../../model/tokenizer/tokenizer';
import { round } from '../../util/round';

// Drift: how far the code has moved on since an adapter was trained. The adapter's manifest holds
// its training commit (repo.head) and its held-out loss then (metrics.adapter.loss); the text of
// the files changed since that commit, kept by the same filters and secret scanner as mining, is
// scored now under base + adapter and under the base alone, bounded to a few thousand tokens. The
// score runs wherever the caller's scorer runs: the engine worker, queued between completions in
// the language server.
//
// The rise is measured against the base: (loss / base loss now) / (loss / base loss then) − 1.
// Code that is merely harder (new names, longer files) raises both losses and does not count; an
// idiom the adapter learned and the code left behind raises the adapter's alone.

/** When a drifted adapter is reported: its loss rose by this share, or it is more than N commits behind. */
export interface DriftThresholds {
  /** Rise of the mean next-token loss, against the base's, over the held-out loss at training time (0.05 = +5%). */
  lossIncrease: number;
  commitsBehind: number;
}

export const DEFAULT_DRIFT_THRESHOLDS: DriftThresholds = { lossIncrease: 0.05, commitsBehind: 20 };

/** Tokens scored at most: enough to average over several files, little next to a completion's work. */
export const DRIFT_MAX_TOKENS = 4096;

/** Tokens taken from one file at least, so a sample of many files is not all first lines. */
const MIN_TOKENS_PER_FILE = 256;

/** What scores text: ReviewScorer (trainer/modes/review/scorer.ts) fits, with the adapter set. */
export interface TextScorer {
  readonly tokenizer: Tokenizer;
  /** Per-token surprisal in bits of `text`'s tokens (NaN where a token has no context); `base`: without the adapter. */
  tokenSurprisal(text: string, options?: { base?: boolean }): Promise<{ ids: number[]; bits: Float64Array }>;
}

export interface DriftReport {
  adapterId: string;
  /** The commit the adapter was trained at; null when its manifest has none. */
  trainedAt: string | null;
  head: string | null;
  commitsBehind: number | null;
  /** Files changed since the training commit that mining keeps (filters, secrets, duplicates). */
  changedFiles: number;
  scoredFiles: number;
  tokens: number;
  /** Mean next-token loss (nats) of base + adapter on the changed files now; null when nothing was scored. */
  loss: number | null;
  /** The base model's alone on the same tokens. */
  baseLoss: number | null;
  /** The adapter's held-out loss at training time, and the base's on the same split. */
  trainingLoss: number | null;
  trainingBaseLoss: number | null;
  /** (loss − trainingLoss) / trainingLoss. */
  rawIncrease: number | null;
  /** The rise against the base (see the top of this file); the raw rise when the base's loss then is unknown. */
  lossIncrease: number | null;
  drifted: boolean;
  thresholds: DriftThresholds;
  /** One line a person reads: "12 commits behind, +9% loss". */
  message: string;
  /** Why drift could not be measured (an unknown training commit …); drifted is false then. */
  problem?: string;
}

/** HEAD, commits reachable from HEAD but not from `since`, and the paths added or modified since it. */
export async function changesSince(
  root: string,
  since: string,
): Promise<{ head: string; commitsBehind: number; paths: string[] }> {
  const head = (await runGit(root, ['rev-parse', '--verify', '--quiet', 'HEAD^{commit}'])).trim();
  const paths = await pathsChangedBetween(root, since, head);
  if (paths === null) throw new Error(`the training commit ${since.slice(0, 12)} is not in this repository`);
  if (head === since) return { head, commitsBehind: 0, paths: [] };
  const count = Number((await runGit(root, ['rev-list', '--count', `${since}..${head}`])).trim());
  return { head, commitsBehind: count, paths };
}

/**
 * The text of `paths` at HEAD that mining keeps, at most about `maxTokens` tokens: every file
 * when they fit, else a share of each (at least MIN_TOKENS_PER_FILE) from files spread over the list.
 */
export async function driftSample(
  root: string,
  paths: readonly string[],
  tokenizer: Tokenizer,
  options: { maxTokens?: number; signal?: AbortSignal } = {},
): Promise<{ kept: number; texts: string[] }> {
  const maxTokens = options.maxTokens ?? DRIFT_MAX_TOKENS;
  if (paths.length === 0) return { kept: 0, texts: [] };
  const wanted = new Set(paths);
  const files: string[] = [];
  await mineRepository(
    root,
    // The held-out split and churn are not needed: a short history walk is enough.
    { pathFilter: (p) => wanted.has(p), maxCommits: 2, signal: options.signal },
    (file) => void files.push(file.text),
  );
  const count = Math.min(files.length, Math.max(1, Math.floor(maxTokens / MIN_TOKENS_PER_FILE)));
  const perFile = Math.max(MIN_TOKENS_PER_FILE, Math.floor(maxTokens / Math.max(1, count)));
  const texts: string[] = [];
  let left = maxTokens;
  for (let k = 0; k < count && left > 0; k++) {
    const text = files[Math.floor((k * files.length) / count)];
    texts.push(prefixOfTokens(text, tokenizer, Math.min(perFile, left)));
    left -= Math.min(perFile, tokenizer.encode(texts[texts.length - 1], { specialsAsText: true }).length);
  }
  return { kept: files.length, texts: texts.filter((t) => t.length > 0) };
}

/** The longest prefix of `text`, cut at a line end where it can be, of at most `limit` tokens. */
function prefixOfTokens(text: string, tokenizer: Tokenizer, limit: number): string {
  const ids = tokenizer.encode(text, { specialsAsText: true });
  if (ids.length <= limit) return text;
  const cut = tokenizer.decode(ids.slice(0, limit));
  const newline = cut.lastIndexOf('\n');
  return newline > 0 ? cut.slice(0, newline + 1) : cut;
}

/** "12 commits behind, +9% loss"; "up to date" when the adapter is at HEAD. */
export function driftMessage(report: Pick<DriftReport, 'commitsBehind' | 'lossIncrease' | 'problem'>): string {
  if (report.problem) return `drift unknown: ${report.problem}`;
  if (report.commitsBehind === 0) return 'trained at HEAD';
  const parts = [`${report.commitsBehind} commit${report.commitsBehind === 1 ? '' : 's'} behind`];
  if (report.lossIncrease !== null) {
    const pct = Math.round(report.lossIncrease * 100);
    parts.push(`${pct >= 0 ? '+' : ''}${pct}% loss`);
  }
  return parts.join(', ');
}

/** Whether a report crosses the thresholds: more than N commits behind, or the loss rose past the share. */
export function crossesThresholds(
  report: Pick<DriftReport, 'commitsBehind' | 'lossIncrease'>,
  thresholds: DriftThresholds,
): boolean {
  if (report.commitsBehind !== null && report.commitsBehind > thresholds.commitsBehind) return true;
  return report.lossIncrease !== null && report.lossIncrease >= thresholds.lossIncrease;
}

/**
 * `text` in pieces of at most `maxTokens` tokens, cut at line ends: scored one by one, each has
 * the context a training row has, as the held-out loss it is compared with had.
 */
export function windowsOf(text: string, tokenizer: Tokenizer, maxTokens: number): string[] {
  const pieces: string[] = [];
  let piece = '';
  let tokens = 0;
  for (const line of text.split(/(?<=\n)/)) {
    const n = tokenizer.encode(line, { specialsAsText: true }).length;
    if (tokens > 0 && tokens + n > maxTokens) {
      pieces.push(piece);
      piece = '';
      tokens = 0;
    }
    piece += line;
    tokens += n;
  }
  if (piece.length > 0) pieces.push(piece);
  return pieces;
}

/** Measures an adapter's drift in the repository at `root` (see the top of this file). */
export async function measureDrift(input: {
  root: string;
  manifest: Pick<AdapterManifest, 'id' | 'repo' | 'metrics' | 'training'>;
  /** Null: count commits only (a full fine-tune that serves cannot be scored beside the base). */
  scorer: TextScorer | null;
  thresholds?: Partial<DriftThresholds>;
  maxTokens?: number;
  signal?: AbortSignal;
}): Promise<DriftReport> {
  const thresholds = { ...DEFAULT_DRIFT_THRESHOLDS, ...input.thresholds };
  const { manifest } = input;
  const trainingLoss = manifest.metrics.adapter?.loss ?? null;
  const report: DriftReport = {
    adapterId: manifest.id,
    trainedAt: manifest.repo.head,
    head: null,
    commitsBehind: null,
    changedFiles: 0,
    scoredFiles: 0,
    tokens: 0,
    loss: null,
    baseLoss: null,
    trainingLoss,
    trainingBaseLoss: manifest.metrics.base?.loss ?? null,
    rawIncrease: null,
    lossIncrease: null,
    drifted: false,
    thresholds,
    message: '',
  };
  const finish = (): DriftReport => {
    report.drifted = report.problem === undefined && crossesThresholds(report, thresholds);
    report.message = driftMessage(report);
    return report;
  };
  if (!manifest.repo.head) {
    report.problem = 'the adapter records no training commit';
    return finish();
  }
  let changes: Awaited<ReturnType<typeof changesSince>>;
  try {
    changes = await changesSince(input.root, manifest.repo.head);
  } catch (error) {
    report.problem = error instanceof Error ? error.message : String(error);
    return finish();
  }
  report.head = changes.head;
  report.commitsBehind = changes.commitsBehind;
  const scorer = input.scorer;
  if (!scorer) return finish();
  const sample = await driftSample(input.root, changes.paths, scorer.tokenizer, {
    maxTokens: input.maxTokens,
    signal: input.signal,
  });
  report.changedFiles = sample.kept;
  const seqLen = Number(input.manifest.training.hyperparameters.seqLen);
  const window = Number.isInteger(seqLen) && seqLen > 1 ? seqLen : 256;
  let nll = 0;
  let baseNll = 0;
  let tokens = 0;
  for (const text of sample.texts) {
    for (const piece of windowsOf(text, scorer.tokenizer, window)) {
      input.signal?.throwIfAborted();
      const adapted = await scorer.tokenSurprisal(piece);
      const base = await scorer.tokenSurprisal(piece, { base: true });
      adapted.bits.forEach((bits, i) => {
        if (!(Number.isFinite(bits) && Number.isFinite(base.bits[i]))) return;
        nll += bits * Math.LN2;
        baseNll += base.bits[i] * Math.LN2;
        tokens++;
      });
    }
    report.scoredFiles++;
  }
  report.tokens = tokens;
  if (tokens === 0) return finish();
  const loss = nll / tokens;
  const baseLoss = baseNll / tokens;
  report.loss = round(loss, 5);
  report.baseLoss = round(baseLoss, 5);
  if (trainingLoss !== null && trainingLoss > 0) {
    report.rawIncrease = round(loss / trainingLoss - 1, 5);
    const trainingBase = report.trainingBaseLoss;
    report.lossIncrease =
      trainingBase !== null && trainingBase > 0 && baseLoss > 0
        ? round(loss / baseLoss / (trainingLoss / trainingBase) - 1, 5)
        : report.rawIncrease;
  }
  return finish();
}
