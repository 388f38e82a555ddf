import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Command } from 'commander';
import { buildDataset, DEFAULT_MAX_TOKENS, loadTokenizerFile, windowCharsFor } from '../../data/dataset/build';
import { mineRepository, type MineOptionsInput, type MineSummary } from '../../data/mining/mine';
import { packageRoot } from '../../model/base-model';
import { prepareOutputFile } from '../../util/directories';

// `idiom mine <repo>`: mine a git repository into training examples and, with --out, write the
// tokenised dataset file. --json prints one object on stdout with files.kept,
// files.excluded{reason: n}, examples, tokens, secretsExcluded, languages{lang: files}; logs go
// to stderr. Tokens are counted with --tokenizer, else with the embedded default model's
// tokenizer.json; with neither, tokens is null (and stderr says why) rather than a count from
// some other vocabulary that would mean nothing to the model that trains on it.

interface MineCommandOptions {
  json?: boolean;
  stats?: boolean;
  out?: string;
  tokenizer?: string;
  maxTokens: number;
  seed: number;
  fimRate: number;
  maxFileBytes: number;
}

function integer(name: string, min: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min) throw new Error(`${name} must be an integer >= ${min}, got "${value}"`);
    return n;
  };
}

function fraction(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!(n >= 0 && n <= 1)) throw new Error(`${name} must be a number in [0, 1], got "${value}"`);
    return n;
  };
}

const log = (line: string) => process.stderr.write(`${line}\n`);

export function defaultTokenizerPath(): string | null {
  const root = packageRoot();
  const file = root ? path.join(root, 'models', 'tokenizer.json') : null;
  return file && fs.existsSync(file) ? file : null;
}

export interface MineCommandResult {
  files: { tracked: number; kept: number; excluded: Record<string, number>; heldOut: number };
  examples: number;
  examplesByKind: Record<string, number>;
  tokens: number | null;
  secretsExcluded: number;
  secretKinds: Record<string, number>;
  languages: Record<string, number>;
  chunks: number;
  bytes: { tracked: number; read: number; kept: number };
  split: {
    commits: number;
    heldOutCommits: string[];
    baseCommit: string | null;
    heldOutFiles: number;
    heldOutLines: number;
    note: string | null;
  };
  repo: { root: string; folder: string; head: string | null; shallow: boolean };
  tokenizer: { path: string; sha256: string } | null;
  dataset: {
    path: string;
    bytes: number;
    sha256: string;
    examples: number;
    tokens: number;
    train: { examples: number; tokens: number };
    heldout: { examples: number; tokens: number };
    droppedExamples: number;
  } | null;
  warnings: string[];
  seconds: number;
  stats?: {
    seconds: number;
    cpuSeconds: number;
    sourceMb: number;
    mbPerSecond: number;
    mbPerCpuSecond: number;
    peakRssMb: number;
  };
}

export async function runMine(repo: string, options: MineCommandOptions): Promise<MineCommandResult> {
  const started = performance.now();
  const cpuStart = process.cpuUsage();
  const mine: MineOptionsInput = {
    filters: { maxFileBytes: options.maxFileBytes },
    examples: { seed: options.seed, fimRate: options.fimRate },
    onWarning: (message: string) => log(`warning: ${message}`),
  };
  const tokenizerPath = options.tokenizer ?? defaultTokenizerPath();
  // Before any mining: a folder or an uncreatable parent fails now, in one line.
  if (options.out) prepareOutputFile(options.out, '--out');
  let result: MineCommandResult;
  if (!tokenizerPath) {
    if (options.out)
      throw new Error('--out needs a tokenizer: pass --tokenizer PATH (no default model is installed in models/)');
    const mining = await mineRepository(
      repo,
      { ...mine, examples: { ...mine.examples, windowChars: windowCharsFor(options.maxTokens) } },
      () => undefined,
    );
    log('note: no tokenizer (no --tokenizer and no models/tokenizer.json): tokens is null');
    result = { ...summaryFields(mining), tokens: null, tokenizer: null, dataset: null };
  } else {
    const { tokenizer, sha256, file } = await loadTokenizerFile(tokenizerPath);
    const built = await buildDataset(repo, {
      tokenizer,
      tokenizerSha256: sha256,
      output: options.out,
      maxTokens: options.maxTokens,
      mine,
    });
    const { mining } = built;
    result = {
      ...summaryFields(mining),
      tokens: built.tokens,
      tokenizer: { path: path.resolve(file), sha256 },
      dataset: built.dataset
        ? {
            ...built.dataset,
            examples: built.examples,
            tokens: built.tokens,
            train: built.train,
            heldout: built.heldout,
            droppedExamples: built.droppedExamples,
          }
        : null,
    };
  }
  result.seconds = (performance.now() - started) / 1000;
  if (options.stats) {
    // Source bytes read from git (kept or excluded by content); CPU time of this process, which
    // tells the pipeline's cost apart from waiting on a busy machine.
    const sourceMb = result.bytes.read / 1e6;
    const cpu = process.cpuUsage(cpuStart);
    const cpuSeconds = (cpu.user + cpu.system) / 1e6;
    result.stats = {
      seconds: result.seconds,
      cpuSeconds,
      sourceMb,
      mbPerSecond: sourceMb / result.seconds,
      mbPerCpuSecond: sourceMb / cpuSeconds,
      peakRssMb: process.resourceUsage().maxRSS / 1024,
    };
  }
  return result;
}

export function summaryFields(mining: MineSummary): Omit<MineCommandResult, 'tokens' | 'tokenizer' | 'dataset'> {
  return {
    files: {
      tracked: mining.files.tracked,
      kept: mining.files.kept,
      excluded: mining.files.excluded as Record<string, number>,
      heldOut: mining.files.heldOut,
    },
    examples: mining.examples,
    examplesByKind: mining.examplesByKind,
    secretsExcluded: mining.secretsExcluded,
    secretKinds: mining.secretKinds as Record<string, number>,
    languages: mining.languages,
    chunks: mining.chunks,
    bytes: mining.bytes,
    split: mining.split,
    repo: mining.repo,
    warnings: mining.warnings,
    seconds: mining.seconds,
  };
}

function formatHuman(result: MineCommandResult): string {
  const lines: string[] = [];
  const where = result.repo.folder ? `${result.repo.root} (${result.repo.folder})` : result.repo.root;
  lines.push(`Mined ${where} at ${result.repo.head ?? '(no commits)'}${result.repo.shallow ? ' (shallow clone)' : ''}`);
  lines.push(
    `  files kept      ${result.files.kept} of ${result.files.tracked} tracked (${(result.bytes.kept / 1e6).toFixed(2)} MB)`,
  );
  const excluded = Object.entries(result.files.excluded);
  if (excluded.length > 0) {
    lines.push('  files excluded');
    for (const [reason, count] of excluded) lines.push(`    ${reason.padEnd(22)}${count}`);
  }
  lines.push(`  secrets         ${result.secretsExcluded} file(s) excluded`);
  const languages = Object.entries(result.languages).map(([language, count]) => `${language} ${count}`);
  lines.push(`  languages       ${languages.join(', ') || 'none'}`);
  lines.push(
    `  examples        ${result.examples} (${
      Object.entries(result.examplesByKind)
        .map(([k, n]) => `${k} ${n}`)
        .join(', ') || 'none'
    })`,
  );
  lines.push(`  tokens          ${result.tokens ?? 'not counted (no tokenizer)'}`);
  const split = result.split;
  lines.push(
    split.heldOutCommits.length > 0
      ? `  held out        ${split.heldOutCommits.length} of ${split.commits} commits: ${split.heldOutFiles} file(s), ${split.heldOutLines} changed line(s)`
      : `  held out        none (${split.note ?? 'no split'})`,
  );
  if (result.dataset)
    lines.push(`  dataset         ${result.dataset.path} (${(result.dataset.bytes / 1e6).toFixed(2)} MB)`);
  lines.push(`  time            ${result.seconds.toFixed(2)} s`);
  if (result.stats)
    lines.push(
      `  throughput      ${result.stats.mbPerSecond.toFixed(2)} MB/s, peak RSS ${result.stats.peakRssMb.toFixed(0)} MB`,
    );
  return `${lines.join('\n')}\n`;
}

export function registerMineCommand(program: Command): void {
  program
    .command('mine')
    .description('mine a git repository into training examples (and a dataset file with --out)')
    .argument('<repo>', 'folder inside a git work tree (only files under it are mined)')
    .option('--json', 'print one JSON object on stdout')
    .option('--out <file>', 'write the tokenised dataset (.idiomds) here')
    .option(
      '--tokenizer <path>',
      'tokenizer.json (or a folder holding one) to count and write tokens with (default: models/tokenizer.json)',
    )
    .option('--max-tokens <n>', 'longest token sequence per example', integer('--max-tokens', 16), DEFAULT_MAX_TOKENS)
    .option('--seed <n>', 'seed for FIM choices', integer('--seed', 0), 0)
    .option('--fim-rate <r>', 'share of windows made FIM examples', fraction('--fim-rate'), 0.5)
    .option('--max-file-bytes <n>', 'skip files larger than this', integer('--max-file-bytes', 1), 1_000_000)
    .option('--stats', 'add throughput (mbPerSecond of source read) and peak RSS (peakRssMb) to the output')
    .action(async (repo: string, options: MineCommandOptions) => {
      const result = await runMine(repo, options);
      if (options.json) process.stdout.write(`${JSON.stringify(result)}\n`);
      else process.stdout.write(formatHuman(result));
    });
}
