// `idiom review <file>`: per-line surprisal under the repository adapter and the base model,
// flagged against the repository's own percentile. reviewLines is the pure step the language
// server also uses (with its own scorer and cached distribution); reviewFile runs everything for
// the CLI: resolve base + adapter, load them in a worker, score, threshold.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { adapterKind, readManifest } from '../../adapters/folder';
import { isAdapterId } from '../../adapters/manifest';
import { loadAdapter, loraAdapterOf } from '../../adapters/peft';
import type { LoraAdapter } from '../../compute/engine/weights';
import { loadModelConfig } from '../../model/config';
import { baseWeightsSha256, resolveBaseDir } from '../../model/base-model';
import { Registry, findRepoRoot, registryLocation, type RegistryOptions } from '../../adapters/registry';
import { EngineWorker } from '../../compute/runtime/client';
import { Tokenizer } from '../../model/tokenizer/tokenizer';
import { changedLineNumbers, headVersion } from './changes';
import { AGGREGATES, type Aggregate, type LineScores } from './lines';
import { ReviewScorer } from './scorer';
import { distributionThreshold, repositoryDistribution, type LineDistribution } from './threshold';
import { round } from '../../util/round';

/** Top share of the repository's lines that counts as unusual. */
export const DEFAULT_PERCENTILE = 2;
/**
 * Line score = the most surprising token of the line (bits). Chosen over the mean by the AUC on
 * real fix commits (idiom review --eval-fixes on expressjs/express, adapter trained on the
 * 2017-02-01 snapshot, the 46 later fix commits that changed code: within-file AUC max 0.652 vs
 * mean 0.632; pooled 0.640 vs 0.573). See trainer/modes/review/README.md.
 */
export const DEFAULT_AGGREGATE: Aggregate = 'max';

export interface ReviewLine {
  /** 1-based. */
  line: number;
  text: string;
  /** Bits per token under the repository adapter (mean or max over the line's tokens). */
  surprisal: number;
  /** The same under the base model alone; null when not computed. */
  baseSurprisal: number | null;
  flagged: boolean;
}

/**
 * The reviewed lines: those in `selected` (1-based; null = all) that have content, with their
 * scores and whether they exceed `threshold`.
 */
export function reviewLines(
  lines: readonly string[],
  adapter: LineScores,
  base: LineScores | null,
  selected: ReadonlySet<number> | null,
  threshold: number,
  aggregate: Aggregate,
): ReviewLine[] {
  const result: ReviewLine[] = [];
  for (let i = 0; i < lines.length; i++) {
    const surprisal = adapter[aggregate][i];
    if (!Number.isFinite(surprisal) || (selected && !selected.has(i + 1))) continue;
    const baseValue = base ? base[aggregate][i] : NaN;
    result.push({
      line: i + 1,
      text: lines[i],
      surprisal: round(surprisal, 3),
      baseSurprisal: Number.isFinite(baseValue) ? round(baseValue, 3) : null,
      flagged: surprisal > threshold,
    });
  }
  return result;
}

/** The diagnostic text for a flagged line (what the editor shows). */
export function unusualLineMessage(line: ReviewLine, threshold: number, topPercent: number): string {
  const base = line.baseSurprisal === null ? '' : `, base model ${line.baseSurprisal.toFixed(1)}`;
  return `Unusual for this codebase: ${line.surprisal.toFixed(1)} bits/token under the repository adapter (top ${topPercent}% starts at ${threshold.toFixed(1)}${base})`;
}

export interface ResolvedAdapter {
  id: string | null;
  dir: string;
  /** Where it came from: a folder or id given, or the registry's active one for review / complete. */
  source: 'given' | 'review' | 'complete';
  adapter: LoraAdapter;
}

/**
 * The repository adapter review scores with: the one given (id or folder), else the one active
 * for review, else the one active for completion; null when there is none (base model alone).
 */
export async function resolveReviewAdapter(
  repoRoot: string,
  given: string | undefined,
  registryOptions: RegistryOptions | undefined,
  base: { dir: string; sha256: string },
): Promise<ResolvedAdapter | null> {
  let dir: string | null = null;
  let source: ResolvedAdapter['source'] = 'given';
  if (given) {
    const asPath = path.resolve(given);
    if (fs.existsSync(asPath) && fs.statSync(asPath).isDirectory()) dir = asPath;
    else if (isAdapterId(given)) {
      const registry = await Registry.open(repoRoot, { ...registryOptions, readOnly: true });
      if (!(await registry.has(given))) throw new Error(`no adapter ${given} in ${registry.adaptersDir}`);
      dir = registry.adapterPath(given);
    } else throw new Error(`${given}: neither an adapter folder nor an adapter id`);
  } else if (fs.existsSync(registryLocation(repoRoot, registryOptions))) {
    const registry = await Registry.open(repoRoot, { ...registryOptions, readOnly: true });
    dir = await registry.activePath('review');
    source = 'review';
    if (dir === null) {
      dir = await registry.activePath('complete');
      source = 'complete';
    }
  }
  if (dir === null) return null;
  if (adapterKind(dir) !== 'lora')
    throw new Error(`${dir}: review scores with LoRA adapters; this is a full fine-tune`);
  const loaded = await loadAdapter(dir, loadModelConfig(base.dir), { baseSha256: base.sha256 });
  return { id: readManifest(dir)?.id ?? null, dir, source, adapter: loraAdapterOf(loaded) };
}

export interface ReviewFileOptions {
  file: string;
  /** Review every line, not only those changed since HEAD. */
  all?: boolean;
  base?: string;
  adapter?: string;
  registry?: RegistryOptions;
  /** Top share of the repository's lines flagged (0 < p < 100). Default 2. */
  percentile?: number;
  aggregate?: Aggregate;
  /** Resample the repository distribution even if cached. */
  refresh?: boolean;
  sampleLines?: number;
  threads?: number;
  onLog?: (message: string) => void;
}

export interface ReviewFileResult {
  file: string;
  adapter: { id: string | null; path: string; source: ResolvedAdapter['source'] } | null;
  base: { dir: string; sha256: string };
  aggregate: Aggregate;
  percentile: number;
  threshold: number;
  /** Only changed lines were reviewed (the default) or every line (--all). */
  scope: 'changed' | 'all';
  distribution: Pick<LineDistribution, 'lines' | 'files' | 'heldOutLines' | 'trainingLines'>;
  lines: ReviewLine[];
  flagged: number;
  tokens: number;
  seconds: number;
}

export async function reviewFile(options: ReviewFileOptions): Promise<ReviewFileResult> {
  const started = performance.now();
  const file = path.resolve(options.file);
  if (!fs.existsSync(file)) throw new Error(`${file}: no such file`);
  if (fs.statSync(file).isDirectory())
    throw new Error(`${file} is a folder: review takes one file (idiom review path/to/file)`);
  if (!fs.statSync(file).isFile()) throw new Error(`${file}: not a regular file`);
  const aggregate = options.aggregate ?? DEFAULT_AGGREGATE;
  if (!AGGREGATES.includes(aggregate))
    throw new Error(`unknown aggregate "${aggregate}" (expected ${AGGREGATES.join(' or ')})`);
  const percentile = options.percentile ?? DEFAULT_PERCENTILE;
  if (!(percentile > 0 && percentile < 100)) throw new Error(`--percentile must be in (0, 100), got ${percentile}`);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(fs.readFileSync(file));
  } catch {
    throw new Error(`${file}: not UTF-8 text`);
  }
  text = text.replace(/^\uFEFF/, '').replace(/\r\n?/g, '\n');

  const head = await headVersion(file);
  const repoRoot = findRepoRoot(head.root);
  const selected = options.all ? null : new Set(changedLineNumbers(head.text, text));
  const baseDir = resolveBaseDir(options.base);
  const baseSha256 = await baseWeightsSha256(baseDir);
  const resolved = await resolveReviewAdapter(repoRoot, options.adapter, options.registry, {
    dir: baseDir,
    sha256: baseSha256,
  });
  const tokenizer = await Tokenizer.load(baseDir);
  const worker = EngineWorker.start();
  try {
    const scorer = await ReviewScorer.load(worker, baseDir, tokenizer, { threads: options.threads });
    if (resolved) await scorer.setAdapter(resolved.adapter);
    const distribution = await repositoryDistribution({
      repoRoot,
      registryDir: registryLocation(repoRoot, options.registry),
      scorer,
      adapterId: resolved?.id ?? null,
      baseSha256,
      sampleLines: options.sampleLines,
      refresh: options.refresh,
      onLog: options.onLog,
    });
    const threshold = distributionThreshold(distribution, aggregate, percentile);
    const scored = await scorer.fileSurprisal(text, { base: true });
    const lines = reviewLines(scored.lines, scored.adapter, scored.base, selected, threshold, aggregate);
    await scorer.dispose();
    return {
      file,
      adapter: resolved ? { id: resolved.id, path: resolved.dir, source: resolved.source } : null,
      base: { dir: baseDir, sha256: baseSha256 },
      aggregate,
      percentile,
      threshold: round(threshold, 3),
      scope: options.all ? 'all' : 'changed',
      distribution: {
        lines: distribution.lines,
        files: distribution.files,
        heldOutLines: distribution.heldOutLines,
        trainingLines: distribution.trainingLines,
      },
      lines,
      flagged: lines.filter((l) => l.flagged).length,
      tokens: scored.tokens,
      seconds: (performance.now() - started) / 1000,
    };
  } finally {
    await worker.terminate();
  }
}
