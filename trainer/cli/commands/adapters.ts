import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Command } from 'commander';
import { MODES, type Mode } from '../../adapters/mode';
import { Registry, findRepoRoot, registryLocation, type AdapterEntry } from '../../adapters/registry';
import { sha256OfFiles } from '../../util/sha256';

// `idiom adapters [list | activate ID | rollback | remove ID | promote ID]`: the repository's adapter
// registry. --json prints one object on stdout with at least adapters[{id, created, active, mode, metrics}].

interface AdaptersOptions {
  repo?: string;
  registry?: string;
  mode: string;
  json?: boolean;
  force?: boolean;
}

const ACTIONS = ['list', 'activate', 'rollback', 'remove', 'promote'] as const;
type Action = (typeof ACTIONS)[number];

export function registerAdaptersCommand(program: Command): void {
  program
    .command('adapters')
    .description('list, activate, roll back or remove the adapters trained for a repository')
    .argument('[action]', `one of ${ACTIONS.join(', ')}`, 'list')
    .argument('[id]', 'adapter id (activate, remove, promote)')
    .option('--repo <dir>', 'repository (default: the one around the current folder)')
    .option('--registry <dir>', 'registry folder, absolute or relative to the repository (default .idiom)')
    .option('--mode <mode>', `mode to act on: ${MODES.join(', ')}`, 'complete')
    .option('--force', 'activate without a better held-out loss (promote); remove an active adapter (remove)')
    .option('--json', 'print one JSON object on stdout')
    .action(async (actionText: string, id: string | undefined, options: AdaptersOptions) => {
      const result = await runAdapters(actionText, id, options);
      if (options.json) process.stdout.write(`${JSON.stringify(result)}\n`);
      else process.stdout.write(formatHuman(result));
    });
}

export interface AdaptersCommandResult {
  action: Action;
  mode: Mode;
  registry: string;
  /** What changed (activate / rollback / remove / promote). */
  change?: Record<string, unknown>;
  adapters: Array<
    Pick<
      AdapterEntry,
      'id' | 'created' | 'active' | 'activeModes' | 'mode' | 'kind' | 'metrics' | 'parent' | 'path' | 'training'
    > & { problem?: string }
  >;
}

export async function runAdapters(
  actionText: string,
  id: string | undefined,
  options: AdaptersOptions,
): Promise<AdaptersCommandResult> {
  if (!ACTIONS.includes(actionText as Action)) {
    throw new Error(`unknown action "${actionText}" (expected list, activate ID, rollback, remove ID or promote ID)`);
  }
  const action = actionText as Action;
  if (!MODES.includes(options.mode as Mode))
    throw new Error(`unknown mode "${options.mode}" (expected ${MODES.join(', ')})`);
  const mode = options.mode as Mode;
  const needsId = action === 'activate' || action === 'remove' || action === 'promote';
  if (needsId && !id) throw new Error(`adapters ${action} needs an adapter id (see \`idiom adapters list\`)`);
  if (!needsId && id) throw new Error(`adapters ${action} takes no id (got "${id}")`);

  const start = options.repo ? path.resolve(options.repo) : process.cwd();
  if (!fs.existsSync(start) || !fs.statSync(start).isDirectory())
    throw new Error(`${start}: no such repository folder`);
  const repo = findRepoRoot(start);
  const location = registryLocation(repo, { location: options.registry });
  if (action === 'list' && !fs.existsSync(location)) return { action, mode, registry: location, adapters: [] };

  // Listing only reads: it creates, locks and tidies nothing.
  const registry = await Registry.open(repo, { location: options.registry, readOnly: action === 'list' });
  let change: Record<string, unknown> | undefined;
  switch (action) {
    case 'list':
      break;
    case 'activate':
      change = { ...(await registry.activate(id!, mode)) };
      break;
    case 'rollback':
      change = { ...(await registry.rollback(mode)) };
      break;
    case 'remove':
      change = { ...(await registry.remove(id!, { force: options.force })) };
      break;
    case 'promote':
      change = { id, ...(await registry.promote(id!, mode, { force: options.force })) };
      break;
  }
  const adapters = (await registry.list()).map((entry) => ({
    id: entry.id,
    created: entry.created,
    active: entry.active,
    activeModes: entry.activeModes,
    mode: entry.mode,
    kind: entry.kind,
    metrics: entry.metrics,
    parent: entry.parent,
    path: entry.path,
    training: entry.training,
    ...(entry.problem ? { problem: entry.problem } : {}),
  }));
  await flagBrokenActive(registry, adapters);
  return { action, mode, registry: registry.dir, ...(change ? { change } : {}), adapters };
}

type ListedAdapter = AdaptersCommandResult['adapters'][number];

/**
 * An adapter active for some mode must be usable: its folder present, its manifest readable and
 * its weights those the manifest hashed. A broken one gets a `problem` (a missing one a row of
 * its own), so the list says why the base model serves instead. Only active adapters are hashed.
 */
async function flagBrokenActive(registry: Registry, adapters: ListedAdapter[]): Promise<void> {
  for (const mode of MODES) {
    const id = await registry.activeId(mode);
    if (!id) continue;
    const listed = adapters.find((adapter) => adapter.id === id);
    if (!listed) {
      adapters.push({
        id,
        created: '',
        active: true,
        activeModes: [mode],
        mode,
        kind: null,
        metrics: null,
        parent: null,
        path: '',
        training: null,
        problem: `active for ${mode}, but its folder is missing`,
      });
      continue;
    }
    if (listed.problem || listed.activeModes.indexOf(mode) > 0) continue; // already flagged, or checked for an earlier mode
    try {
      const manifest = await registry.manifest(id);
      const actual = await sha256OfFiles(manifest.weights.files.map((file) => path.join(listed.path, file)));
      if (actual !== manifest.weights.sha256)
        listed.problem = 'its weights do not match manifest.json (changed or corrupt)';
    } catch (error) {
      listed.problem = error instanceof Error ? error.message : String(error);
    }
  }
}

/** One line: a message with line breaks (a JSON parse error) must not break the table. */
function oneLine(text: string): string {
  return text.replace(/\s+/g, ' ').trim();
}

function formatHuman(result: AdaptersCommandResult): string {
  const lines: string[] = [];
  const change = result.change;
  const name = (value: unknown): string => (value === null || value === undefined ? 'the base model' : String(value));
  if (change) {
    switch (result.action) {
      case 'activate':
      case 'rollback':
        lines.push(
          change.changed
            ? `${result.mode}: ${name(change.from)} -> ${name(change.to)}`
            : `${result.mode}: ${name(change.to)} was already active`,
        );
        break;
      case 'remove': {
        lines.push(`removed ${String(change.id)}`);
        for (const d of change.deactivated as Array<{ mode: string; to: string | null }>)
          lines.push(`${d.mode}: now ${name(d.to)}`);
        break;
      }
      case 'promote':
        lines.push(
          `${change.activated ? 'activated' : 'not activated'} ${String(change.id)} for ${result.mode}: ${String(change.reason)}`,
        );
        break;
      default:
        break;
    }
  }
  if (result.adapters.length === 0) {
    lines.push(`no adapters in ${result.registry} (train one with \`idiom train\`)`);
    return `${lines.join('\n')}\n`;
  }
  const rows = [['ID', 'CREATED', 'MODE', 'ACTIVE FOR', 'METHOD', 'LOSS', 'BASE LOSS', 'EXACT', 'EDIT SIM']];
  for (const a of result.adapters) {
    const m = a.metrics?.adapter;
    const b = a.metrics?.base;
    rows.push(
      [
        a.id,
        a.created ? a.created.replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '?',
        a.mode,
        a.activeModes.join(',') || '-',
        a.problem ? 'UNUSABLE' : (a.training?.method ?? '?'),
        m ? m.loss.toFixed(4) : '-',
        b ? b.loss.toFixed(4) : '-',
        m ? m.exactMatch.toFixed(3) : '-',
        m ? m.editSimilarity.toFixed(3) : '-',
      ].map(oneLine),
    );
  }
  const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => row[column].length)));
  for (const row of rows)
    lines.push(
      row
        .map((cell, column) => cell.padEnd(widths[column]))
        .join('  ')
        .trimEnd(),
    );
  for (const a of result.adapters) {
    if (a.problem)
      lines.push(
        `${a.activeModes.length > 0 ? 'warning: active ' : ''}${a.id} is unusable: ${oneLine(a.problem)}${a.activeModes.length > 0 ? ' (the base model serves instead)' : ''}`,
      );
  }
  return `${lines.join('\n')}\n`;
}
