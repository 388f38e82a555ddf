import * as fs from 'node:fs';
import * as path from 'node:path';
import { RepositoryMemory } from '../../data/memory/memory';
import { findRepoRoot } from '../../adapters/registry';
import { mineRepository, type MinedFile } from '../../data/mining/mine';
import { resolveBaseDir } from '../../model/base-model';
import {
  copyFromFile,
  replayDocument,
  replayPoints,
  replayThroughServer,
  scoreVariant,
  type Answer,
  type ServedVariant,
  type VariantResult,
} from '../../training/eval/replay';

// `idiom bench quality`: held-out lines replayed through the real server (training/eval/replay.ts)
// for the base, the adapter and any extra variants, beside two model-free references:
// copy-from-file (the longest earlier occurrence of the text before the cursor in the open file,
// and what followed it to the line's end) and copy-from-repository (the same over the mined
// training files, by word units).

/**
 * The adapter served with the serving levers taken away one at a time, from all off (the FIM
 * prompt, every suggestion shown, no recall: how it served before them) to all on but one.
 */
export function leverVariants(adapter: string | undefined, mode: string | undefined): ServedVariant[] {
  const variant = (name: string, completion: Record<string, unknown>): ServedVariant => ({
    name,
    adapter,
    settings: { ...(mode ? { mode } : {}), completion },
  });
  return [
    variant('adapter, no levers (fim, no gate, no recall)', { minConfidence: 0, recall: false, prompt: 'fim' }),
    variant('adapter + prefix prompt', { minConfidence: 0, recall: false, prompt: 'prefix' }),
    variant('adapter + prefix prompt + gate', { minConfidence: 0.2, recall: false, prompt: 'prefix' }),
    variant('adapter + prefix prompt + recall', { minConfidence: 0, recall: true, prompt: 'prefix' }),
    variant('adapter, all levers but the recall check', {
      minConfidence: 0.2,
      recall: true,
      prompt: 'prefix',
      recallMinLogprob: null,
      recallMinTokenLogprob: null,
    }),
  ];
}

export interface BenchQualityOptions {
  repo: string;
  base?: string;
  /** An adapter id to serve as "adapter" instead of the active one. */
  adapter?: string;
  lines?: number;
  seed?: number;
  mode?: 'complete' | 'compliance';
  /** Extra served variants (levers measured against the default). */
  extraVariants?: ServedVariant[];
  /** Skip the served base variant (only the adapter and the references). */
  skipBase?: boolean;
  log?: (line: string) => void;
}

export interface BenchQualityResult {
  repo: string;
  seed: number;
  lines: number;
  points: number;
  candidates: number;
  heldOutFiles: number;
  variants: VariantResult[];
  measured: string;
}

export async function benchQuality(options: BenchQualityOptions): Promise<BenchQualityResult> {
  const log = options.log ?? (() => {});
  const start = path.resolve(options.repo);
  if (!fs.existsSync(start) || !fs.statSync(start).isDirectory())
    throw new Error(`${start}: no such repository folder`);
  const repo = findRepoRoot(start);
  const base = resolveBaseDir(options.base);
  const seed = options.seed ?? 1;
  const mined: MinedFile[] = [];
  const summary = await mineRepository(repo, { onWarning: log }, (file) => void mined.push(file));
  const set = replayPoints(mined, options.lines ?? 150, seed);
  if (set.points.length === 0)
    throw new Error(
      `${repo}: no held-out lines to replay (${summary.split.note ?? 'the held-out commits add no code line'})`,
    );
  log(
    `replaying ${set.lines} held-out lines (${set.points.length} points) of ${set.files.length} files from ${summary.split.heldOutCommits.length} held-out commits`,
  );

  const variants: VariantResult[] = [];
  const settings = options.mode ? { mode: options.mode } : {};
  const served: ServedVariant[] = [
    ...(options.skipBase ? [] : [{ name: 'base', adapter: 'none', settings }]),
    { name: 'adapter', adapter: options.adapter, settings },
    ...(options.extraVariants ?? []),
  ];
  for (const variant of served) {
    const { answers, adapter } = await replayThroughServer(set, repo, base, variant, log);
    if (variant.name === 'adapter' && adapter === null)
      log('adapter: no adapter is active for this repository; the base serves this variant');
    variants.push({ ...scoreVariant(variant.name, set.points, answers), adapter });
  }

  const byPath = new Map(set.files.map((file) => [file.path, file]));
  const fromFile = set.points.map((point): Answer => {
    const started = performance.now();
    const text = copyFromFile(replayDocument(byPath.get(point.path)!.text, point).prefix);
    return { text: text === '' ? null : text, ms: performance.now() - started };
  });
  variants.push(scoreVariant('copy-from-file', set.points, fromFile));
  const memory = new RepositoryMemory(set.trainingFiles);
  const fromRepository = set.points.map((point): Answer => {
    const started = performance.now();
    const match = memory.lookup(replayDocument(byPath.get(point.path)!.text, point).prefix);
    return { text: match?.text ?? null, ms: performance.now() - started };
  });
  variants.push(scoreVariant('copy-from-repository', set.points, fromRepository));

  return {
    repo,
    seed,
    lines: set.lines,
    points: set.points.length,
    candidates: set.candidates,
    heldOutFiles: set.files.length,
    variants,
    measured:
      'held-out lines (temporal split) replayed at the start of their code and after their first token, through `idiom lsp --stdio` (one inline completion per point, the file at HEAD with the rest of the line removed); exactMatch/shown/precision/acceptedCharShare over all points; latency client-side',
  };
}

/** The result as a table for a terminal. */
export function qualityTable(result: BenchQualityResult): string {
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  const rows = [
    ['variant', 'shown', 'exact', 'accepted chars', 'precision', 'edit sim', 'p50 ms', 'p95 ms'],
    ...result.variants.map((v) => [
      v.name,
      pct(v.shown),
      pct(v.exactMatch),
      pct(v.acceptedCharShare),
      pct(v.precision),
      v.editSimilarity.toFixed(3),
      v.p50Ms?.toFixed(1) ?? '-',
      v.p95Ms?.toFixed(1) ?? '-',
    ]),
  ];
  const widths = rows[0].map((_, c) => Math.max(...rows.map((row) => row[c].length)));
  const head = `${result.repo}: ${result.lines} held-out lines, ${result.points} points, seed ${result.seed}`;
  return [
    head,
    ...rows.map((row) =>
      row.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('  '),
    ),
  ].join('\n');
}
