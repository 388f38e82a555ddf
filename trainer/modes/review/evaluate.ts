// Does review point at bugs? On real fix commits (subject says fix/bug) of a repository: score the
// version before each fix, and ask whether the lines the fix removed or changed are ranked more
// surprising than the other lines of the same files: the ROC AUC (0.5 = chance). Ray et al. 2016
// ("On the naturalness of buggy code") ran this experiment with n-gram models.
//
// Leakage: an adapter trained on a snapshot that already contains a fix has seen the fixed
// code, not the buggy one, and most of the file's other lines: only fix commits after the
// adapter's training commit (its manifest's repo.head) are used, unless includeTrained.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { readManifest } from '../../adapters/folder';
import { runGit } from '../../data/mining/git-command';
import { languageForPath } from '../../data/mining/languages';
import { baseWeightsSha256, resolveBaseDir } from '../../model/base-model';
import { findRepoRoot, type RegistryOptions } from '../../adapters/registry';
import { EngineWorker } from '../../compute/runtime/client';
import { Tokenizer } from '../../model/tokenizer/tokenizer';
import { AGGREGATES, removedLinesFromUnifiedDiff, rocAuc, type Aggregate } from './lines';
import { resolveReviewAdapter } from './review';
import { ReviewScorer } from './scorer';
import { round } from '../../util/round';

export const FIX_SUBJECT = /\b(fix(e[sd]|es|ing)?|bug(s|fix)?|hotfix)\b/i;

export interface FixEvaluationOptions {
  repo: string;
  base?: string;
  adapter?: string;
  registry?: RegistryOptions;
  /** Newest fix commits evaluated at most. Default 200. */
  maxCommits?: number;
  /** Files with more lines are skipped. Default 2000. */
  maxFileLines?: number;
  /** Use fix commits the adapter's training snapshot contains too (leaks). */
  includeTrained?: boolean;
  /**
   * Only fix commits not reachable from this commit: the snapshot the adapter was trained on,
   * when its manifest's head is not in this repository (e.g. trained on a flattened copy).
   */
  fixesAfter?: string;
  subject?: RegExp;
  threads?: number;
  onLog?: (message: string) => void;
}

type Scores = Record<Aggregate, number>;
type ModelAuc = Record<Aggregate, number>;

export interface FixEvaluation {
  repo: string;
  adapter: { id: string | null; path: string; trainedAt: string | null } | null;
  base: { dir: string; sha256: string };
  commits: { matched: number; afterTraining: number; evaluated: number };
  files: number;
  lines: { removedByFix: number; other: number };
  /** Pooled ROC AUC of line surprisal: removed-by-fix lines vs the other lines of the same files. */
  auc: { adapter: ModelAuc; base: ModelAuc; gap: ModelAuc };
  /** Mean of per-file AUCs (files with both kinds of lines): the within-file ranking review makes. */
  perFileAuc: { adapter: ModelAuc; base: ModelAuc; files: number };
  /** The aggregate with the higher within-file adapter AUC (the question review answers). */
  bestAggregate: Aggregate;
  seconds: number;
}

interface ScoredLine {
  file: number;
  removed: boolean;
  adapter: Scores;
  base: Scores;
}

export async function evaluateFixCommits(options: FixEvaluationOptions): Promise<FixEvaluation> {
  const started = performance.now();
  const start = path.resolve(options.repo);
  if (!fs.existsSync(start)) throw new Error(`${start}: no such repository folder`);
  const repoRoot = findRepoRoot(start);
  const git = (args: string[]) => runGit(repoRoot, args);
  if ((await git(['rev-parse', '--is-inside-work-tree']).catch(() => '')).trim() !== 'true')
    throw new Error(`${repoRoot}: not a git repository`);
  const log = options.onLog ?? (() => {});
  const baseDir = resolveBaseDir(options.base);
  const baseSha256 = await baseWeightsSha256(baseDir);
  const resolved = await resolveReviewAdapter(repoRoot, options.adapter, options.registry, {
    dir: baseDir,
    sha256: baseSha256,
  });
  const trainedAt = options.fixesAfter ?? (resolved ? (readManifest(resolved.dir)?.repo.head ?? null) : null);

  const subject = options.subject ?? FIX_SUBJECT;
  const raw = await git(['log', '--no-merges', '--format=%H%x09%P%x09%s', 'HEAD']);
  const matched = raw
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [id, parents, ...rest] = line.split('\t');
      return { id, parent: parents.split(' ')[0] ?? '', subject: rest.join('\t') };
    })
    .filter((c) => c.parent !== '' && subject.test(c.subject));
  let candidates = matched;
  if (trainedAt && !options.includeTrained) {
    let trained: Set<string>;
    try {
      trained = new Set((await git(['rev-list', trainedAt])).split('\n').filter(Boolean));
    } catch {
      throw new Error(
        `commit ${trainedAt} (the adapter's training snapshot) is not in this repository; pass --fixes-after <commit> (the snapshot it was trained on) or --include-trained`,
      );
    }
    candidates = matched.filter((c) => !trained.has(c.id));
  } else if (resolved && !trainedAt && !options.includeTrained) {
    log(
      'review eval: the adapter records no training commit; every fix commit is used (some may have been trained on)',
    );
  }
  if (candidates.length === 0) {
    throw new Error(
      `${repoRoot}: no fix commits to evaluate (${matched.length} match ${subject}${trainedAt ? `, none after the adapter's training commit ${trainedAt.slice(0, 12)}; train on an older snapshot or pass --include-trained` : ''})`,
    );
  }
  const commits = candidates.slice(0, options.maxCommits ?? 200);
  const maxFileLines = options.maxFileLines ?? 2000;

  const tokenizer = await Tokenizer.load(baseDir);
  const worker = EngineWorker.start();
  const scored: ScoredLine[] = [];
  let files = 0;
  let evaluated = 0;
  try {
    const scorer = await ReviewScorer.load(worker, baseDir, tokenizer, { threads: options.threads });
    if (resolved) await scorer.setAdapter(resolved.adapter);
    for (const [index, commit] of commits.entries()) {
      const removedByFile = removedLinesFromUnifiedDiff(
        await git([
          'diff',
          '-U0',
          '--no-color',
          '--no-ext-diff',
          '--no-textconv',
          '--diff-filter=M',
          commit.parent,
          commit.id,
        ]),
      );
      let used = false;
      for (const [file, removed] of removedByFile) {
        if (removed.length === 0 || !languageForPath(file)) continue;
        const before = await showFile(git, commit.parent, file);
        if (before === null) continue;
        const lineCount = before.split('\n').length;
        if (lineCount > maxFileLines) continue;
        const surprisal = await scorer.fileSurprisal(before, { base: true });
        const removedSet = new Set(removed);
        let positives = 0;
        const fileLines: ScoredLine[] = [];
        for (let i = 0; i < surprisal.lines.length; i++) {
          if (!Number.isFinite(surprisal.adapter.mean[i])) continue;
          const line: ScoredLine = {
            file: files,
            removed: removedSet.has(i + 1),
            adapter: { mean: surprisal.adapter.mean[i], max: surprisal.adapter.max[i] },
            base: { mean: surprisal.base!.mean[i], max: surprisal.base!.max[i] },
          };
          if (line.removed) positives++;
          fileLines.push(line);
        }
        if (positives === 0 || positives === fileLines.length) continue;
        scored.push(...fileLines);
        files++;
        used = true;
      }
      if (used) evaluated++;
      if ((index + 1) % 10 === 0)
        log(`review eval: ${index + 1}/${commits.length} fix commits, ${files} files, ${scored.length} lines`);
    }
    await scorer.dispose();
  } finally {
    await worker.terminate();
  }
  if (scored.length === 0)
    throw new Error(`${repoRoot}: the fix commits changed no lines of code files that could be scored`);

  const pooled = (score: (line: ScoredLine) => number): number =>
    rocAuc(scored.filter((l) => l.removed).map(score), scored.filter((l) => !l.removed).map(score));
  const perFile = (score: (line: ScoredLine) => number): { mean: number; files: number } => {
    const byFile = new Map<number, ScoredLine[]>();
    for (const line of scored) byFile.set(line.file, [...(byFile.get(line.file) ?? []), line]);
    const aucs = [...byFile.values()]
      .map((lines) => rocAuc(lines.filter((l) => l.removed).map(score), lines.filter((l) => !l.removed).map(score)))
      .filter(Number.isFinite);
    return { mean: aucs.reduce((a, b) => a + b, 0) / aucs.length, files: aucs.length };
  };
  const byAggregate = (f: (a: Aggregate) => number): ModelAuc =>
    Object.fromEntries(AGGREGATES.map((a) => [a, round(f(a), 4)])) as ModelAuc;
  const auc = {
    adapter: byAggregate((a) => pooled((l) => l.adapter[a])),
    base: byAggregate((a) => pooled((l) => l.base[a])),
    gap: byAggregate((a) => pooled((l) => l.adapter[a] - l.base[a])),
  };
  const perFileAdapter = byAggregate((a) => perFile((l) => l.adapter[a]).mean);
  return {
    repo: repoRoot,
    adapter: resolved ? { id: resolved.id, path: resolved.dir, trainedAt } : null,
    base: { dir: baseDir, sha256: baseSha256 },
    commits: { matched: matched.length, afterTraining: candidates.length, evaluated },
    files,
    lines: { removedByFix: scored.filter((l) => l.removed).length, other: scored.filter((l) => !l.removed).length },
    auc,
    perFileAuc: {
      adapter: perFileAdapter,
      base: byAggregate((a) => perFile((l) => l.base[a]).mean),
      files: perFile((l) => l.adapter.mean).files,
    },
    bestAggregate: perFileAdapter.max > perFileAdapter.mean ? 'max' : 'mean',
    seconds: (performance.now() - started) / 1000,
  };
}

async function showFile(
  git: (args: string[]) => Promise<string>,
  commit: string,
  file: string,
): Promise<string | null> {
  try {
    const text = await git(['cat-file', 'blob', `${commit}:${file}`]);
    return text.includes('\0') ? null : text.replace(/\r\n?/g, '\n');
  } catch {
    return null;
  }
}

export function formatFixEvaluation(result: FixEvaluation): string {
  const row = (name: string, auc: ModelAuc) =>
    `  ${name.padEnd(22)} mean ${auc.mean.toFixed(3)}   max ${auc.max.toFixed(3)}`;
  return [
    `${result.repo}: ${result.commits.evaluated} fix commits (${result.commits.matched} matched, ${result.commits.afterTraining} after the adapter's training commit), ${result.files} files, ${result.lines.removedByFix} lines removed by fixes vs ${result.lines.other} other lines`,
    'ROC AUC (0.5 = chance) of line surprisal, pooled:',
    row('adapter', result.auc.adapter),
    row('base', result.auc.base),
    row('adapter - base', result.auc.gap),
    `within files (mean over ${result.perFileAuc.files}):`,
    row('adapter', result.perFileAuc.adapter),
    row('base', result.perFileAuc.base),
    `best aggregate for the adapter: ${result.bestAggregate}`,
    '',
  ].join('\n');
}
