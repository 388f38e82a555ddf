import { checkCombinable, combinationLabel, parseAdapterWeight, type AdapterWeight } from '../../adapters/combine';
import { readCombinations, writeCombination } from '../../adapters/combinations';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MODES, type Mode } from '../../adapters/mode';
import { Registry, findRepoRoot } from '../../adapters/registry';

// `idiom adapters combine ID[:WEIGHT]... [--mode M]`: the LoRA adapters a mode serves together
// (the registry's combinations.json, which a running language server follows). Without ids it
// prints the combination; `--clear` serves the active adapter again.

export interface CombineResult {
  mode: Mode;
  /** The combination `mode` serves, or null for the active adapter. */
  combination: { adapters: AdapterWeight[]; label: string; rank: number | null } | null;
  changed: boolean;
}

/**
 * Checks `specs` against the registry (known LoRA adapters of one base; one line naming both when
 * not) and records them for `mode`. Weights are checked here; shapes when the server loads them.
 */
export async function runCombine(
  registry: Registry,
  mode: Mode,
  specs: readonly string[],
  options: { clear?: boolean },
): Promise<CombineResult> {
  if (options.clear && specs.length > 0) throw new Error('adapters combine --clear takes no ids');
  const entries = await registry.list();
  const describe = async (parts: AdapterWeight[] | undefined): Promise<CombineResult['combination']> => {
    if (!parts) return null;
    let rank: number | null = 0;
    for (const part of parts) {
      const r = await registry
        .manifest(part.id)
        .then((manifest) => manifest.training.hyperparameters.r)
        .catch(() => null);
      rank = typeof r === 'number' && rank !== null ? rank + r : null;
    }
    return { adapters: parts, label: combinationLabel(parts), rank };
  };
  if (specs.length === 0 && !options.clear)
    return { mode, combination: await describe(readCombinations(registry.dir)[mode]), changed: false };

  const parts = specs.map(parseAdapterWeight);
  const candidates = parts.map((part) => {
    const entry = entries.find((e) => e.id === part.id);
    if (!entry) throw new Error(`no adapter ${part.id} in ${registry.adaptersDir} (see \`idiom adapters list\`)`);
    if (entry.problem) throw new Error(`adapter ${part.id} is unusable: ${entry.problem}`);
    return { ...part, kind: entry.kind, base: entry.base };
  });
  if (!options.clear) checkCombinable(candidates);
  const combinations = writeCombination(registry.dir, mode, parts);
  return { mode, combination: await describe(combinations[mode]), changed: true };
}

/** The command line's side: the repository and registry as the other `idiom adapters` actions find them. */
export async function runCombineCommand(
  specs: readonly string[],
  options: { repo?: string; registry?: string; mode: string; clear?: boolean },
): Promise<CombineResult> {
  if (!MODES.includes(options.mode as Mode))
    throw new Error(`unknown mode "${options.mode}" (expected ${MODES.join(', ')})`);
  const start = options.repo ? path.resolve(options.repo) : process.cwd();
  if (!fs.existsSync(start) || !fs.statSync(start).isDirectory())
    throw new Error(`${start}: no such repository folder`);
  const readOnly = specs.length === 0 && !options.clear;
  const registry = await Registry.open(findRepoRoot(start), { location: options.registry, readOnly });
  return runCombine(registry, options.mode as Mode, specs, { clear: options.clear });
}

export function formatCombine(result: CombineResult): string {
  if (!result.combination) return `${result.mode}: no combination; the active adapter serves\n`;
  const { label, rank } = result.combination;
  return `${result.mode}: ${label}${rank !== null ? ` (one LoRA of rank ${rank})` : ''}\n`;
}
