// The combination each mode serves, kept beside registry.json as combinations.json:
//   {"version": 1, "modes": {"complete": [{"id": "…", "weight": 1}, {"id": "…", "weight": 0.5}]}}
// A mode without an entry serves the registry's active adapter. `idiom adapters combine` writes it;
// the language server reads it when neither the session nor the `idiom.adapters` setting names one.

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { AdapterWeight } from './combine';
import { writeTextAtomically } from './folder';
import { MODES, type Mode } from './mode';

export const COMBINATIONS_FILE = 'combinations.json';

export type Combinations = Partial<Record<Mode, AdapterWeight[]>>;

/**
 * A list of {id, weight} as a setting, a request or the file gives it; a one-line error naming
 * `source` otherwise. Weights are checked later, with the adapters (checkCombinable).
 */
export function parseAdapterWeights(value: unknown, source: string): AdapterWeight[] {
  if (!Array.isArray(value)) throw new Error(`${source}: expected a list of {"id", "weight"}, got ${describe(value)}`);
  return value.map((item, index) => {
    const record = item as Record<string, unknown> | null;
    if (record === null || typeof record !== 'object' || typeof record.id !== 'string' || record.id === '')
      throw new Error(
        `${source}[${index}]: expected {"id": "<adapter id>", "weight": <number>}, got ${describe(item)}`,
      );
    const weight = record.weight ?? 1;
    if (typeof weight !== 'number' || !Number.isFinite(weight))
      throw new Error(`${source}[${index}]: weight of ${record.id} must be a finite number, got ${describe(weight)}`);
    return { id: record.id, weight };
  });
}

function describe(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/** combinations.json of the registry at `registryDir`; empty when there is none. */
export function readCombinations(registryDir: string): Combinations {
  const file = path.join(registryDir, COMBINATIONS_FILE);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new Error(`${file}: cannot read (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new Error(`${file}: invalid JSON (${(error as Error).message})`);
  }
  const modes = (json as { modes?: unknown } | null)?.modes;
  if (modes === null || typeof modes !== 'object' || Array.isArray(modes))
    throw new Error(`${file}: expected {"version": 1, "modes": {MODE: [{"id", "weight"}]}}`);
  const combinations: Combinations = {};
  for (const [mode, list] of Object.entries(modes as Record<string, unknown>)) {
    if (!MODES.includes(mode as Mode))
      throw new Error(`${file}: unknown mode "${mode}" (expected ${MODES.join(', ')})`);
    const parsed = parseAdapterWeights(list, `${file}: modes.${mode}`);
    if (parsed.length > 0) combinations[mode as Mode] = parsed;
  }
  return combinations;
}

/** Sets (an empty list: clears) what `mode` serves, replacing the file atomically. */
export function writeCombination(registryDir: string, mode: Mode, parts: readonly AdapterWeight[]): Combinations {
  const combinations = readCombinations(registryDir);
  if (parts.length === 0) delete combinations[mode];
  else combinations[mode] = parts.map((part) => ({ id: part.id, weight: part.weight }));
  writeTextAtomically(
    path.join(registryDir, COMBINATIONS_FILE),
    `${JSON.stringify({ version: 1, modes: combinations }, null, 2)}\n`,
  );
  return combinations;
}
