import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Command } from 'commander';
import { registerAdaptersExportCommand } from './adapters-export';
import { MODES, type Mode } from '../../adapters/mode';
import { writeTextAtomically } from '../../adapters/folder';
import { labelWithAge } from '../../adapters/label';
import { formatLineage, lineageOf } from '../../adapters/lineage';
import { Registry, findRepoRoot, registryLocation, type AdapterEntry } from '../../adapters/registry';
import { BASE_KEY, emptyAcceptance, readStats, type Acceptance } from '../../adapters/stats';
import { registryTimelineHtml, relativeLoss } from '../../training/report/timeline';
import { DEFAULT_REMOTE } from '../../adapters/sharing';
import { sha256OfFiles } from '../../util/sha256';
import { formatShare, runShare, type ShareOptions } from './share';
import { formatCombine, runCombineCommand } from './combine';

// `idiom adapters [list | activate ID | rollback | remove ID | promote ID | report]`: the
// repository's adapter registry. --json prints one object on stdout with at least
// adapters[{id, created, active, mode, metrics, label, acceptance}].

interface AdaptersOptions {
  repo?: string;
  registry?: string;
  mode: string;
  json?: boolean;
  force?: boolean;
  out?: string;
}

const ACTIONS = ['list', 'activate', 'rollback', 'remove', 'promote', 'report'] as const;
type Action = (typeof ACTIONS)[number];

export function registerAdaptersCommand(program: Command): void {
  const adapters = program
    .command('adapters')
    .description(
      'list, activate, roll back or remove the adapters trained for a repository; report: loss, replay and acceptance per version; publish, fetch: share them through the git remote',
    )
    .argument('[action]', `one of ${ACTIONS.join(', ')}, publish, fetch, combine`, 'list')
    .argument('[id...]', 'adapter id (activate, remove, promote); combine: ID[:WEIGHT]... served together')
    .option('--repo <dir>', 'repository (default: the one around the current folder)')
    .option('--registry <dir>', 'registry folder, absolute or relative to the repository (default .idiom)')
    .option('--mode <mode>', `mode to act on: ${MODES.join(', ')}`, 'complete')
    .option('--force', 'activate without a better held-out loss (promote); remove an active adapter (remove)')
    .option('--out <file>', 'report: where the page goes (default <registry>/reports/adapters.html)')
    .option('--json', 'print one JSON object on stdout')
    .option('--clear', 'combine: serve the active adapter again')
    .option('--remote <name>', `publish, fetch: the git remote to share through (default ${DEFAULT_REMOTE})`)
    .action(
      async (actionText: string, ids: string[], options: AdaptersOptions & ShareOptions & { clear?: boolean }) => {
        if (actionText === 'combine') {
          const combined = await runCombineCommand(ids, options);
          process.stdout.write(options.json ? `${JSON.stringify(combined)}\n` : formatCombine(combined));
          return;
        }
        if (ids.length > 1) throw new Error(`adapters ${actionText} takes one id (got ${ids.join(' ')})`);
        const id = ids[0] as string | undefined;
        if (actionText === 'publish' || actionText === 'fetch') {
          const shared = await runShare(actionText, id, options);
          process.stdout.write(options.json ? `${JSON.stringify(shared)}\n` : formatShare(shared));
          return;
        }
        const result = await runAdapters(actionText, id, options);
        if (options.json) process.stdout.write(`${JSON.stringify(result)}\n`);
        else process.stdout.write(formatHuman(result));
      },
    );
  registerAdaptersExportCommand(adapters);
}

export interface AdaptersCommandResult {
  action: Action;
  mode: Mode;
  registry: string;
  /** What changed (activate / rollback / remove / promote). */
  change?: Record<string, unknown>;
  /** The page `report` wrote. */
  report?: string;
  adapters: Array<
    Pick<
      AdapterEntry,
      'id' | 'created' | 'active' | 'activeModes' | 'mode' | 'kind' | 'metrics' | 'parent' | 'path' | 'training'
    > & {
      /** `LoRA r16 · 1a2b3c4 · 2 h ago`. */
      label: string;
      /** What users did with its suggestions (.idiom/stats.jsonl). */
      acceptance: Acceptance;
      problem?: string;
      /** [id, parent, grandparent, …] for an adapter continued with `idiom train --from`. */
      lineage?: string[];
    }
  >;
  /** The base model alone's suggestions, and damaged stats lines skipped. */
  stats: { base: Acceptance; skippedLines: number };
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
  if (action === 'report' && !options.out && !fs.existsSync(location))
    throw new Error(`no adapter registry at ${location} (train one with \`idiom train\`, or give --out)`);
  if ((action === 'list' || action === 'report') && !fs.existsSync(location))
    return {
      action,
      mode,
      registry: location,
      ...(action === 'report'
        ? { report: writeReport(options.out!, await registryTimelineHtml(repo, options.registry)) }
        : {}),
      adapters: [],
      stats: { base: emptyAcceptance(), skippedLines: 0 },
    };

  // Listing and the report only read the registry: they create, lock and tidy nothing in it.
  const readOnly = action === 'list' || action === 'report';
  const registry = await Registry.open(repo, { location: options.registry, readOnly });
  let change: Record<string, unknown> | undefined;
  switch (action) {
    case 'list':
    case 'report':
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
  const stats = readStats(registry.dir);
  const now = Date.now();
  const adapters = (await registry.list()).map((entry) => ({
    id: entry.id,
    label: entry.label ? labelWithAge(entry.label, entry.created, now) : '',
    created: entry.created,
    active: entry.active,
    activeModes: entry.activeModes,
    mode: entry.mode,
    kind: entry.kind,
    metrics: entry.metrics,
    parent: entry.parent,
    path: entry.path,
    training: entry.training,
    acceptance: stats.byAdapter.get(entry.id) ?? emptyAcceptance(),
    ...(entry.problem ? { problem: entry.problem } : {}),
  }));
  await flagBrokenActive(registry, adapters);
  const parents = new Map(adapters.map((adapter) => [adapter.id, adapter.parent]));
  for (const adapter of adapters as ListedAdapter[])
    if (adapter.parent) adapter.lineage = lineageOf(adapter.id, parents);
  const report =
    action === 'report'
      ? writeReport(
          options.out ?? path.join(registry.dir, 'reports', 'adapters.html'),
          await registryTimelineHtml(repo, options.registry, now),
        )
      : undefined;
  return {
    action,
    mode,
    registry: registry.dir,
    ...(change ? { change } : {}),
    ...(report ? { report } : {}),
    adapters,
    stats: { base: stats.byAdapter.get(BASE_KEY) ?? emptyAcceptance(), skippedLines: stats.skipped },
  };
}

function writeReport(file: string, html: string): string {
  const target = path.resolve(file);
  fs.mkdirSync(path.dirname(target), { recursive: true });
  writeTextAtomically(target, html);
  return target;
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
        label: '',
        acceptance: emptyAcceptance(),
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
  if (result.report) lines.push(`wrote ${result.report}`);
  if (result.adapters.length === 0) {
    lines.push(`no adapters in ${result.registry} (train one with \`idiom train\`)`);
    return `${lines.join('\n')}\n`;
  }
  const rows = [['ID', 'VERSION', 'MODE', 'ACTIVE FOR', 'LOSS', 'VS BASE', 'REPLAY', 'SHOWN', 'ACCEPTED', 'CHARS']];
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  const acceptance = (a: Acceptance) => [
    String(a.shown),
    a.rate === null ? '-' : `${a.accepted} (${pct(a.rate)})`,
    String(a.acceptedChars),
  ];
  for (const a of result.adapters) {
    const m = a.metrics?.adapter;
    const relative = relativeLoss(m?.loss ?? null, a.metrics?.base?.loss ?? null);
    const replay = a.metrics?.quality?.candidate.acceptedCharShare;
    rows.push(
      [
        a.id,
        a.problem ? 'UNUSABLE' : a.label || '?',
        a.mode,
        a.activeModes.join(',') || '-',
        m ? m.loss.toFixed(4) : '-',
        relative === null ? '-' : `${relative > 0 ? '+' : ''}${pct(relative)}`,
        replay === undefined ? '-' : pct(replay),
        ...acceptance(a.acceptance),
      ].map(oneLine),
    );
  }
  if (result.stats.base.shown > 0)
    rows.push(['base', 'the base model alone', '', '', '', '', '', ...acceptance(result.stats.base)]);
  const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => row[column].length)));
  for (const row of rows)
    lines.push(
      row
        .map((cell, column) => cell.padEnd(widths[column]))
        .join('  ')
        .trimEnd(),
    );
  if (result.stats.skippedLines > 0)
    lines.push(`note: ${result.stats.skippedLines} damaged line(s) of stats.jsonl skipped`);
  for (const a of result.adapters) if (a.lineage) lines.push(`lineage: ${formatLineage(a.lineage)}`);
  for (const a of result.adapters) {
    if (a.problem)
      lines.push(
        `${a.activeModes.length > 0 ? 'warning: active ' : ''}${a.id} is unusable: ${oneLine(a.problem)}${a.activeModes.length > 0 ? ' (the base model serves instead)' : ''}`,
      );
  }
  return `${lines.join('\n')}\n`;
}
