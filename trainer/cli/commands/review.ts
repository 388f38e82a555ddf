import { type Command, Option } from 'commander';
import { AGGREGATES, type Aggregate } from '../../modes/review/lines';
import {
  DEFAULT_AGGREGATE,
  DEFAULT_PERCENTILE,
  reviewFile,
  unusualLineMessage,
  type ReviewFileResult,
} from '../../modes/review/review';
import { evaluateFixCommits, formatFixEvaluation } from '../../modes/review/evaluate';

// `idiom review <file> [--all] [--json]`: lines unusual for this codebase (surprisal under the
// repository adapter above the repository's top-N% line), by default only lines changed since
// HEAD. `idiom review --eval-fixes <repo>`: how well that ranks the lines real fix commits removed
// (ROC AUC). --json prints one object: lines[{line, surprisal, baseSurprisal, flagged}], ...

interface ReviewCommandOptions {
  all?: boolean;
  json?: boolean;
  base?: string;
  adapter?: string;
  registry?: string;
  percentile?: number;
  aggregate: string;
  refresh?: boolean;
  sampleLines?: number;
  threads?: number;
  evalFixes?: string;
  maxCommits?: number;
  maxFileLines?: number;
  includeTrained?: boolean;
  fixesAfter?: string;
}

function positiveNumber(name: string, integer: boolean) {
  return (value: string): number => {
    const n = Number(value);
    if (!(Number.isFinite(n) && n > 0 && (!integer || Number.isInteger(n))))
      throw new Error(`${name} must be a positive ${integer ? 'integer' : 'number'}, got "${value}"`);
    return n;
  };
}

export function registerReviewCommand(program: Command): void {
  program
    .command('review')
    .description('flag lines that are unusual for this codebase (changed since HEAD, or all with --all)')
    .argument('[file]', 'file to review')
    .option('--all', 'review every line, not only those changed since HEAD')
    .option('--json', 'print one JSON object on stdout')
    .option('--base <dir>', 'base model folder; default: the embedded model')
    .option('--adapter <id|dir>', 'adapter (default: the one active for review, else for complete)')
    .option('--registry <dir>', 'registry folder, absolute or relative to the repository (default .idiom)')
    .option(
      '--percentile <p>',
      `flag lines in the repository's top p % (default ${DEFAULT_PERCENTILE})`,
      positiveNumber('--percentile', false),
    )
    .addOption(
      new Option('--aggregate <how>', 'line score from its tokens').choices([...AGGREGATES]).default(DEFAULT_AGGREGATE),
    )
    .option('--refresh', "resample the repository's line distribution (cached per adapter)")
    .option(
      '--sample-lines <n>',
      'lines sampled for the repository distribution (default 3000)',
      positiveNumber('--sample-lines', true),
    )
    .option('--threads <n>', 'compute threads (default: every core)', positiveNumber('--threads', true))
    .option('--eval-fixes <repo>', 'evaluate instead: AUC of surprisal for the lines real fix commits removed')
    .option(
      '--max-commits <n>',
      'with --eval-fixes: fix commits evaluated at most (default 200)',
      positiveNumber('--max-commits', true),
    )
    .option(
      '--max-file-lines <n>',
      'with --eval-fixes: skip files longer than this (default 2000)',
      positiveNumber('--max-file-lines', true),
    )
    .option(
      '--fixes-after <commit>',
      "with --eval-fixes: only fix commits after this one (default: the adapter's training commit)",
    )
    .option(
      '--include-trained',
      "with --eval-fixes: also use fix commits the adapter's training snapshot already contains (leaks: the fixed code was trained on)",
    )
    .action(async (file: string | undefined, options: ReviewCommandOptions) => {
      const log = (message: string) => process.stderr.write(`${message}\n`);
      if (options.evalFixes) {
        const result = await evaluateFixCommits({
          repo: options.evalFixes,
          base: options.base,
          adapter: options.adapter,
          registry: options.registry ? { location: options.registry } : undefined,
          maxCommits: options.maxCommits,
          maxFileLines: options.maxFileLines,
          includeTrained: options.includeTrained,
          fixesAfter: options.fixesAfter,
          threads: options.threads,
          onLog: log,
        });
        process.stdout.write(options.json ? `${JSON.stringify(result)}\n` : formatFixEvaluation(result));
        return;
      }
      if (!file) throw new Error('review needs a file (or --eval-fixes <repo>)');
      const result = await reviewFile({
        file,
        all: options.all,
        base: options.base,
        adapter: options.adapter,
        registry: options.registry ? { location: options.registry } : undefined,
        percentile: options.percentile,
        aggregate: options.aggregate as Aggregate,
        refresh: options.refresh,
        sampleLines: options.sampleLines,
        threads: options.threads,
        onLog: log,
      });
      process.stdout.write(options.json ? `${JSON.stringify(result)}\n` : formatReview(result));
    });
}

export function formatReview(result: ReviewFileResult): string {
  const out = [
    `${result.file}: ${result.lines.length} ${result.scope === 'all' ? '' : 'changed '}lines reviewed, ${result.flagged} unusual (top ${result.percentile}% of ${result.distribution.lines} repository lines starts at ${result.threshold.toFixed(2)} bits/token, ${result.aggregate})`,
    `adapter: ${result.adapter ? `${result.adapter.id ?? result.adapter.path} (${result.adapter.source})` : 'none (base model only)'}`,
  ];
  for (const line of result.lines) {
    if (line.flagged)
      out.push(
        `  ${String(line.line).padStart(5)}: ${unusualLineMessage(line, result.threshold, result.percentile)}\n         ${line.text.trim()}`,
      );
  }
  return `${out.join('\n')}\n`;
}
