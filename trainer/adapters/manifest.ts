// manifest.json: Idiom's provenance record of one trained adapter (or full fine-tune). It says which
// base it was trained on (by the sha256 of the weights), from which repository state and data,
// how, with what result on the held-out split, and the sha256 of its own weights, so a loader can
// refuse an adapter that does not belong to the loaded base or whose weights changed on disk.

import { createHash } from 'node:crypto';
import { MODES, type Mode } from './mode';

export const MANIFEST_FILE = 'manifest.json';
export const MANIFEST_SCHEMA_VERSION = 1;

export type TrainingMethod = 'lora' | 'full';

/** Held-out metrics of one model (the base alone, or base + adapter) on the temporal split. */
export interface HeldOutMetrics {
  /** Mean next-token cross-entropy, nats. */
  loss: number;
  perplexity: number;
  bitsPerByte: number;
  /** Next-line completion, fraction of lines completed exactly (0..1). */
  exactMatch: number;
  /** Next-line completion, mean normalized edit similarity (0..1). */
  editSimilarity: number;
  /** Optional sizes of the split the numbers come from. */
  tokens?: number;
  bytes?: number;
  lines?: number;
}

/** What a user sees on replayed held-out lines (training/eval/replay.ts), shares of all points (0..1). */
export interface ReplayScore {
  shown: number;
  exactMatch: number;
  acceptedCharShare: number;
  precision: number;
}

/** The candidate against what served before it (the active adapter, or the base), on the same points. */
export interface QualityComparison {
  lines: number;
  points: number;
  seed: number;
  candidate: ReplayScore;
  /** 'base', or the id of the adapter that was active. */
  reference: { name: string; score: ReplayScore };
}

/**
 * The memorisation check before promotion (training/eval/memorisation.ts): random canaries planted
 * in the training examples, and prompts cut before credential-shaped text in the training files.
 */
export interface MemorisationMetrics {
  /** Canaries planted, and how often each was repeated. */
  canaries: number;
  repeats: number;
  /** Random candidates of the same format each canary was ranked among (exposure at most log2(candidates + 1)). */
  candidates: number;
  /** Exposure of each canary, bits (Carlini et al. 2019). */
  exposures: number[];
  maxExposure: number;
  /** Exposure of each canary extrapolated past the candidates from a normal fit of their NLLs, bits. */
  estimatedExposures?: number[];
  /** Canaries greedy decoding wrote out whole from their context. */
  reproduced: number;
  /** Prompts cut from training files before credential-shaped text, and completions that wrote a credential. */
  extractionPrompts: number;
  extractionHits: number;
}

export type HyperparameterValue = string | number | boolean | null | readonly string[] | readonly number[];

export interface AdapterManifest {
  schemaVersion: typeof MANIFEST_SCHEMA_VERSION;
  /** Sortable and unique: `YYYYMMDD-HHMMSS-<first 6 hex of the weights' sha256>` (UTC). */
  id: string;
  /** ISO 8601, UTC. */
  created: string;
  base: {
    /** Model name (HF id or folder name). */
    name: string;
    /** sha256 of the base weight files, as loadCheckpoint computes it. */
    sha256: string;
  };
  repo: {
    root: string;
    /** Commit the data was mined at; null in a repository without commits. */
    head: string | null;
    /** Uncommitted changes were present when mining. */
    dirty: boolean;
  };
  dataset: {
    files: number;
    examples: number;
    tokens: number;
    /** sha256 of the training data as the trainer saw it (dataset file or token stream). */
    sha256: string;
    /** Files left out, by reason (e.g. {"binary": 3, "too-long-lines": 1}). */
    excluded: Record<string, number>;
    secretsExcluded: number;
    /** The temporal held-out split, where one was made. */
    heldOut?: { commits: number; files: number; examples: number; tokens: number; sha256?: string };
  };
  training: {
    method: TrainingMethod;
    /** 'ort' (ONNX Runtime, our graphs) or 'torch'. */
    backend: string;
    /** e.g. 'cpu', 'cuda:0'. */
    device: string;
    steps: number;
    tokens: number;
    seconds: number;
    seed: number;
    /** Everything that shaped training: lr, weightDecay, warmup, schedule, batch, seqLen, r, alpha, targets… */
    hyperparameters: Record<string, HyperparameterValue>;
  };
  metrics: {
    base: HeldOutMetrics | null;
    adapter: HeldOutMetrics | null;
    /**
     * Other adapters (by id) evaluated on this adapter's held-out split, e.g. the one active when
     * it was trained; promotion prefers these numbers (same split) to the other's own manifest.
     */
    others?: Record<string, HeldOutMetrics>;
    /** Held-out lines replayed through the server; promotion also needs the candidate not to lose here. */
    quality?: QualityComparison;
    /** Canary exposure and extraction; promotion refuses an adapter that wrote a canary or a credential. */
    memorisation?: MemorisationMetrics;
  };
  /** The mode it was trained for. */
  mode: Mode;
  /** Free text: why it was trained (e.g. "nightly", "compliance: paths src/payments/**"). */
  purpose: string;
  /** Adapter id training started from, or null. */
  parent: string | null;
  weights: {
    /** File names relative to the adapter folder, in hashing order. */
    files: string[];
    /** sha256 of those files' bytes concatenated in that order. */
    sha256: string;
    bytes: number;
  };
}

/** Everything the trainer knows; writeAdapter fills in id, created, weights and the schema version. */
export type ManifestDraft = Omit<AdapterManifest, 'schemaVersion' | 'id' | 'created' | 'weights'> & {
  id?: string;
  created?: string;
};

const ID_PATTERN = /^\d{8}-\d{6}-[0-9a-f]{6}(?:-[0-9a-z]+)?$/;
const SHA256_PATTERN = /^[0-9a-f]{64}$/;

/** `20261128-130501-ab12cd`: UTC time of `created`, then the first 6 hex digits of the weights' sha256. */
export function makeAdapterId(created: Date, weightsSha256: string): string {
  if (!SHA256_PATTERN.test(weightsSha256))
    throw new Error(`adapter id: weights sha256 must be 64 hex digits, got "${weightsSha256}"`);
  const pad = (n: number, width = 2): string => String(n).padStart(width, '0');
  const date = `${pad(created.getUTCFullYear(), 4)}${pad(created.getUTCMonth() + 1)}${pad(created.getUTCDate())}`;
  const time = `${pad(created.getUTCHours())}${pad(created.getUTCMinutes())}${pad(created.getUTCSeconds())}`;
  return `${date}-${time}-${weightsSha256.slice(0, 6)}`;
}

/** Ids are also folder names: this is what the registry accepts (no separators, no dot-dot). */
export function isAdapterId(id: string): boolean {
  return ID_PATTERN.test(id);
}

export function sha256Hex(bytes: Uint8Array | string): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Validates a parsed manifest.json; `source` names the file in the one-line error. */
export function parseManifest(json: unknown, source = MANIFEST_FILE): AdapterManifest {
  const v = new Validator(source);
  const root = v.object(json, '');
  const version = root.schemaVersion;
  if (version === undefined) v.fail('schemaVersion', 'missing (not an Idiom manifest?)');
  if (version !== MANIFEST_SCHEMA_VERSION) {
    v.fail('schemaVersion', `is ${JSON.stringify(version)}; this Idiom reads schema ${MANIFEST_SCHEMA_VERSION}`);
  }
  const id = v.string(root.id, 'id');
  if (!isAdapterId(id)) v.fail('id', `"${id}" is not an adapter id (expected e.g. 20261128-130501-ab12cd)`);
  const created = v.string(root.created, 'created');
  if (Number.isNaN(Date.parse(created))) v.fail('created', `"${created}" is not an ISO 8601 date`);

  const base = v.object(root.base, 'base');
  const repo = v.object(root.repo, 'repo');
  const dataset = v.object(root.dataset, 'dataset');
  const training = v.object(root.training, 'training');
  const metrics = v.object(root.metrics, 'metrics');
  const weights = v.object(root.weights, 'weights');

  const manifest: AdapterManifest = {
    schemaVersion: MANIFEST_SCHEMA_VERSION,
    id,
    created,
    base: { name: v.string(base.name, 'base.name'), sha256: v.sha256(base.sha256, 'base.sha256') },
    repo: {
      root: v.string(repo.root, 'repo.root'),
      head: repo.head === null ? null : v.string(repo.head, 'repo.head'),
      dirty: v.boolean(repo.dirty, 'repo.dirty'),
    },
    dataset: {
      files: v.count(dataset.files, 'dataset.files'),
      examples: v.count(dataset.examples, 'dataset.examples'),
      tokens: v.count(dataset.tokens, 'dataset.tokens'),
      sha256: v.sha256(dataset.sha256, 'dataset.sha256'),
      excluded: v.counts(dataset.excluded, 'dataset.excluded'),
      secretsExcluded: v.count(dataset.secretsExcluded, 'dataset.secretsExcluded'),
    },
    training: {
      method: v.oneOf(training.method, 'training.method', ['lora', 'full'] as const),
      backend: v.string(training.backend, 'training.backend'),
      device: v.string(training.device, 'training.device'),
      steps: v.count(training.steps, 'training.steps'),
      tokens: v.count(training.tokens, 'training.tokens'),
      seconds: v.nonNegative(training.seconds, 'training.seconds'),
      seed: v.integer(training.seed, 'training.seed'),
      hyperparameters: v.hyperparameters(training.hyperparameters, 'training.hyperparameters'),
    },
    metrics: {
      base: v.metricsOrNull(metrics.base, 'metrics.base'),
      adapter: v.metricsOrNull(metrics.adapter, 'metrics.adapter'),
    },
    mode: v.oneOf(root.mode, 'mode', MODES),
    purpose: v.string(root.purpose, 'purpose', true),
    parent: root.parent === null || root.parent === undefined ? null : v.string(root.parent, 'parent'),
    weights: {
      files: v.fileNames(weights.files, 'weights.files'),
      sha256: v.sha256(weights.sha256, 'weights.sha256'),
      bytes: v.count(weights.bytes, 'weights.bytes'),
    },
  };
  if (dataset.heldOut !== undefined && dataset.heldOut !== null) {
    const heldOut = v.object(dataset.heldOut, 'dataset.heldOut');
    manifest.dataset.heldOut = {
      commits: v.count(heldOut.commits, 'dataset.heldOut.commits'),
      files: v.count(heldOut.files, 'dataset.heldOut.files'),
      examples: v.count(heldOut.examples, 'dataset.heldOut.examples'),
      tokens: v.count(heldOut.tokens, 'dataset.heldOut.tokens'),
    };
    if (heldOut.sha256 !== undefined)
      manifest.dataset.heldOut.sha256 = v.sha256(heldOut.sha256, 'dataset.heldOut.sha256');
  }
  if (metrics.others !== undefined && metrics.others !== null) {
    const others = v.object(metrics.others, 'metrics.others');
    manifest.metrics.others = {};
    for (const [otherId, value] of Object.entries(others)) {
      if (!isAdapterId(otherId)) v.fail(`metrics.others`, `key "${otherId}" is not an adapter id`);
      manifest.metrics.others[otherId] = v.metrics(value, `metrics.others.${otherId}`);
    }
  }
  if (metrics.quality !== undefined && metrics.quality !== null) {
    const quality = v.object(metrics.quality, 'metrics.quality');
    const reference = v.object(quality.reference, 'metrics.quality.reference');
    manifest.metrics.quality = {
      lines: v.count(quality.lines, 'metrics.quality.lines'),
      points: v.count(quality.points, 'metrics.quality.points'),
      seed: v.integer(quality.seed, 'metrics.quality.seed'),
      candidate: v.replayScore(quality.candidate, 'metrics.quality.candidate'),
      reference: {
        name: v.string(reference.name, 'metrics.quality.reference.name'),
        score: v.replayScore(reference.score, 'metrics.quality.reference.score'),
      },
    };
  }
  if (metrics.memorisation !== undefined && metrics.memorisation !== null)
    manifest.metrics.memorisation = v.memorisation(metrics.memorisation, 'metrics.memorisation');
  if (manifest.parent !== null && !isAdapterId(manifest.parent))
    v.fail('parent', `"${manifest.parent}" is not an adapter id`);
  return manifest;
}

/** Builds the final manifest from a draft once the weights are written and hashed. */
export function completeManifest(
  draft: ManifestDraft,
  weights: AdapterManifest['weights'],
  now: Date = new Date(),
): AdapterManifest {
  const created = draft.created ?? now.toISOString();
  const id = draft.id ?? makeAdapterId(new Date(created), weights.sha256);
  const { id: _id, created: _created, ...rest } = draft;
  const manifest: AdapterManifest = { schemaVersion: MANIFEST_SCHEMA_VERSION, id, created, ...rest, weights };
  // Validate what we are about to write, so a bad draft fails at the trainer, not at the next load.
  return parseManifest(JSON.parse(JSON.stringify(manifest)), 'manifest draft');
}

export function manifestJson(manifest: AdapterManifest): string {
  return `${JSON.stringify(manifest, null, 2)}\n`;
}

class Validator {
  constructor(private readonly source: string) {}

  fail(field: string, message: string): never {
    throw new Error(`${this.source}: ${field ? `field "${field}" ` : ''}${message}`);
  }

  object(value: unknown, field: string): Record<string, unknown> {
    if (value === undefined) this.fail(field, 'is missing');
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      this.fail(field, `must be a JSON object, got ${describe(value)}`);
    }
    return value as Record<string, unknown>;
  }

  string(value: unknown, field: string, allowEmpty = false): string {
    if (value === undefined) this.fail(field, 'is missing');
    if (typeof value !== 'string') this.fail(field, `must be a string, got ${describe(value)}`);
    if (!allowEmpty && (value as string).length === 0) this.fail(field, 'must not be empty');
    return value as string;
  }

  boolean(value: unknown, field: string): boolean {
    if (value === undefined) this.fail(field, 'is missing');
    if (typeof value !== 'boolean') this.fail(field, `must be true or false, got ${describe(value)}`);
    return value as boolean;
  }

  number(value: unknown, field: string): number {
    if (value === undefined) this.fail(field, 'is missing');
    if (typeof value !== 'number' || !Number.isFinite(value))
      this.fail(field, `must be a finite number, got ${describe(value)}`);
    return value as number;
  }

  nonNegative(value: unknown, field: string): number {
    const n = this.number(value, field);
    if (n < 0) this.fail(field, `must not be negative, got ${n}`);
    return n;
  }

  integer(value: unknown, field: string): number {
    const n = this.number(value, field);
    if (!Number.isSafeInteger(n)) this.fail(field, `must be an integer, got ${n}`);
    return n;
  }

  count(value: unknown, field: string): number {
    const n = this.integer(value, field);
    if (n < 0) this.fail(field, `must not be negative, got ${n}`);
    return n;
  }

  sha256(value: unknown, field: string): string {
    const text = this.string(value, field);
    if (!SHA256_PATTERN.test(text)) this.fail(field, `must be 64 lowercase hex digits, got ${describe(text)}`);
    return text;
  }

  oneOf<T extends string>(value: unknown, field: string, allowed: readonly T[]): T {
    const text = this.string(value, field);
    if (!allowed.includes(text as T)) this.fail(field, `must be one of ${allowed.join(', ')}, got "${text}"`);
    return text as T;
  }

  replayScore(value: unknown, field: string): ReplayScore {
    const object = this.object(value, field);
    const share = (key: keyof ReplayScore) => {
      const n = this.nonNegative(object[key], `${field}.${key}`);
      if (n > 1) this.fail(`${field}.${key}`, `must be a share between 0 and 1, got ${n}`);
      return n;
    };
    return {
      shown: share('shown'),
      exactMatch: share('exactMatch'),
      acceptedCharShare: share('acceptedCharShare'),
      precision: share('precision'),
    };
  }

  memorisation(value: unknown, field: string): MemorisationMetrics {
    const object = this.object(value, field);
    const canaries = this.count(object.canaries, `${field}.canaries`);
    const perCanary = (key: 'exposures' | 'estimatedExposures') => {
      if (!Array.isArray(object[key])) this.fail(`${field}.${key}`, `must be a list, got ${describe(object[key])}`);
      const values = (object[key] as unknown[]).map((x, i) => this.nonNegative(x, `${field}.${key}[${i}]`));
      if (values.length !== canaries)
        this.fail(`${field}.${key}`, `holds ${values.length} values for ${canaries} canaries`);
      return values;
    };
    const reproduced = this.count(object.reproduced, `${field}.reproduced`);
    if (reproduced > canaries) this.fail(`${field}.reproduced`, `is ${reproduced}, more than the ${canaries} canaries`);
    const extractionPrompts = this.count(object.extractionPrompts, `${field}.extractionPrompts`);
    const extractionHits = this.count(object.extractionHits, `${field}.extractionHits`);
    if (extractionHits > extractionPrompts)
      this.fail(`${field}.extractionHits`, `is ${extractionHits}, more than the ${extractionPrompts} prompts`);
    return {
      canaries,
      repeats: this.count(object.repeats, `${field}.repeats`),
      candidates: this.count(object.candidates, `${field}.candidates`),
      exposures: perCanary('exposures'),
      maxExposure: this.nonNegative(object.maxExposure, `${field}.maxExposure`),
      ...(object.estimatedExposures !== undefined ? { estimatedExposures: perCanary('estimatedExposures') } : {}),
      reproduced,
      extractionPrompts,
      extractionHits,
    };
  }

  counts(value: unknown, field: string): Record<string, number> {
    const object = this.object(value, field);
    const out: Record<string, number> = {};
    for (const [key, n] of Object.entries(object)) out[key] = this.count(n, `${field}.${key}`);
    return out;
  }

  fileNames(value: unknown, field: string): string[] {
    if (!Array.isArray(value) || value.length === 0)
      this.fail(field, `must be a non-empty list of file names, got ${describe(value)}`);
    return (value as unknown[]).map((item, i) => {
      const name = this.string(item, `${field}[${i}]`);
      if (name.includes('/') || name.includes('\\') || name === '.' || name === '..')
        this.fail(`${field}[${i}]`, `"${name}" must be a plain file name`);
      return name;
    });
  }

  hyperparameters(value: unknown, field: string): Record<string, HyperparameterValue> {
    const object = this.object(value, field);
    for (const [key, item] of Object.entries(object)) {
      const ok =
        item === null ||
        typeof item === 'string' ||
        typeof item === 'boolean' ||
        (typeof item === 'number' && Number.isFinite(item)) ||
        (Array.isArray(item) &&
          (item.every((x) => typeof x === 'string') || item.every((x) => typeof x === 'number' && Number.isFinite(x))));
      if (!ok)
        this.fail(
          `${field}.${key}`,
          `must be a string, number, boolean, null or a list of strings or numbers, got ${describe(item)}`,
        );
    }
    return object as Record<string, HyperparameterValue>;
  }

  metrics(value: unknown, field: string): HeldOutMetrics {
    const object = this.object(value, field);
    const metrics: HeldOutMetrics = {
      loss: this.nonNegative(object.loss, `${field}.loss`),
      perplexity: this.nonNegative(object.perplexity, `${field}.perplexity`),
      bitsPerByte: this.nonNegative(object.bitsPerByte, `${field}.bitsPerByte`),
      exactMatch: this.fraction(object.exactMatch, `${field}.exactMatch`),
      editSimilarity: this.fraction(object.editSimilarity, `${field}.editSimilarity`),
    };
    for (const key of ['tokens', 'bytes', 'lines'] as const) {
      if (object[key] !== undefined) metrics[key] = this.count(object[key], `${field}.${key}`);
    }
    return metrics;
  }

  metricsOrNull(value: unknown, field: string): HeldOutMetrics | null {
    if (value === null) return null;
    return this.metrics(value, field);
  }

  private fraction(value: unknown, field: string): number {
    const n = this.number(value, field);
    if (n < 0 || n > 1) this.fail(field, `must be between 0 and 1, got ${n}`);
    return n;
  }
}

function describe(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'an object';
  const text = JSON.stringify(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}
