// Several LoRA adapters of the registry serving one mode together (trainer/adapters/combine.ts):
// which combination a mode serves, loading it on top of the base, and idiom/combineAdapters. The
// combined adapter is one LoRA of rank Σ r_i; the decoding graph's rank is symbolic, so it is a
// feed, not a new session.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { ResponseError, type Connection } from 'vscode-languageserver';
import { checkCombinable, combinationLabel, combineAdapters, type AdapterWeight } from '../../trainer/adapters/combine';
import { COMBINATIONS_FILE, readCombinations } from '../../trainer/adapters/combinations';
import { loadById, registryLocation } from '../../trainer/adapters/registry';
import { requireParams } from '../params';
import {
  CombineAdaptersRequest,
  IdiomErrorCodes,
  type Combination,
  type CombineAdaptersParams,
  type CombineAdaptersResult,
  type Mode,
  type StatusResult,
} from '../protocol';
import { oneLine, type RepositoryAdapters, type ServingChoice } from './adapters';
import type { LoadedModel, ServingWeights } from './host';

type PerMode = Partial<Record<Mode, readonly AdapterWeight[]>>;

/**
 * Loads `parts` from the registry against the base in `model` and combines them; one line when
 * they cannot be (an unknown id, a full fine-tune, another base or architecture).
 */
export async function loadCombination(
  adapters: RepositoryAdapters,
  model: LoadedModel,
  parts: readonly AdapterWeight[],
): Promise<{ weights: ServingWeights; label: string }> {
  const registry = await adapters.registry(false);
  if (!registry) throw new Error(`no adapter registry in ${adapters.repoRoot} (train an adapter first)`);
  const entries = await registry.list();
  const candidates = parts.map((part) => {
    const entry = entries.find((e) => e.id === part.id);
    if (!entry) throw new Error(`no adapter ${part.id} in ${registry.adaptersDir}`);
    if (entry.problem) throw new Error(`adapter ${part.id} is unusable: ${entry.problem}`);
    return { ...part, kind: entry.kind, base: entry.base };
  });
  checkCombinable(candidates);
  const base = { config: model.config, sha256: model.baseSha256 };
  const loaded = [];
  for (const part of parts) {
    const one = await loadById(registry, part.id, base);
    if (one.kind !== 'lora') throw new Error(`adapter ${part.id} is a full fine-tune; only LoRA adapters combine`);
    loaded.push({ ...part, adapter: one.adapter });
  }
  const combined = combineAdapters(loaded);
  return { weights: { kind: 'lora', id: combined.label, adapter: combined.adapter }, label: combined.label };
}

/** What the server tells this module: its state, and how to serve again. */
export interface CombinationHost {
  mode(): Mode;
  /** The `idiom.adapters` setting. */
  setting(): PerMode | undefined;
  trusted(): boolean;
  adapters(): RepositoryAdapters | null;
  model(): LoadedModel | null;
  /** Puts what the current mode serves on the model again; resolves once it serves. */
  reload(): Promise<void>;
  status(): StatusResult;
}

/** This session's combinations (idiom/combineAdapters) and the choice among the three sources. */
export class SessionCombinations {
  private readonly session: Record<string, AdapterWeight[]> = {};

  constructor(private readonly host: CombinationHost) {}

  /**
   * What `mode` combines, first found: this session's choice, the `idiom.adapters` setting, the
   * registry's combinations.json. Null: no combination (the active adapter serves).
   */
  chosen(mode: Mode): Omit<Combination, 'label'> | null {
    const fromSession = this.session[mode];
    if (fromSession && fromSession.length > 0) return { adapters: fromSession, source: 'session' };
    const fromSetting = this.host.setting()?.[mode];
    if (Array.isArray(fromSetting) && fromSetting.length > 0)
      return { adapters: fromSetting.map((p) => ({ id: p.id, weight: p.weight ?? 1 })), source: 'setting' };
    const adapters = this.host.adapters();
    if (!adapters?.exists) return null;
    const fromRegistry = readCombinations(registryLocation(adapters.repoRoot))[mode];
    return fromRegistry ? { adapters: fromRegistry, source: 'registry' } : null;
  }

  /**
   * The combination `mode` serves on `model`, loaded; null when none is chosen. One that cannot be
   * loaded serves the base, with the reason as the problem.
   */
  async servingFor(
    model: LoadedModel,
    mode: Mode,
  ): Promise<{ choice: ServingChoice; combination: Combination | null } | null> {
    const adapters = this.host.adapters();
    if (!adapters || !this.host.trusted()) return null;
    let chosen: Omit<Combination, 'label'> | null = null;
    try {
      chosen = this.chosen(mode);
      if (!chosen) return null;
      const { weights, label } = await loadCombination(adapters, model, chosen.adapters);
      return { choice: { weights, adapter: null, problem: null }, combination: { ...chosen, label } };
    } catch (error) {
      const what = chosen
        ? `combine ${combinationLabel(chosen.adapters)} (from the ${chosen.source})`
        : 'read the adapter combination';
      return {
        choice: {
          weights: { kind: 'base' },
          adapter: null,
          problem: `cannot ${what}: ${oneLine(error)}; serving the base model`,
        },
        combination: null,
      };
    }
  }

  /** Reloads when combinations.json changes (`idiom adapters combine` in a terminal). */
  watch(adapters: RepositoryAdapters, onChange: () => void, intervalMs = 1000): { dispose(): void } {
    const file = path.join(registryLocation(adapters.repoRoot), COMBINATIONS_FILE);
    const listener = (current: fs.Stats, previous: fs.Stats) => {
      if (current.mtimeMs !== previous.mtimeMs || current.ino !== previous.ino) onChange();
    };
    fs.watchFile(file, { interval: intervalMs, persistent: false }, listener);
    return { dispose: () => fs.unwatchFile(file, listener) };
  }

  /** idiom/combineAdapters: a combination is loaded once before it is set, so a refused one changes nothing. */
  register(connection: Connection): void {
    connection.onRequest(CombineAdaptersRequest, async (raw): Promise<CombineAdaptersResult> => {
      const params = requireParams<CombineAdaptersParams | null>('idiom/combineAdapters', raw) ?? {};
      const mode = params.mode ?? this.host.mode();
      if (params.adapters !== undefined && params.adapters !== null) {
        const parts = params.adapters.map((part) => ({ id: part.id, weight: part.weight ?? 1 }));
        if (parts.length > 0) await this.check(parts);
        this.session[mode] = parts;
        if (mode === this.host.mode()) await this.host.reload();
      }
      const status = this.host.status();
      let combination: Combination | null;
      if (mode === this.host.mode()) combination = status.combination ?? null;
      else {
        const chosen = this.chosenOrNull(mode);
        combination = chosen ? { ...chosen, label: combinationLabel(chosen.adapters) } : null;
      }
      return { mode, combination, status };
    });
  }

  private async check(parts: AdapterWeight[]): Promise<void> {
    if (!this.host.trusted())
      throw new ResponseError(IdiomErrorCodes.untrusted, 'adapters are not served in an untrusted workspace');
    const adapters = this.host.adapters();
    if (!adapters)
      throw new ResponseError(IdiomErrorCodes.noWorkspace, 'open a folder: adapters belong to a repository');
    const model = this.host.model();
    if (!model) throw new ResponseError(IdiomErrorCodes.noModel, 'no base model is loaded to combine adapters on');
    try {
      await loadCombination(adapters, model, parts);
    } catch (error) {
      throw new ResponseError(IdiomErrorCodes.invalidParams, oneLine(error));
    }
  }

  private chosenOrNull(mode: Mode): Omit<Combination, 'label'> | null {
    try {
      return this.chosen(mode);
    } catch {
      return null;
    }
  }
}
