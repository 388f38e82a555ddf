import { type Command, Option } from 'commander';
import { MODES, type Mode } from '../../adapters/mode';
import { evalRepository, type EvalRepositoryResult } from '../../training/pipeline/eval-repository';

// `idiom eval <repo> [--adapter ID|DIR]`: held-out metrics of the base and an adapter (default: the
// one active for --mode). --json prints one object: metrics.base, metrics.adapter, heldOut{commits, lines}.

interface EvalCommandOptions {
  base?: string;
  adapter?: string;
  mode: string;
  registry?: string;
  json?: boolean;
  maxLines?: number;
  maxScoreTokens?: number;
  seqLen?: number;
  threads?: number;
}

function positiveInteger(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!(Number.isInteger(n) && n > 0)) throw new Error(`${name} must be a positive integer, got "${value}"`);
    return n;
  };
}

export function registerEvalCommand(program: Command): void {
  program
    .command('eval')
    .description("evaluate the base model and an adapter on the repository's newest commits (held-out split)")
    .argument('<repo>', 'repository folder (a git repository)')
    .option('--base <dir>', 'base model folder; default: the embedded model')
    .option('--adapter <id|dir>', 'adapter id in the registry or adapter folder (default: the active one)')
    .addOption(
      new Option('--mode <mode>', 'mode whose active adapter is evaluated by default')
        .choices([...MODES])
        .default('complete'),
    )
    .option('--registry <dir>', 'registry folder, absolute or relative to the repository (default .idiom)')
    .option('--json', 'print one JSON object on stdout')
    .option('--max-lines <n>', 'held-out lines completed (default 64)', positiveInteger('--max-lines'))
    .option('--max-score-tokens <n>', 'held-out tokens scored (default 32768)', positiveInteger('--max-score-tokens'))
    .option(
      '--seq-len <n>',
      "tokens per scoring window (default: the adapter's training length)",
      positiveInteger('--seq-len'),
    )
    .option('--threads <n>', 'compute threads (default: every core)', positiveInteger('--threads'))
    .action(async (repo: string, options: EvalCommandOptions) => {
      const result = await evalRepository({
        repo,
        base: options.base,
        adapter: options.adapter,
        mode: options.mode as Mode,
        registry: options.registry ? { location: options.registry } : undefined,
        heldOut: { maxLines: options.maxLines, maxScoreTokens: options.maxScoreTokens },
        seqLen: options.seqLen,
        threads: options.threads,
        onLog: (message) => process.stderr.write(`${message}\n`),
      });
      if (options.json) process.stdout.write(`${JSON.stringify(result)}\n`);
      else process.stdout.write(formatEval(result));
    });
}

export function formatEval(result: EvalRepositoryResult): string {
  const row = (name: string, m: EvalRepositoryResult['metrics']['base'] | null) =>
    m
      ? `${name.padEnd(10)} loss ${m.loss.toFixed(4)}  ppl ${m.perplexity.toFixed(2)}  bits/byte ${m.bitsPerByte.toFixed(4)}  exact ${(m.exactMatch * 100).toFixed(1)}%  edit sim ${m.editSimilarity.toFixed(3)}`
      : `${name.padEnd(10)} (none)`;
  return [
    `held-out split: ${result.heldOut.commits} commits, ${result.heldOut.lines} changed lines (${result.heldOut.completedLines} completed), ${result.heldOut.tokens} tokens scored`,
    row('base', result.metrics.base),
    row(result.adapter ? `adapter` : 'adapter', result.metrics.adapter),
    ...(result.adapter ? [`adapter: ${result.adapter.id ?? result.adapter.path} (${result.adapter.method})`] : []),
    '',
  ].join('\n');
}
