import { type Command, Option } from 'commander';
import { SingleBar } from 'cli-progress';
import { MODES, type Mode } from '../../adapters/mode';
import { PROJECTIONS, type Projection } from '../../model/config';
import { DEFAULT_LORA } from '../../model/lora';
import { TrainingCancelledError, type TrainEvent } from '../../training/pipeline/events';
import type { Budget } from '../../training/pipeline/plan';
import { trainRepository, type TrainRepositoryResult } from '../../training/pipeline/train-repository';
import { DEFAULT_CANDIDATES, describeMemorisation } from '../../training/eval/memorisation';
import { formatComparisonTable } from '../../training/report/table';
import { onInterrupt } from '../interrupt';

// `idiom train <repo>`: mine → tokenise → train → evaluate → adapter + manifest → registry.
// --json: progress events as JSON lines on stdout, the result object last (type "result");
// otherwise a progress bar on stderr and the comparison table on stdout. Ctrl-C stops at the next
// step, writes a checkpoint and exits 130; `--resume` continues from it.

interface TrainCommandOptions {
  base?: string;
  method: string;
  minutes?: number;
  tokens?: number;
  backend: string;
  mode: string;
  force?: boolean;
  resume?: boolean;
  from?: string;
  json?: boolean;
  seed?: number;
  registry?: string;
  r?: number;
  alpha?: number;
  targets?: string;
  lr?: number;
  weightDecay?: number;
  epochs?: number;
  batch?: number;
  seqLen?: number;
  threads?: number;
  processes?: number;
  checkpointSeconds?: number;
  checkpointSteps?: number;
  maxLines?: number;
  maxScoreTokens?: number;
  report: boolean;
  memorisationCheck: boolean;
  canaryCandidates?: number;
}

function positiveNumber(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!(Number.isFinite(n) && n > 0)) throw new Error(`${name} must be a positive number, got "${value}"`);
    return n;
  };
}

function positiveInteger(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!(Number.isInteger(n) && n > 0)) throw new Error(`${name} must be a positive integer, got "${value}"`);
    return n;
  };
}

function nonNegativeInteger(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!(Number.isInteger(n) && n >= 0)) throw new Error(`${name} must be an integer >= 0, got "${value}"`);
    return n;
  };
}

export function registerTrainCommand(program: Command): void {
  program
    .command('train')
    .description('train an adapter on a repository (mine, train, evaluate on the newest commits, register)')
    .argument('<repo>', 'repository folder (a git repository)')
    .option(
      '--base <dir>',
      'base model folder (config.json, model.safetensors, tokenizer.json); default: the embedded model',
    )
    .addOption(new Option('--method <method>', 'lora or full fine-tuning').choices(['lora', 'full']).default('lora'))
    .addOption(
      new Option('--minutes <n>', 'training budget in minutes (default 10)')
        .argParser(positiveNumber('--minutes'))
        .conflicts('tokens'),
    )
    .addOption(new Option('--tokens <n>', 'training budget in tokens').argParser(positiveInteger('--tokens')))
    .addOption(new Option('--backend <backend>', 'training backend').choices(['auto', 'ort', 'torch']).default('auto'))
    .addOption(new Option('--mode <mode>', 'mode the adapter serves').choices([...MODES]).default('complete'))
    .option('--force', 'activate even if it does not beat the base and the active adapter on the held-out split')
    .option('--resume', 'continue the newest unfinished run (same method, base and mode)')
    .option(
      '--from <id|active>',
      "start from this LoRA adapter's weights and train on the files changed since its commit, plus a replay of older ones",
    )
    .option('--json', 'JSON lines on stdout: progress events, then the result object')
    .option(
      '--seed <n>',
      'seed of the data order and the LoRA initialisation (default 0)',
      nonNegativeInteger('--seed'),
    )
    .option('--registry <dir>', 'registry folder, absolute or relative to the repository (default .idiom)')
    .option('--r <n>', `LoRA rank (default ${DEFAULT_LORA.r})`, positiveInteger('--r'))
    .option('--alpha <n>', `LoRA alpha (default ${DEFAULT_LORA.alpha})`, positiveNumber('--alpha'))
    .option('--targets <list>', `LoRA target modules, comma-separated (default ${DEFAULT_LORA.targets.join(',')})`)
    .option('--lr <x>', 'peak learning rate (default 3e-4 LoRA, 5e-5 full)', positiveNumber('--lr'))
    .option('--weight-decay <x>', 'AdamW weight decay (default 0.1)', (v) => {
      const n = Number(v);
      if (!(Number.isFinite(n) && n >= 0)) throw new Error(`--weight-decay must be a number >= 0, got "${v}"`);
      return n;
    })
    .option('--epochs <n>', 'at most this many passes over the training data (default 8)', positiveInteger('--epochs'))
    .option('--batch <n>', 'rows per step (default: fitted to the budget)', positiveInteger('--batch'))
    .option(
      '--seq-len <n>',
      'tokens per row (default: fitted to the budget and the model)',
      positiveInteger('--seq-len'),
    )
    .option('--threads <n>', 'compute threads (default: every core)', positiveInteger('--threads'))
    .option(
      '--processes <n>',
      'PyTorch: data-parallel (DDP) over n local processes, one per GPU; the batch is split across them',
      positiveInteger('--processes'),
    )
    .option(
      '--checkpoint-seconds <n>',
      'checkpoint after this many seconds of training (default 60)',
      positiveNumber('--checkpoint-seconds'),
    )
    .option('--checkpoint-steps <n>', 'also checkpoint every this many steps', positiveInteger('--checkpoint-steps'))
    .option(
      '--max-lines <n>',
      'held-out lines completed for exact match / edit similarity (default 64)',
      positiveInteger('--max-lines'),
    )
    .option(
      '--max-score-tokens <n>',
      'held-out tokens scored for loss (default 32768)',
      positiveInteger('--max-score-tokens'),
    )
    .option('--no-report', 'do not write the HTML report')
    .option('--no-memorisation-check', 'skip the canary and extraction check before promotion')
    .option(
      '--canary-candidates <n>',
      `random strings each canary is ranked among (default ${DEFAULT_CANDIDATES})`,
      positiveInteger('--canary-candidates'),
    )
    .action(async (repo: string, options: TrainCommandOptions) => {
      await runTrainCommand(repo, options);
    });
}

function parseTargets(text: string | undefined): Projection[] | undefined {
  if (text === undefined) return undefined;
  const targets = text
    .split(',')
    .map((t) => t.trim())
    .filter(Boolean);
  const full = targets.map((t) => (t.endsWith('_proj') ? t : `${t}_proj`));
  for (const t of full)
    if (!PROJECTIONS.includes(t as Projection))
      throw new Error(`unknown LoRA target "${t}" (expected some of ${PROJECTIONS.join(', ')})`);
  return full as Projection[];
}

export async function runTrainCommand(repo: string, options: TrainCommandOptions): Promise<void> {
  const budget: Budget | undefined =
    options.tokens !== undefined
      ? { tokens: options.tokens }
      : options.minutes !== undefined
        ? { minutes: options.minutes }
        : undefined;
  const lora = {
    ...(options.r ? { r: options.r } : {}),
    ...(options.alpha ? { alpha: options.alpha } : {}),
    ...(options.targets ? { targets: parseTargets(options.targets) } : {}),
  };
  const controller = new AbortController();
  // The first SIGINT/SIGTERM stops after this step with a checkpoint; a second one quits now.
  const stopInterrupt = onInterrupt(() => {
    process.stderr.write('\nidiom: stopping after this step and writing a checkpoint (Ctrl-C again to quit now)\n');
    controller.abort();
  });
  const progress = options.json ? jsonProgress() : barProgress();
  try {
    const result = await trainRepository({
      repo,
      base: options.base,
      method: options.method as 'lora' | 'full',
      budget,
      mode: options.mode as Mode,
      backend: options.backend as 'auto' | 'ort' | 'torch',
      force: options.force,
      resume: options.resume,
      from: options.from,
      seed: options.seed,
      lora,
      learningRate: options.lr,
      weightDecay: options.weightDecay,
      maxEpochs: options.epochs,
      batch: options.batch,
      seqLen: options.seqLen,
      threads: options.threads,
      processes: options.processes,
      registry: options.registry ? { location: options.registry } : undefined,
      checkpointSeconds: options.checkpointSeconds,
      checkpointSteps: options.checkpointSteps,
      heldOut: { maxLines: options.maxLines, maxScoreTokens: options.maxScoreTokens },
      report: options.report,
      memorisation: options.memorisationCheck === false ? false : { candidates: options.canaryCandidates },
      onProgress: progress.event,
      signal: controller.signal,
    });
    progress.stop();
    if (options.json) process.stdout.write(`${JSON.stringify({ type: 'result', ...trainResultJson(result) })}\n`);
    else process.stdout.write(formatTrainSummary(result));
  } catch (error) {
    progress.stop();
    if (error instanceof TrainingCancelledError) {
      if (options.json)
        process.stdout.write(
          `${JSON.stringify({ type: 'cancelled', step: error.step, checkpoint: error.checkpoint })}\n`,
        );
      process.stderr.write(`idiom: ${error.message}\n`);
      process.exitCode = 130;
      return;
    }
    throw error;
  } finally {
    stopInterrupt();
  }
}

/** The final JSON object: the keys the CLI promises and a few more (no per-step losses: see the report). */
export function trainResultJson(result: TrainRepositoryResult): Record<string, unknown> {
  return {
    adapter: result.adapter,
    parent: result.manifest.parent,
    tokens: result.tokens,
    seconds: result.seconds,
    tokensPerSecond: result.tokensPerSecond,
    steps: result.steps,
    metrics: result.metrics,
    heldOut: result.heldOut,
    activated: result.activated,
    promotion: { reason: result.promotion.reason, activeId: result.promotion.activeId },
    trainableParameters: result.trainableParameters,
    peakRssBytes: result.peakRssBytes,
    plan: result.plan,
    comparison: result.comparison,
    memorisation: result.memorisation,
    report: result.report,
    resumedFrom: result.resumedFrom,
  };
}

export function formatTrainSummary(result: TrainRepositoryResult): string {
  const lines = [
    `adapter ${result.adapter.id} (${result.adapter.method}) at ${result.adapter.path}`,
    ...(result.manifest.parent ? [`continued from ${result.manifest.parent}`] : []),
    `trained ${result.steps} steps, ${result.tokens} tokens in ${(result.seconds / 60).toFixed(2)} min (${result.tokensPerSecond} tokens/s)`,
    `held-out split: ${result.heldOut.commits} commits, ${result.heldOut.lines} changed lines (${result.heldOut.completedLines} completed), ${result.heldOut.tokens} tokens scored`,
    '',
    formatComparisonTable(result.comparison),
    ...(result.memorisation ? [describeMemorisation(result.memorisation)] : []),
    `${result.activated ? 'activated' : 'not activated'}: ${result.promotion.reason}`,
    ...(result.report ? [`report: ${result.report}`] : []),
  ];
  return `${lines.join('\n')}\n`;
}

interface ProgressSink {
  event: (event: TrainEvent) => void;
  stop: () => void;
}

function jsonProgress(): ProgressSink {
  return { event: (event) => process.stdout.write(`${JSON.stringify(event)}\n`), stop: () => {} };
}

/** cli-progress bar on a terminal; on a pipe, one line per phase and about every 10% of steps. */
function barProgress(): ProgressSink {
  const tty = process.stderr.isTTY === true;
  let bar: SingleBar | null = null;
  let lastTenth = -1;
  const stopBar = () => {
    bar?.stop();
    bar = null;
  };
  return {
    event(event) {
      switch (event.type) {
        case 'phase':
          if (event.phase !== 'training') stopBar();
          process.stderr.write(`${event.phase}: ${event.message}\n`);
          break;
        case 'log':
          if (!bar) process.stderr.write(`${event.message}\n`);
          break;
        case 'step':
          if (tty) {
            if (!bar) {
              bar = new SingleBar({
                stream: process.stderr,
                format: 'training [{bar}] {value}/{total} steps | loss {loss} | {speed} tok/s | ETA {eta_formatted}',
                hideCursor: true,
                etaBuffer: 20,
              });
              bar.start(event.totalSteps, 0, { loss: '-', speed: '-' });
            }
            bar.update(event.step, { loss: event.loss.toFixed(4), speed: event.tokensPerSecond.toFixed(0) });
          } else {
            const tenth = Math.floor(event.fraction * 10);
            if (tenth !== lastTenth) {
              lastTenth = tenth;
              process.stderr.write(
                `step ${event.step}/${event.totalSteps} loss ${event.loss.toFixed(4)} ${event.tokensPerSecond.toFixed(0)} tok/s ETA ${Math.round(event.etaSeconds)} s\n`,
              );
            }
          }
          break;
        case 'metrics':
          stopBar();
          process.stderr.write(
            `${event.model}: held-out loss ${event.metrics.loss.toFixed(4)}, exact match ${(event.metrics.exactMatch * 100).toFixed(1)}%\n`,
          );
          break;
        default:
          break;
      }
    },
    stop: stopBar,
  };
}
