// The repository's own distribution of line surprisal under one adapter: review flags a line when
// it is in the repository's top N % (default 2). A sample of the repository's lines is scored
// once per adapter and cached in the registry folder (review/<adapter id>.json); any percentile is
// then read from the sorted scores.
//
// The sample prefers the temporal held-out files (the newest commits, which the adapter never
// trained on), like the changed lines review looks at; training files fill it up to the target.
// Lines the adapter trained on score lower than new code, so a sample of only those would set the
// threshold too low and flag too much.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { writeTextAtomically } from '../../adapters/folder';
import { mineRepository } from '../../data/mining/mine';
import { AGGREGATES, percentileThreshold, sortedFinite, type Aggregate } from './lines';
import type { ReviewScorer } from './scorer';

export const DISTRIBUTION_VERSION = 1;
export const DEFAULT_SAMPLE_LINES = 3000;
/** Lines of one file scored for the sample at most (long files would crowd out the others). */
const MAX_LINES_PER_FILE = 400;

export interface LineDistribution {
  version: typeof DISTRIBUTION_VERSION;
  /** Adapter id, or null for the base model alone. */
  adapterId: string | null;
  baseSha256: string;
  head: string | null;
  files: number;
  lines: number;
  /** Sampled lines from held-out files (never trained on) and from training files. */
  heldOutLines: number;
  trainingLines: number;
  /** Sorted ascending, bits per token. */
  scores: Record<Aggregate, number[]>;
}

export function distributionFile(registryDir: string, adapterId: string | null, baseSha256: string): string {
  const key = adapterId ?? `base-${baseSha256.slice(0, 16)}`;
  return path.join(registryDir, 'review', `${key}.json`);
}

export interface DistributionOptions {
  repoRoot: string;
  registryDir: string;
  scorer: ReviewScorer;
  adapterId: string | null;
  baseSha256: string;
  sampleLines?: number;
  /** Recompute even when a cached one exists. */
  refresh?: boolean;
  onLog?: (message: string) => void;
}

/** The cached distribution for this adapter and base, or a freshly sampled and cached one. */
export async function repositoryDistribution(options: DistributionOptions): Promise<LineDistribution> {
  const file = distributionFile(options.registryDir, options.adapterId, options.baseSha256);
  if (!options.refresh) {
    const cached = readDistribution(file);
    if (cached && cached.baseSha256 === options.baseSha256 && cached.adapterId === options.adapterId) return cached;
  }
  const distribution = await sampleDistribution(options);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  writeTextAtomically(file, `${JSON.stringify(distribution)}\n`);
  return distribution;
}

function readDistribution(file: string): LineDistribution | null {
  try {
    const json = JSON.parse(fs.readFileSync(file, 'utf8')) as LineDistribution;
    if (
      json.version !== DISTRIBUTION_VERSION ||
      !json.scores ||
      AGGREGATES.some((a) => !Array.isArray(json.scores[a]) || json.scores[a].length === 0)
    )
      return null;
    return json;
  } catch {
    return null; // missing or unreadable: sample again
  }
}

async function sampleDistribution(options: DistributionOptions): Promise<LineDistribution> {
  const target = options.sampleLines ?? DEFAULT_SAMPLE_LINES;
  const files: { path: string; text: string; heldOut: boolean }[] = [];
  const summary = await mineRepository(options.repoRoot, { onWarning: options.onLog }, (file) => {
    files.push({ path: file.path, text: file.text, heldOut: file.split === 'heldout' });
  });
  if (files.length === 0)
    throw new Error(`${options.repoRoot}: no minable source files to learn the repository's line distribution from`);
  // Held-out files first, then the others in a fixed pseudo-random order (by path hash).
  const order = (p: string) => createHash('sha256').update(p).digest('hex');
  files.sort((a, b) => (a.heldOut === b.heldOut ? (order(a.path) < order(b.path) ? -1 : 1) : a.heldOut ? -1 : 1));
  const scores: Record<Aggregate, number[]> = { mean: [], max: [] };
  let used = 0;
  let heldOutLines = 0;
  let trainingLines = 0;
  for (const file of files) {
    if (scores.mean.length >= target) break;
    const text = file.text.split('\n').slice(0, MAX_LINES_PER_FILE).join('\n');
    const surprisal = await options.scorer.fileSurprisal(text);
    let counted = 0;
    for (let line = 0; line < surprisal.lines.length; line++) {
      if (!Number.isFinite(surprisal.adapter.mean[line])) continue;
      scores.mean.push(surprisal.adapter.mean[line]);
      scores.max.push(surprisal.adapter.max[line]);
      counted++;
    }
    if (file.heldOut) heldOutLines += counted;
    else trainingLines += counted;
    used++;
  }
  options.onLog?.(
    `review: sampled ${scores.mean.length} lines from ${used} files (${heldOutLines} held out) for the repository's surprisal distribution`,
  );
  return {
    version: DISTRIBUTION_VERSION,
    adapterId: options.adapterId,
    baseSha256: options.baseSha256,
    head: summary.repo.head,
    files: used,
    lines: scores.mean.length,
    heldOutLines,
    trainingLines,
    scores: { mean: sortedFinite(scores.mean), max: sortedFinite(scores.max) },
  };
}

/** The flagging threshold (bits per token) for the top `topPercent` % of the repository's lines. */
export function distributionThreshold(
  distribution: LineDistribution,
  aggregate: Aggregate,
  topPercent: number,
): number {
  return percentileThreshold(distribution.scores[aggregate], topPercent);
}
