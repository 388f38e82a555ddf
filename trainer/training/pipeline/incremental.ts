import type { AdapterManifest } from '../../adapters/manifest';
import type { Mode } from '../../adapters/mode';
import { loadAdapter, peftTensorsOf } from '../../adapters/peft';
import type { Registry } from '../../adapters/registry';
import { DatasetReader } from '../../data/dataset/reader';
import { pathsChangedBetween } from '../../data/mining/git';
import type { ModelConfig } from '../../model/config';
import { DEFAULT_LORA, type LoraConfig } from '../../model/lora';
import { Rng } from '../../model/random';
import type { HostTensor } from '../../model/tensor';
import type { TrainExample } from './batches';

// `idiom train --from <id|active>`: continue a parent LoRA adapter. Training starts from the
// parent's A and B (same base, architecture, rank, alpha and targets: anything else is refused in
// one line) and reads the training files changed since the parent's commit, plus a replay sample of
// the older ones. The held-out split and the promotion rule are those of any run.

/**
 * Tokens of older training rows replayed per token of changed ones. Rows from changed files alone
 * pull the adapter towards a few files and it forgets the rest of the repository (catastrophic
 * forgetting); one older token per changed token keeps both at equal weight while the budget
 * still goes mostly to what the parent never saw.
 */
export const REPLAY_RATIO = 1;

/** What a run records of its parent (run.json keeps it, so --resume continues the same way). */
export interface ParentRef {
  id: string;
  /** The parent's training commit (manifest repo.head). */
  head: string | null;
  dir: string;
}

/**
 * The adapter `from` names ('active': the one active for `mode`), checked against this run: a LoRA
 * adapter on the same base with the LoRA settings given (those not given are the parent's).
 * Returns the parent and the LoRA settings the run trains with.
 */
export async function resolveParent(
  registry: Registry,
  from: string,
  run: { mode: Mode; method: 'lora' | 'full'; baseSha256: string; lora?: Partial<LoraConfig> },
): Promise<{ parent: ParentRef; lora: LoraConfig }> {
  let id = from;
  if (from === 'active') {
    const active = await registry.activeId(run.mode);
    if (active === null) throw new Error(`--from active: no adapter is active for ${run.mode} to continue from`);
    id = active;
  }
  if (!(await registry.has(id)))
    throw new Error(`--from ${id}: no such adapter in ${registry.dir} (see \`idiom adapters\`)`);
  let manifest: AdapterManifest;
  try {
    manifest = await registry.manifest(id);
  } catch (error) {
    throw new Error(`--from ${id}: unreadable manifest (${error instanceof Error ? error.message : String(error)})`);
  }
  if (run.method !== 'lora' || manifest.training.method !== 'lora')
    throw new Error(
      `--from ${id}: continuing needs LoRA on both sides (parent ${manifest.training.method}, this run ${run.method})`,
    );
  if (manifest.base.sha256 !== run.baseSha256)
    throw new Error(
      `--from ${id}: trained on base ${manifest.base.name} (sha256 ${manifest.base.sha256.slice(0, 12)}), this run's base has sha256 ${run.baseSha256.slice(0, 12)}`,
    );
  const h = manifest.training.hyperparameters;
  const parentLora: LoraConfig = {
    r: Number(h.r ?? DEFAULT_LORA.r),
    alpha: Number(h.alpha ?? DEFAULT_LORA.alpha),
    targets: (Array.isArray(h.targets) ? h.targets : DEFAULT_LORA.targets) as LoraConfig['targets'],
  };
  const given = run.lora ?? {};
  const differs: string[] = [];
  if (given.r !== undefined && given.r !== parentLora.r) differs.push(`rank ${given.r} vs ${parentLora.r}`);
  if (given.alpha !== undefined && given.alpha !== parentLora.alpha)
    differs.push(`alpha ${given.alpha} vs ${parentLora.alpha}`);
  if (given.targets !== undefined && [...given.targets].sort().join(',') !== [...parentLora.targets].sort().join(','))
    differs.push(`targets ${given.targets.join(',')} vs ${parentLora.targets.join(',')}`);
  if (differs.length > 0)
    throw new Error(`--from ${id}: LoRA settings differ from the parent's (${differs.join('; ')})`);
  return { parent: { id, head: manifest.repo.head, dir: registry.adapterPath(id) }, lora: parentLora };
}

/** The parent's A and B with PEFT keys, checked against the base (architecture, weights hash). */
export async function parentWeights(
  parent: ParentRef,
  config: ModelConfig,
  baseSha256: string,
): Promise<Map<string, HostTensor>> {
  try {
    return peftTensorsOf(await loadAdapter(parent.dir, config, { baseSha256 }));
  } catch (error) {
    throw new Error(`--from ${parent.id}: ${error instanceof Error ? error.message : String(error)}`);
  }
}

/** Paths added or modified between `since` and `head`; null when `since` is not in the repository. */
async function changedPaths(root: string, since: string, head: string): Promise<Set<string> | null> {
  const paths = await pathsChangedBetween(root, since, head);
  return paths === null ? null : new Set(paths);
}

export interface IncrementalSelection {
  examples: TrainExample[];
  /** Training rows of files changed since the parent's commit. */
  changed: { files: number; examples: number; tokens: number };
  replay: { examples: number; tokens: number };
  /** Why every training row is used instead (nothing changed outside the held-out split …). */
  note: string | null;
}

/**
 * The training rows of the run's dataset for a continued adapter: every row of a file changed
 * since the parent's commit, and older rows drawn at random (seeded) up to REPLAY_RATIO times their
 * tokens. When no training file changed (the changes all fell in the held-out split, or the
 * parent's commit is unknown here) every row is used, and `note` says why.
 */
export async function incrementalExamples(
  datasetPath: string,
  root: string,
  parent: ParentRef,
  seed: number,
): Promise<IncrementalSelection> {
  const reader = DatasetReader.open(datasetPath);
  try {
    const head = reader.header.repo.head;
    const changed = parent.head && head ? await changedPaths(root, parent.head, head) : null;
    const fresh: TrainExample[] = [];
    const older: TrainExample[] = [];
    const freshFiles = new Set<number>();
    for (const example of reader.examples('train')) {
      const row = { tokens: example.tokens, lossStart: example.record.lossStart };
      const path = reader.header.files[example.record.file]?.path;
      if (changed && path !== undefined && changed.has(path)) {
        fresh.push(row);
        freshFiles.add(example.record.file);
      } else older.push(row);
    }
    const tokensOf = (rows: TrainExample[]) => rows.reduce((n, row) => n + row.tokens.length, 0);
    if (fresh.length === 0) {
      const note =
        changed === null
          ? `the parent's commit ${parent.head?.slice(0, 12) ?? '(none)'} is not in this repository`
          : changed.size === 0
            ? `nothing changed since the parent's commit ${parent.head?.slice(0, 12)}`
            : 'every file changed since the parent is in the held-out split';
      return {
        examples: older,
        changed: { files: 0, examples: 0, tokens: 0 },
        replay: { examples: older.length, tokens: tokensOf(older) },
        note: `${note}: training on every file from the parent's weights`,
      };
    }
    const freshTokens = tokensOf(fresh);
    const rng = new Rng(seed);
    const order = older.map((_, i) => i);
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(rng.next() * (i + 1));
      [order[i], order[j]] = [order[j], order[i]];
    }
    const replay: TrainExample[] = [];
    let replayTokens = 0;
    for (const i of order) {
      if (replayTokens >= REPLAY_RATIO * freshTokens) break;
      replay.push(older[i]);
      replayTokens += older[i].tokens.length;
    }
    return {
      examples: [...fresh, ...replay],
      changed: { files: freshFiles.size, examples: fresh.length, tokens: freshTokens },
      replay: { examples: replay.length, tokens: replayTokens },
      note: null,
    };
  } finally {
    reader.close();
  }
}
