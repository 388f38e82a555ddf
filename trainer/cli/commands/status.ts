import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Command } from 'commander';
import { MODES, type Mode } from '../../adapters/mode';
import { Registry, findRepoRoot, loadActive, registryLocation } from '../../adapters/registry';
import { loraAdapterOf } from '../../adapters/peft';
import { EngineWorker } from '../../compute/runtime/client';
import { baseWeightsSha256, resolveBaseDir } from '../../model/base-model';
import { loadModelConfig } from '../../model/config';
import { Tokenizer } from '../../model/tokenizer/tokenizer';
import { ReviewScorer } from '../../modes/review/scorer';
import { DEFAULT_DRIFT_THRESHOLDS, measureDrift, type DriftReport } from '../../training/eval/drift';

// `idiom status`: the adapter active for a mode and how far the repository has moved on since it
// was trained (commits behind, loss on the changed files now against its held-out loss then).

interface StatusOptions {
  repo?: string;
  registry?: string;
  base?: string;
  mode: string;
  json?: boolean;
  lossIncrease?: number;
  commitsBehind?: number;
  maxTokens?: number;
}

export interface StatusCommandResult {
  repo: string;
  mode: Mode;
  /** The active adapter's id, or null when the base model serves. */
  adapter: string | null;
  drift: DriftReport | null;
}

function nonNegative(name: string, integer: boolean) {
  return (value: string): number => {
    const n = Number(value);
    if (!(Number.isFinite(n) && n >= 0 && (!integer || Number.isInteger(n))))
      throw new Error(`${name} must be ${integer ? 'an integer' : 'a number'} >= 0, got "${value}"`);
    return n;
  };
}

export function registerStatusCommand(program: Command): void {
  program
    .command('status')
    .description('the active adapter and its drift: commits behind, loss on the code changed since it was trained')
    .option('--repo <dir>', 'repository (default: the one around the current folder)')
    .option('--registry <dir>', 'registry folder, absolute or relative to the repository (default .idiom)')
    .option('--base <dir>', 'base model folder (default: the embedded model)')
    .option('--mode <mode>', `mode: ${MODES.join(', ')}`, 'complete')
    .option(
      '--loss-increase <x>',
      `relative loss rise that counts as drift (default ${DEFAULT_DRIFT_THRESHOLDS.lossIncrease})`,
      nonNegative('--loss-increase', false),
    )
    .option(
      '--commits-behind <n>',
      `commits behind that count as drift (default ${DEFAULT_DRIFT_THRESHOLDS.commitsBehind})`,
      nonNegative('--commits-behind', true),
    )
    .option(
      '--max-tokens <n>',
      'tokens of changed code scored at most (default 4096)',
      nonNegative('--max-tokens', true),
    )
    .option('--json', 'print one JSON object on stdout')
    .action(async (options: StatusOptions) => {
      const result = await runStatus(options);
      if (options.json) process.stdout.write(`${JSON.stringify(result)}\n`);
      else process.stdout.write(formatStatus(result));
    });
}

export async function runStatus(options: StatusOptions): Promise<StatusCommandResult> {
  if (!MODES.includes(options.mode as Mode))
    throw new Error(`unknown mode "${options.mode}" (expected ${MODES.join(', ')})`);
  const mode = options.mode as Mode;
  const start = options.repo ? path.resolve(options.repo) : process.cwd();
  if (!fs.existsSync(start) || !fs.statSync(start).isDirectory())
    throw new Error(`${start}: no such repository folder`);
  const repo = findRepoRoot(start);
  const location = registryLocation(repo, { location: options.registry });
  if (!fs.existsSync(location)) return { repo, mode, adapter: null, drift: null };
  const registry = await Registry.open(repo, { location: options.registry, readOnly: true });
  const id = await registry.activeId(mode);
  if (id === null) return { repo, mode, adapter: null, drift: null };
  const manifest = await registry.manifest(id);
  const baseDir = resolveBaseDir(options.base);
  const config = loadModelConfig(baseDir);
  const active = await loadActive(registry, mode, { config, sha256: await baseWeightsSha256(baseDir) });
  const tokenizer = await Tokenizer.load(baseDir);
  const worker = EngineWorker.start();
  try {
    // A full fine-tune scores as its own model; a LoRA adapter as a feed on the base.
    const scorer = await ReviewScorer.load(worker, active?.kind === 'full' ? active.model.dir : baseDir, tokenizer);
    if (active?.kind === 'lora') await scorer.setAdapter(loraAdapterOf(active.adapter));
    const drift = await measureDrift({
      root: repo,
      manifest,
      scorer,
      thresholds: {
        ...(options.lossIncrease !== undefined ? { lossIncrease: options.lossIncrease } : {}),
        ...(options.commitsBehind !== undefined ? { commitsBehind: options.commitsBehind } : {}),
      },
      maxTokens: options.maxTokens,
    });
    return { repo, mode, adapter: id, drift };
  } finally {
    await worker.terminate();
  }
}

function formatStatus(result: StatusCommandResult): string {
  if (!result.adapter) return `${result.mode}: the base model serves (no active adapter)\n`;
  const drift = result.drift!;
  const lines = [`${result.mode}: adapter ${result.adapter}, trained at ${drift.trainedAt?.slice(0, 12) ?? '?'}`];
  lines.push(`${drift.drifted ? 'drifted: ' : ''}${drift.message}`);
  if (drift.loss !== null)
    lines.push(
      `loss on ${drift.scoredFiles} changed files (${drift.tokens} tokens): ${drift.loss.toFixed(4)} (base ${drift.baseLoss?.toFixed(4)}), at training ${drift.trainingLoss?.toFixed(4) ?? '?'} (base ${drift.trainingBaseLoss?.toFixed(4) ?? '?'})`,
    );
  if (drift.drifted) lines.push('retrain: idiom train . --from active');
  return `${lines.join('\n')}\n`;
}
