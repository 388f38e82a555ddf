// The repository's adapter registry (trainer/registry) as the server uses it: summaries for the
// client, and what serves a mode on top of the loaded base model. Reading never creates .idiom/.

import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  findRepoRoot,
  loadActive,
  loadAdapterFolder,
  loadById,
  Registry,
  REGISTRY_FILE,
  registryLocation,
  type AdapterEntry,
} from '../../trainer/adapters/registry';
import { readStats, type Acceptance } from '../../trainer/adapters/stats';
import type { AdapterSummary, Mode } from '../protocol';
import type { LoadedModel, ServingWeights } from './host';

export function adapterSummary(entry: AdapterEntry, acceptance?: Acceptance): AdapterSummary {
  // trainRepository writes <registry>/reports/<id>.html next to <registry>/adapters/<id>.
  const report = path.join(path.dirname(path.dirname(entry.path)), 'reports', `${entry.id}.html`);
  return {
    id: entry.id,
    created: entry.created,
    mode: entry.mode,
    active: entry.active,
    activeModes: entry.activeModes,
    path: entry.path,
    parent: entry.parent,
    metrics: entry.metrics,
    training: entry.training,
    ...(entry.label ? { label: entry.label } : {}),
    ...(acceptance ? { acceptance } : {}),
    ...(fs.existsSync(report) ? { report } : {}),
    ...(entry.problem ? { problem: entry.problem } : {}),
  };
}

/** One line, whatever the error carried. */
export function oneLine(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text.replace(/\s*\n\s*/g, ' ').trim();
}

export type ServingChoice = { weights: ServingWeights; adapter: AdapterSummary | null; problem: string | null };

export class RepositoryAdapters {
  private opened: Promise<Registry> | null = null;

  constructor(readonly repoRoot: string) {}

  static forFolder(folder: string): RepositoryAdapters {
    return new RepositoryAdapters(findRepoRoot(path.resolve(folder)));
  }

  get exists(): boolean {
    return fs.existsSync(registryLocation(this.repoRoot));
  }

  /**
   * Calls `onChange` when registry.json changes (another process: `idiom adapters activate`, a
   * training run in a terminal). Polls its stat: the file is replaced by rename, which fs.watch
   * loses track of.
   */
  watch(onChange: () => void, intervalMs = 1000): { dispose(): void } {
    const file = path.join(registryLocation(this.repoRoot), REGISTRY_FILE);
    const listener = (current: fs.Stats, previous: fs.Stats) => {
      if (current.mtimeMs !== previous.mtimeMs || current.ino !== previous.ino) onChange();
    };
    fs.watchFile(file, { interval: intervalMs, persistent: false }, listener);
    return { dispose: () => fs.unwatchFile(file, listener) };
  }

  /**
   * The registry; created on first use only when `create` (training, activation). Otherwise it is
   * opened read-only, so reading (all an untrusted workspace does) creates, locks and deletes nothing.
   */
  async registry(create: boolean): Promise<Registry | null> {
    if (!create && this.opened === null) return this.exists ? Registry.open(this.repoRoot, { readOnly: true }) : null;
    this.opened ??= Registry.open(this.repoRoot).catch((error: unknown) => {
      this.opened = null;
      throw error;
    });
    return this.opened;
  }

  /** The registry folder when it exists as a real folder (not a link): where stats.jsonl is written. */
  writableRegistryDir(): string | null {
    const dir = registryLocation(this.repoRoot);
    return fs.lstatSync(dir, { throwIfNoEntry: false })?.isDirectory() ? dir : null;
  }

  async list(): Promise<AdapterSummary[]> {
    const registry = await this.registry(false);
    if (!registry) return [];
    const stats = readStats(registry.dir);
    return (await registry.list()).map((entry) => adapterSummary(entry, stats.byAdapter.get(entry.id)));
  }

  async summary(id: string): Promise<AdapterSummary | null> {
    return (await this.list()).find((adapter) => adapter.id === id) ?? null;
  }

  /**
   * What should serve `mode` on top of `model`: the active adapter, or the base with the reason
   * when the active one cannot be loaded (missing, corrupt, trained for another base).
   */
  async servingFor(model: LoadedModel, mode: Mode, pinned: string | null = null): Promise<ServingChoice> {
    if (pinned === 'none') return { weights: { kind: 'base' }, adapter: null, problem: null };
    if (pinned !== null && path.isAbsolute(pinned)) {
      // An adapter folder outside the registry: a candidate replayed before it is added.
      try {
        const { model: folder, entry } = await loadAdapterFolder(pinned, {
          config: model.config,
          sha256: model.baseSha256,
        });
        const weights: ServingWeights =
          folder.kind === 'lora'
            ? { kind: 'lora', id: entry.id, adapter: folder.adapter }
            : { kind: 'full', id: entry.id, dir: folder.model.dir };
        return { weights, adapter: adapterSummary(entry), problem: null };
      } catch (error) {
        return {
          weights: { kind: 'base' },
          adapter: null,
          problem: `cannot load adapter folder ${pinned}: ${oneLine(error)}; serving the base model`,
        };
      }
    }
    const registry = await this.registry(false);
    if (!registry)
      return {
        weights: { kind: 'base' },
        adapter: null,
        problem: pinned ? `no adapter registry for pinned adapter ${pinned}; serving the base model` : null,
      };
    let activeId: string | null = null;
    try {
      if (pinned !== null) {
        activeId = pinned;
        const pinnedModel = await loadById(registry, pinned, { config: model.config, sha256: model.baseSha256 });
        const weights: ServingWeights =
          pinnedModel.kind === 'lora'
            ? { kind: 'lora', id: pinned, adapter: pinnedModel.adapter }
            : { kind: 'full', id: pinned, dir: pinnedModel.model.dir };
        return { weights, adapter: await this.summary(pinned), problem: null };
      }
      activeId = await registry.activeId(mode);
      // Review reads with the repository adapter when none was trained for review itself.
      let servingMode = mode;
      if (activeId === null && mode === 'review') {
        servingMode = 'complete';
        activeId = await registry.activeId(servingMode);
      }
      if (activeId === null) return { weights: { kind: 'base' }, adapter: null, problem: null };
      const active = await loadActive(registry, servingMode, { config: model.config, sha256: model.baseSha256 });
      if (!active) return { weights: { kind: 'base' }, adapter: null, problem: null };
      const weights: ServingWeights =
        active.kind === 'lora'
          ? { kind: 'lora', id: active.id, adapter: active.adapter }
          : { kind: 'full', id: active.id, dir: active.model.dir };
      return { weights, adapter: await this.summary(active.id), problem: null };
    } catch (error) {
      const which = activeId ? `adapter ${activeId} (active for ${mode})` : `the adapter registry (${mode})`;
      return {
        weights: { kind: 'base' },
        adapter: null,
        problem: `cannot load ${which}: ${oneLine(error)}; serving the base model`,
      };
    }
  }
}
