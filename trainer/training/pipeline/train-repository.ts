import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { readManifest } from '../../adapters/folder';
import { writeFullModel } from '../../adapters/full';
import {
  manifestJson,
  type AdapterManifest,
  type HeldOutMetrics,
  type ManifestDraft,
  type MemorisationMetrics,
  type QualityComparison,
} from '../../adapters/manifest';
import type { Mode } from '../../adapters/mode';
import { MODES } from '../../adapters/mode';
import { loadAdapter, loraAdapterOf, loraAdapterOfTensors, writeAdapter } from '../../adapters/peft';
import { registryLineage } from '../../adapters/lineage';
import { buildDataset, loadTokenizerFile } from '../../data/dataset/build';
import { MEMORY_FILE, MemoryWriter } from '../../data/memory/file';
import { writeFileAtomically } from '../../model/safetensors';
import { mineRepository, type MinedFile } from '../../data/mining/mine';
import { compareOnReplay } from '../eval/replay';
import { memorisationStage, plantCanaries, type MemorisationOptions } from './memorisation-stage';
import { DatasetReader } from '../../data/dataset/reader';
import { dirtyWorkTree, runGitSync } from '../../data/mining/git-command';
import { evaluateModels, type ModelUnderTest } from '../eval/evaluate';
import {
  heldOutSummary,
  newlineTokenIds,
  selectHeldOut,
  type HeldOutOptions,
  type HeldOutSet,
  type HeldOutSummary,
} from '../eval/held-out';
import { loadModelConfig, type ModelConfig } from '../../model/config';
import { DEFAULT_LORA, type LoraConfig } from '../../model/lora';
import { loadCheckpoint } from '../../model/checkpoint';
import {
  Registry,
  findRepoRoot,
  registryLocation,
  type PromotionResult,
  type RegistryOptions,
} from '../../adapters/registry';
import { EngineWorker } from '../../compute/runtime/client';
import { defaultThreadCount } from '../../compute/runtime/session';
import type { HostTensor } from '../../model/tensor';
import type { Tokenizer } from '../../model/tokenizer/tokenizer';
import { POLICY_FILE, loadPolicy, trainingPathFilter, type Policy } from '../../modes/compliance/policy';
import { createStepTrainer, selectTrainingBackend, type BackendSelection, type StepTrainer } from '../backend';
import { checkProcesses } from '../torch-bridge/processes';
import { comparisonRows, type ComparisonRow } from '../report/compare';
import { writeTrainingReport, type LossPoint } from '../report/html';
import { baseWeightsSha256, resolveBaseDir } from '../../model/base-model';
import { fillRows, packEpoch, stepsPerEpoch, type TrainExample } from './batches';
import { TrainingCancelledError, type TrainEvent } from './events';
import {
  chooseShape,
  estimateTokensPerSecond,
  learningRateAt,
  warmupStepsFor,
  type Budget,
  type Schedule,
} from './plan';
import { RunFolder, type CheckpointState, type RunPlan } from './run-folder';
import {
  incrementalExamples,
  parentWeights,
  resolveParent,
  type IncrementalSelection,
  type ParentRef,
} from './incremental';
import { round } from '../../util/round';
import { sha256OfFileSync } from '../../util/sha256';
import { makeDirectory, removeEmptyFolders } from '../../util/directories';

// `idiom train` as a function the CLI and the language server share: mine → tokenise with the
// base's tokenizer → train (LoRA or full) with periodic checkpoints → evaluate base and adapter
// on the temporal held-out split → write the adapter with its manifest → registry add + promote →
// HTML report. Progress goes to onProgress; an AbortSignal stops training at the next step,
// after writing a checkpoint that --resume continues from.

export const DEFAULT_LEARNING_RATE = { lora: 3e-4, full: 5e-5 } as const;
export const DEFAULT_WEIGHT_DECAY = 0.1;
/**
 * Passes over the training rows at most: the time budget usually ends a run first. Eight rather
 * than three lets a 5-minute budget be spent on a small repository; the promotion rule (held-out
 * loss and the replayed lines) still refuses an adapter that got worse.
 */
export const DEFAULT_MAX_EPOCHS = 8;
export const DEFAULT_MINUTES = 10;

export interface TrainRepositoryOptions {
  repo: string;
  /** Base model folder; default the embedded models/. */
  base?: string;
  method?: 'lora' | 'full';
  /** Default { minutes: 10 }. */
  budget?: Budget;
  mode?: Mode;
  backend?: 'auto' | 'ort' | 'torch';
  /** Activate even if the held-out loss does not beat the base and the active adapter. */
  force?: boolean;
  /** Continue the newest unfinished run of the same method, base and mode. */
  resume?: boolean;
  /** Start from this LoRA adapter's weights ('active': the mode's active one); see incremental.ts. */
  from?: string;
  seed?: number;
  lora?: Partial<LoraConfig>;
  learningRate?: number;
  weightDecay?: number;
  /** Passes over the training rows at most. Default 3. */
  maxEpochs?: number;
  /** Overrides of the shape rule (trainer/training/pipeline/plan.ts). */
  batch?: number;
  seqLen?: number;
  threads?: number;
  /** PyTorch only: DDP over this many local processes, each taking a share of a step's rows. */
  processes?: number;
  registry?: RegistryOptions;
  /** Checkpoint when this many seconds of training passed since the last one. Default 60. */
  checkpointSeconds?: number;
  /** …or every this many steps. Default: never by count. */
  checkpointSteps?: number;
  heldOut?: HeldOutOptions;
  purpose?: string;
  /** Write the HTML report next to the registry (reports/<id>.html). Default true. */
  report?: boolean;
  /**
   * Held-out lines replayed through the language server, candidate against what serves now, before
   * promotion (the candidate must not lose there); false skips it. Default 40 lines, seed 1.
   */
  quality?: { lines: number; seed?: number } | false;
  /** Canaries planted before training and measured before promotion (eval/memorisation.ts); false skips it. */
  memorisation?: MemorisationOptions | false;
  onProgress?: (event: TrainEvent) => void;
  signal?: AbortSignal;
}

export interface TrainRepositoryResult {
  adapter: { id: string; path: string; method: 'lora' | 'full' };
  tokens: number;
  seconds: number;
  tokensPerSecond: number;
  steps: number;
  metrics: { base: HeldOutMetrics | null; adapter: HeldOutMetrics | null; others: Record<string, HeldOutMetrics> };
  heldOut: HeldOutSummary;
  activated: boolean;
  promotion: PromotionResult;
  trainableParameters: number;
  peakRssBytes: number;
  plan: RunPlan & { learningRate: number; weightDecay: number; method: 'lora' | 'full'; lora: LoraConfig | null };
  losses: LossPoint[];
  /** Base, this adapter, the previously active one, the newest of the other method (see report/compare.ts). */
  comparison: ComparisonRow[];
  /** Held-out lines replayed through the server: this adapter against what served before it. */
  quality: QualityComparison | null;
  /** Canary exposure and extraction, when the check ran. */
  memorisation: MemorisationMetrics | null;
  report: string | null;
  resumedFrom: number | null;
  manifest: AdapterManifest;
}

/** What run.json holds: enough to recognise a run to resume and to continue it identically. */
interface RunInfo {
  method: 'lora' | 'full';
  mode: Mode;
  repoRoot: string;
  base: { dir: string; name: string; sha256: string };
  tokenizerSha256: string;
  budget: Budget;
  seed: number;
  lora: LoraConfig | null;
  learningRate: number;
  weightDecay: number;
  maxEpochs: number;
  batch: number;
  seqLen: number;
  threads: number;
  /** Where the run executes, not what it computes: a resumed run takes the count given now. */
  processes?: number;
  purpose: string;
  created: string;
  /** The adapter this run continues (--from), or null. */
  parent?: ParentRef | null;
}

/** Settings given now that differ from what the resumed run planned with (it keeps its plan). */
export function settingsIgnoredOnResume(
  options: TrainRepositoryOptions,
  planned: Pick<
    RunInfo,
    'budget' | 'seed' | 'lora' | 'learningRate' | 'weightDecay' | 'maxEpochs' | 'batch' | 'seqLen' | 'threads'
  >,
): string[] {
  const given: [string, unknown, unknown][] = [
    ['budget', options.budget, planned.budget],
    ['seed', options.seed, planned.seed],
    [
      'LoRA settings',
      options.lora && Object.keys(options.lora).length > 0 ? { ...planned.lora, ...options.lora } : undefined,
      planned.lora,
    ],
    ['learning rate', options.learningRate, planned.learningRate],
    ['weight decay', options.weightDecay, planned.weightDecay],
    ['epoch cap', options.maxEpochs, planned.maxEpochs],
    ['batch', options.batch, planned.batch],
    ['sequence length', options.seqLen, planned.seqLen],
    ['threads', options.threads, planned.threads],
  ];
  return given
    .filter(([, now, then]) => now !== undefined && JSON.stringify(now) !== JSON.stringify(then))
    .map(([name]) => name);
}

interface SavedMarker {
  id: string;
}

const SAVED_FILE = 'saved.json';
const BASE_METRICS_FILE = 'base-metrics.json';
const STAGED_ADAPTER = 'adapter';

export async function trainRepository(options: TrainRepositoryOptions): Promise<TrainRepositoryResult> {
  const emit = options.onProgress ?? (() => {});
  const signal = options.signal;
  const method = options.method ?? 'lora';
  if (method !== 'lora' && method !== 'full')
    throw new Error(`unknown method "${String(method)}" (expected lora or full)`);
  const mode = options.mode ?? 'complete';
  if (!MODES.includes(mode)) throw new Error(`unknown mode "${mode}" (expected ${MODES.join(', ')})`);
  const selection = await selectTrainingBackend(options.backend ?? 'auto');
  if (selection.message) emit({ type: 'log', message: selection.message });
  const processes = checkProcesses(options.processes, selection.backend, selection.message ?? '');
  const budget = options.budget ?? { minutes: DEFAULT_MINUTES };
  checkBudget(budget);

  const repoStart = path.resolve(options.repo);
  if (!fs.existsSync(repoStart) || !fs.statSync(repoStart).isDirectory())
    throw new Error(`${repoStart}: no such repository folder`);
  assertGitRepository(repoStart);
  const repoRoot = findRepoRoot(repoStart);
  // Compliance adapters learn only from the paths the repository's policy allows for training.
  const policy = mode === 'compliance' ? loadPolicy(repoRoot) : null;
  if (mode === 'compliance' && !policy)
    throw new Error(`${repoRoot}: compliance mode needs a policy file (${POLICY_FILE} at the repository root)`);
  const baseDir = resolveBaseDir(options.base);
  const config = loadModelConfig(baseDir);
  const { tokenizer, sha256: tokenizerSha256 } = await loadTokenizerFile(baseDir);
  if (tokenizer.vocabSize > config.vocabSize)
    throw new Error(`${baseDir}: tokenizer has ${tokenizer.vocabSize} ids but the model only ${config.vocabSize}`);
  const baseSha256 = await baseWeightsSha256(baseDir);
  // A first run that fails leaves no empty registry folder in the repository.
  const registryExisted = fs.existsSync(registryLocation(repoRoot, options.registry));
  const registry = await Registry.open(repoRoot, options.registry);
  const tidyRegistry = () => {
    if (!registryExisted) removeEmptyFolders(registry.dir);
  };
  const stagingDir = path.dirname(registry.stagingPath('probe'));
  makeDirectory(stagingDir);

  // ---- the run folder: a new one, or the newest unfinished one with --resume -------------------
  const sameKind = (info: RunInfo) =>
    info.method === method && info.mode === mode && info.base.sha256 === baseSha256 && info.repoRoot === repoRoot;
  let run: RunFolder | null = null;
  if (options.resume) {
    run = RunFolder.findResumable<RunInfo>(stagingDir, sameKind)[0] ?? null;
    if (run) {
      run.claim();
      emit({ type: 'log', message: `resuming run ${run.id}` });
    } else emit({ type: 'log', message: 'nothing to resume: starting a new run' });
  } else {
    for (const stale of RunFolder.findResumable<RunInfo>(stagingDir, sameKind)) {
      emit({ type: 'log', message: `discarding unfinished run ${stale.id} (pass --resume to continue one)` });
      stale.remove();
    }
  }
  let info: RunInfo;
  if (run) {
    info = { ...run.info<RunInfo>(), processes };
    const ignored = settingsIgnoredOnResume(options, info);
    if (ignored.length > 0)
      emit({
        type: 'log',
        message: `run ${run.id} continues as it was planned; ignoring the new ${ignored.join(', ')}`,
      });
  } else {
    const threads = options.threads ?? defaultThreadCount();
    const estimated =
      'tokens' in budget ? budget.tokens : budget.minutes * 60 * estimateTokensPerSecond(config, method, 256, threads);
    const shape = chooseShape(config, estimated);
    const continued = options.from
      ? await resolveParent(registry, options.from, { mode, method, baseSha256, lora: options.lora }).catch(
          (error: unknown) => {
            tidyRegistry();
            throw error;
          },
        )
      : null;
    const lora = method === 'lora' ? (continued?.lora ?? { ...DEFAULT_LORA, ...options.lora }) : null;
    info = {
      method,
      mode,
      repoRoot,
      base: { dir: baseDir, name: modelName(baseDir), sha256: baseSha256 },
      tokenizerSha256,
      budget,
      seed: options.seed ?? 0,
      lora,
      learningRate: options.learningRate ?? DEFAULT_LEARNING_RATE[method],
      weightDecay: options.weightDecay ?? DEFAULT_WEIGHT_DECAY,
      maxEpochs: options.maxEpochs ?? DEFAULT_MAX_EPOCHS,
      batch: options.batch ?? shape.batch,
      seqLen: options.seqLen ?? shape.seqLen,
      threads,
      processes,
      purpose: options.purpose ?? `idiom train (${method}, ${mode}${policy ? `, policy sha256 ${policy.sha256}` : ''})`,
      created: new Date().toISOString(),
      parent: continued?.parent ?? null,
    };
    if (info.seqLen > config.maxPositionEmbeddings) {
      tidyRegistry();
      throw new Error(`sequence length ${info.seqLen} exceeds the model's ${config.maxPositionEmbeddings} positions`);
    }
    run = RunFolder.create(stagingDir, info);
  }

  const createdNow = !options.resume || run.loadCheckpoint() === null;
  try {
    return await trainInRun(run, info, {
      options,
      emit,
      signal,
      config,
      tokenizer,
      tokenizerSha256,
      baseDir,
      repoStart,
      registry,
      selection,
      policy,
    });
  } catch (error) {
    // A run that failed or was cancelled before its first checkpoint (bad data, no examples,
    // cancelled while mining) leaves nothing behind: there is nothing to resume.
    if (createdNow && run.loadCheckpoint() === null) run.remove();
    tidyRegistry();
    throw (await nonFiniteBaseError(baseDir, error)) ?? error;
  }
}

/**
 * What the stages of a run share. The run's method, mode, repository root and base sha256 come
 * from its RunInfo: a run is resumed only when they match the ones asked for now.
 */
interface RunContext {
  options: TrainRepositoryOptions;
  emit: (event: TrainEvent) => void;
  signal: AbortSignal | undefined;
  config: ModelConfig;
  tokenizer: Tokenizer;
  tokenizerSha256: string;
  /** Where the base is now; info.base.dir is where the run found it first. */
  baseDir: string;
  /** The folder given; mining starts there. */
  repoStart: string;
  registry: Registry;
  selection: BackendSelection;
  policy: Policy | null;
}

/** The stages in order; each one's inputs are what the ones before it returned. */
async function trainInRun(run: RunFolder, info: RunInfo, context: RunContext): Promise<TrainRepositoryResult> {
  const { options, emit, signal, selection } = context;
  const data = await prepareData(run, info, context);
  const continued = info.parent ? await continuedExamples(run, info, emit) : null;
  const canaries = plantCanaries(run, context.tokenizer, options.memorisation, emit);
  const previouslySaved = readJson<SavedMarker>(path.join(run.dir, SAVED_FILE));
  const worker = EngineWorker.start();
  try {
    const training = await trainLoop({
      run,
      info,
      config: context.config,
      examples: [...(continued?.examples ?? data.examples), ...canaries.examples],
      worker,
      selection,
      tokenizer: context.tokenizer,
      emit,
      signal,
      options,
      skip: previouslySaved !== null,
    });
    signal?.throwIfAborted();
    const metrics = await evaluateCandidates(run, info, context, {
      worker,
      heldOut: data.heldOut,
      trainable: training.trainable,
      exclude: previouslySaved?.id ?? null,
    });
    if (!previouslySaved)
      metrics.memorisation = await memorisationStage({
        run,
        worker,
        canaries,
        tokenizer: context.tokenizer,
        model: async () =>
          info.method === 'lora'
            ? { kind: 'lora', baseDir: context.baseDir, adapter: loraAdapterOfTensors(training.trainable, info.lora!) }
            : {
                kind: 'full',
                config: context.config,
                weights: Object.fromEntries(await fullWeights(context.baseDir, training.trainable)),
              },
        options: options.memorisation,
        threads: info.threads,
        emit,
        signal,
      });
    signal?.throwIfAborted();
    emit({ type: 'phase', phase: 'saving', message: 'writing the adapter and its manifest' });
    const peakRssBytes = process.resourceUsage().maxRSS * 1024;
    const draft = draftManifest({ info, data, training, selection, metrics, peakRssBytes });
    const { manifest, promotion } = await saveAndPromote(run, info, context, {
      draft,
      trainable: training.trainable,
      heldOutLines: data.heldOut.lines.length,
      previouslySaved,
    });
    const result = await summarize(info, context, {
      manifest,
      promotion,
      training,
      heldOut: data.heldOut,
      peakRssBytes,
    });
    run.remove();
    return result;
  } catch (error) {
    // Cancelled after training (evaluating, saving): the final checkpoint is kept for --resume.
    if (signal?.aborted && !(error instanceof TrainingCancelledError)) throw new TrainingCancelledError(run.dir, -1);
    throw error;
  } finally {
    await worker.terminate();
  }
}

/** The run's dataset as training, evaluation and the manifest need it. */
interface PreparedData {
  examples: TrainExample[];
  heldOut: HeldOutSet;
  repo: { head: string | null; dirty: boolean };
  /** The manifest's dataset fields, less the held-out split's. */
  dataset: Omit<AdapterManifest['dataset'], 'heldOut'>;
}

/**
 * Mines and tokenises the repository into the run folder, with the repository memory beside it,
 * unless the folder holds the dataset already (a resumed run trains on the same rows); then reads
 * the training rows and the held-out split back.
 */
async function prepareData(run: RunFolder, info: RunInfo, context: RunContext): Promise<PreparedData> {
  const { options, emit, signal, tokenizer, tokenizerSha256, repoStart, policy } = context;
  let reader = openDataset(run.datasetPath, tokenizerSha256);
  if (!reader) {
    emit({ type: 'phase', phase: 'mining', message: `mining ${info.repoRoot}` });
    const memory = new MemoryWriter();
    const summary = await buildDataset(repoStart, {
      tokenizer,
      tokenizerSha256,
      output: run.datasetPath,
      memory,
      maxTokens: info.seqLen + 1,
      mine: {
        onWarning: (message) => emit({ type: 'log', message }),
        pathFilter: policy ? trainingPathFilter(policy) : undefined,
        signal,
      },
    }).catch((error: unknown) => {
      throw signal?.aborted ? new TrainingCancelledError(null, -1, 'while mining the repository') : error;
    });
    memory.write(path.join(run.dir, MEMORY_FILE));
    emit({
      type: 'phase',
      phase: 'tokenizing',
      message: `${summary.train.examples} training examples (${summary.train.tokens} tokens), ${summary.heldout.examples} held out`,
    });
    reader = openDataset(run.datasetPath, tokenizerSha256)!;
  }
  try {
    signal?.throwIfAborted();
    const header = reader.header;
    const repo = { head: header.repo.head, dirty: dirtyWorkTree(info.repoRoot) };
    const examples: TrainExample[] = [];
    for (const example of reader.examples('train'))
      examples.push({ tokens: example.tokens, lossStart: example.record.lossStart });
    if (examples.length === 0)
      throw new Error(`${info.repoRoot}: no training examples (no minable source files outside the held-out split)`);
    const heldOut = selectHeldOut(reader, tokenizer, options.heldOut);
    const dataset = {
      files: header.mining.files.kept,
      examples: header.counts.train.examples,
      tokens: header.counts.train.tokens,
      sha256: sha256OfFileSync(reader.path),
      excluded: header.mining.files.excluded,
      secretsExcluded: header.mining.secretsExcluded,
    };
    if (heldOut.sequences.length === 0)
      emit({
        type: 'log',
        message: 'no held-out split (the repository needs at least two commits touching code): metrics are skipped',
      });
    return { examples, heldOut, repo, dataset };
  } finally {
    reader.close();
  }
}

/** Held-out metrics of the candidates: the base, this run's model, and what was active before it (by id). */
interface CandidateMetrics {
  base: HeldOutMetrics | null;
  adapter: HeldOutMetrics | null;
  others: Record<string, HeldOutMetrics>;
  memorisation?: MemorisationMetrics | null;
}

/**
 * Evaluates the base, the trained model and the adapter active for the mode on the same held-out
 * split. The base's metrics are kept in the run folder, so a resumed run does not score it again.
 */
async function evaluateCandidates(
  run: RunFolder,
  info: RunInfo,
  context: RunContext,
  input: {
    worker: EngineWorker;
    heldOut: HeldOutSet;
    trainable: ReadonlyMap<string, HostTensor>;
    exclude: string | null;
  },
): Promise<CandidateMetrics> {
  const { emit, signal, config, tokenizer, baseDir, registry } = context;
  const { worker, heldOut } = input;
  emit({
    type: 'phase',
    phase: 'evaluating',
    message: `held-out split: ${heldOut.commits} commits, ${heldOut.sequences.length} windows, ${heldOut.lines.length} lines`,
  });
  const newlineIds = newlineTokenIds(tokenizer);
  const active = await activeForComparison(registry, info.mode, config, info.base.sha256, input.exclude);
  const models: ModelUnderTest[] = [];
  const cachedBase = readJson<{ sha256: string; metrics: HeldOutMetrics }>(path.join(run.dir, BASE_METRICS_FILE));
  if (!cachedBase || cachedBase.sha256 !== heldOut.sha256) models.push({ name: 'base', kind: 'base' });
  const trainedModel: ModelUnderTest =
    info.method === 'lora'
      ? { name: 'adapter', kind: 'lora', adapter: loraAdapterOfTensors(input.trainable, info.lora!) }
      : {
          name: 'adapter',
          kind: 'full',
          config,
          weights: Object.fromEntries(await fullWeights(baseDir, input.trainable)),
        };
  models.push(trainedModel);
  if (active) models.push(active.model);
  let metrics = new Map<string, HeldOutMetrics>();
  if (heldOut.sequences.length > 0) {
    metrics = await evaluateModels({
      worker,
      baseDir,
      tokenizer,
      newlineIds,
      heldOut,
      seqLen: info.seqLen,
      models,
      threads: info.threads,
      signal,
      onProgress: (model, fraction) => emit({ type: 'evaluating', model, fraction }),
    });
    if (cachedBase && cachedBase.sha256 === heldOut.sha256) metrics.set('base', cachedBase.metrics);
    else
      fs.writeFileSync(
        path.join(run.dir, BASE_METRICS_FILE),
        JSON.stringify({ sha256: heldOut.sha256, metrics: metrics.get('base') }),
      );
    for (const [model, m] of metrics) emit({ type: 'metrics', model, metrics: m });
  }
  const others: Record<string, HeldOutMetrics> = {};
  if (active && metrics.has(active.id)) others[active.id] = metrics.get(active.id)!;
  return { base: metrics.get('base') ?? null, adapter: metrics.get('adapter') ?? null, others };
}

/** What draftManifest reads: the run's plan, its data, its training and its candidates' metrics. */
export interface DraftInput {
  info: RunInfo;
  data: {
    repo: PreparedData['repo'];
    dataset: PreparedData['dataset'];
    heldOut: Pick<HeldOutSet, 'commits' | 'files' | 'examples' | 'exampleTokens' | 'sha256'>;
  };
  training: {
    state: Pick<CheckpointState, 'step' | 'tokens' | 'seconds'> & { plan: Pick<RunPlan, 'warmupSteps' | 'totalSteps'> };
    trainableParameters: number;
  };
  selection: Pick<BackendSelection, 'backend' | 'device'>;
  metrics: CandidateMetrics;
  peakRssBytes: number;
}

/** The manifest of this run's adapter, less what writing its weights fills in (id, created, weights). */
export function draftManifest({ info, data, training, selection, metrics, peakRssBytes }: DraftInput): ManifestDraft {
  const { heldOut } = data;
  return {
    base: { name: info.base.name, sha256: info.base.sha256 },
    repo: { root: info.repoRoot, head: data.repo.head, dirty: data.repo.dirty },
    dataset: {
      ...data.dataset,
      heldOut: {
        commits: heldOut.commits,
        files: heldOut.files,
        examples: heldOut.examples,
        tokens: heldOut.exampleTokens,
        sha256: heldOut.sha256,
      },
    },
    training: {
      method: info.method,
      backend: selection.backend,
      device: selection.device,
      steps: training.state.step,
      tokens: training.state.tokens,
      seconds: round(training.state.seconds, 3),
      seed: info.seed,
      hyperparameters: {
        learningRate: info.learningRate,
        schedule: 'linear warm-up, cosine to 10%',
        warmupSteps: training.state.plan.warmupSteps,
        totalSteps: training.state.plan.totalSteps,
        weightDecay: info.weightDecay,
        optimizer: 'AdamW(0.9, 0.999, eps 1e-8), grad-norm clip 1',
        batch: info.batch,
        seqLen: info.seqLen,
        maxEpochs: info.maxEpochs,
        budget: 'tokens' in info.budget ? `${info.budget.tokens} tokens` : `${info.budget.minutes} minutes`,
        threads: info.threads,
        trainableParameters: training.trainableParameters,
        peakRssBytes,
        ...(selection.backend === 'torch' ? { processes: info.processes ?? 1 } : {}),
        ...(info.lora ? { r: info.lora.r, alpha: info.lora.alpha, targets: info.lora.targets, dropout: 0 } : {}),
      },
    },
    metrics: {
      base: metrics.base,
      adapter: metrics.adapter,
      ...(Object.keys(metrics.others).length ? { others: metrics.others } : {}),
      ...(metrics.memorisation ? { memorisation: metrics.memorisation } : {}),
    },
    mode: info.mode,
    purpose: info.purpose,
    parent: info.parent?.id ?? null,
  };
}

/**
 * Writes the adapter into the run folder (an interrupted run's staged adapter is reused) with the
 * repository memory, replays held-out lines through the language server into its metrics, marks
 * the run saved, registers the adapter and asks the registry to promote it. A run interrupted after
 * registering only promotes.
 */
async function saveAndPromote(
  run: RunFolder,
  info: RunInfo,
  context: RunContext,
  input: {
    draft: ManifestDraft;
    trainable: ReadonlyMap<string, HostTensor>;
    heldOutLines: number;
    previouslySaved: SavedMarker | null;
  },
): Promise<{ manifest: AdapterManifest; promotion: PromotionResult }> {
  const { options, emit, signal, config, baseDir, repoStart, registry, policy } = context;
  const { draft, trainable, previouslySaved } = input;
  const { mode, repoRoot } = info;
  let manifest: AdapterManifest;
  if (previouslySaved && (await registry.has(previouslySaved.id))) {
    manifest = await registry.manifest(previouslySaved.id);
  } else {
    const staged = path.join(run.dir, STAGED_ADAPTER);
    let stagedManifest = fs.existsSync(staged) ? safeManifest(staged) : null;
    if (!stagedManifest) {
      fs.rmSync(staged, { recursive: true, force: true });
      stagedManifest =
        info.method === 'lora'
          ? await writeAdapter(staged, {
              config: {
                r: info.lora!.r,
                alpha: info.lora!.alpha,
                targets: info.lora!.targets,
                dropout: 0,
                baseModelNameOrPath: info.base.name,
              },
              tensors: trainable,
              manifest: draft,
              baseConfig: config,
            })
          : await writeFullModel(staged, { config, weights: await fullWeights(baseDir, trainable), manifest: draft });
    }
    // The repository memory travels with the adapter (the server recalls lines from it).
    if (fs.existsSync(path.join(run.dir, MEMORY_FILE)))
      fs.copyFileSync(path.join(run.dir, MEMORY_FILE), path.join(staged, MEMORY_FILE));
    if (options.quality !== false && input.heldOutLines > 0) {
      emit({ type: 'log', message: 'replaying held-out lines through the language server' });
      const quality = await replayStaged(staged, await registry.activeId(mode), {
        repoRoot,
        repoStart,
        baseDir,
        mode,
        policy,
        emit,
        signal,
        lines: options.quality?.lines ?? 40,
        seed: options.quality?.seed ?? 1,
      });
      if (quality) {
        stagedManifest = { ...stagedManifest, metrics: { ...stagedManifest.metrics, quality } };
        writeFileAtomically(path.join(staged, 'manifest.json'), [Buffer.from(manifestJson(stagedManifest))]);
      }
    }
    fs.writeFileSync(path.join(run.dir, SAVED_FILE), JSON.stringify({ id: stagedManifest.id } satisfies SavedMarker));
    manifest = await registry.add(staged);
  }
  const promotion = await registry.promote(manifest.id, mode, { force: options.force ?? false });
  emit({ type: 'log', message: promotion.reason });
  return { manifest, promotion };
}

/** The run's result from the registered manifest, and its HTML report unless options.report is false. */
async function summarize(
  info: RunInfo,
  context: RunContext,
  input: {
    manifest: AdapterManifest;
    promotion: PromotionResult;
    training: LoopResult;
    heldOut: HeldOutSet;
    peakRssBytes: number;
  },
): Promise<TrainRepositoryResult> {
  const { options, registry } = context;
  const { manifest, promotion, training, heldOut } = input;
  const { method } = info;
  const result: TrainRepositoryResult = {
    adapter: { id: manifest.id, path: registry.adapterPath(manifest.id), method },
    tokens: training.state.tokens,
    seconds: round(training.state.seconds, 3),
    tokensPerSecond: training.state.seconds > 0 ? round(training.state.tokens / training.state.seconds, 1) : 0,
    steps: training.state.step,
    metrics: { base: manifest.metrics.base, adapter: manifest.metrics.adapter, others: manifest.metrics.others ?? {} },
    heldOut: heldOutSummary(heldOut),
    activated: promotion.activated,
    promotion,
    trainableParameters: training.trainableParameters,
    peakRssBytes: Number(manifest.training.hyperparameters.peakRssBytes ?? input.peakRssBytes),
    plan: {
      ...training.state.plan,
      learningRate: info.learningRate,
      weightDecay: info.weightDecay,
      method,
      lora: info.lora,
    },
    losses: training.state.losses,
    comparison: await comparisonRows(registry, manifest),
    quality: manifest.metrics.quality ?? null,
    memorisation: manifest.metrics.memorisation ?? null,
    report: null,
    resumedFrom: training.resumedFrom,
    manifest,
  };
  if (options.report ?? true) {
    result.report = writeTrainingReport(path.join(registry.dir, 'reports'), {
      adapterId: manifest.id,
      method,
      created: manifest.created,
      repo: { root: info.repoRoot, head: manifest.repo.head },
      base: manifest.base,
      losses: result.losses,
      rows: result.comparison,
      quality: result.quality,
      memorisation: result.memorisation,
      heldOut: result.heldOut,
      ...(manifest.parent ? { lineage: await registryLineage(registry, manifest.id) } : {}),
      promotion: promotion.reason,
      activated: promotion.activated,
      plan: {
        ...manifest.training.hyperparameters,
        steps: result.steps,
        tokens: result.tokens,
        seconds: result.seconds,
      },
    });
  }
  return result;
}

interface LoopInput {
  run: RunFolder;
  info: RunInfo;
  config: ModelConfig;
  examples: TrainExample[];
  worker: EngineWorker;
  /** ONNX Runtime in `worker`, or a PyTorch process. */
  selection: BackendSelection;
  tokenizer: Tokenizer;
  emit: (event: TrainEvent) => void;
  signal?: AbortSignal;
  options: TrainRepositoryOptions;
  /** The adapter of this run is already saved: only its final weights are needed. */
  skip: boolean;
}

interface LoopResult {
  state: CheckpointState;
  trainable: Map<string, HostTensor>;
  trainableParameters: number;
  resumedFrom: number | null;
}

/** Trains (or resumes) until the plan's last step; checkpoints periodically, on abort and at the end. */
async function trainLoop(input: LoopInput): Promise<LoopResult> {
  const { run, info, examples, worker, emit, signal } = input;
  const restored = run.loadCheckpoint();
  if (restored?.state.finished) {
    const trainableParameters = [...restored.trainable.values()].reduce((n, t) => n + t.data.length, 0);
    return {
      state: restored.state,
      trainable: restored.trainable,
      trainableParameters,
      resumedFrom: restored.state.step,
    };
  }
  if (input.skip) throw new Error(`${run.dir}: the run was saved but its final checkpoint is missing`);

  emit({
    type: 'phase',
    phase: 'compiling',
    message: `building the ${info.method} training graph (batch ${info.batch} × ${info.seqLen} tokens)`,
  });
  const trainer = await createStepTrainer(
    input.selection,
    worker,
    { checkpointDir: info.base.dir },
    {
      trainable:
        info.method === 'lora'
          ? { method: 'lora', lora: { r: info.lora!.r, alpha: info.lora!.alpha, targets: info.lora!.targets } }
          : { method: 'full' },
      batch: info.batch,
      seqLen: info.seqLen,
      optimizer: { weightDecay: info.weightDecay },
      seed: info.seed,
      threads: info.threads,
      processes: info.processes,
    },
  );
  try {
    const padId = input.tokenizer.eos ?? 0;
    const rowTokens = info.seqLen + 1;
    let epochRows = packEpoch(examples, rowTokens, info.seed, 0);
    let epochOfRows = 0;
    const rowsFor = (epoch: number) => {
      if (epoch !== epochOfRows) {
        epochRows = packEpoch(examples, rowTokens, info.seed, epoch);
        epochOfRows = epoch;
      }
      return epochRows;
    };

    // A continued adapter starts from its parent's A and B; the optimizer state starts fresh.
    if (!restored && info.parent)
      await trainer.setTrainable(await parentWeights(info.parent, input.config, info.base.sha256));
    let state: CheckpointState;
    if (restored) {
      await trainer.setTrainable(restored.trainable);
      await trainer.setOptimizerState(restored.optimizer);
      state = restored.state;
    } else {
      const perEpoch = stepsPerEpoch(epochRows.length, info.batch);
      let measured: number | null = null;
      let budgetSteps: number;
      if ('tokens' in info.budget) budgetSteps = Math.ceil(info.budget.tokens / (info.batch * info.seqLen));
      else {
        measured = await measureTokensPerSecond(trainer, examples, epochRows, info, padId);
        budgetSteps = Math.floor((info.budget.minutes * 60 * measured) / (info.batch * info.seqLen));
      }
      const totalSteps = Math.max(1, Math.min(budgetSteps, info.maxEpochs * perEpoch));
      state = {
        version: 1,
        step: 0,
        cursor: { epoch: 0, row: 0 },
        rng: { seed: info.seed, epoch: 0 },
        tokens: 0,
        seconds: 0,
        plan: {
          batch: info.batch,
          seqLen: info.seqLen,
          totalSteps,
          warmupSteps: warmupStepsFor(totalSteps),
          measuredTokensPerSecond: measured,
          rowsPerEpoch: epochRows.length,
        },
        losses: [],
        finished: false,
      };
    }
    const resumedFrom = restored ? restored.state.step : null;
    const schedule: Schedule = {
      peakLearningRate: info.learningRate,
      warmupSteps: state.plan.warmupSteps,
      totalSteps: state.plan.totalSteps,
      minRatio: 0.1,
    };
    const checkpointSeconds = input.options.checkpointSeconds ?? 60;
    const checkpointSteps = input.options.checkpointSteps ?? Infinity;
    const deadline = 'minutes' in info.budget ? info.budget.minutes * 60 * 1.25 : Infinity;

    const save = async (finished: boolean): Promise<string> => {
      state.finished = finished;
      const path = run.saveCheckpoint(state, await trainer.getTrainable(), await trainer.getOptimizerState());
      emit({ type: 'checkpoint', step: state.step, path });
      return path;
    };

    emit({
      type: 'phase',
      phase: 'training',
      message: `${state.plan.totalSteps} steps of ${info.batch} × ${info.seqLen} tokens${resumedFrom !== null ? `, resuming at step ${resumedFrom}` : ''}`,
    });
    let lastCheckpointAt = state.seconds;
    let lastEventAt = 0;
    let lastCheckpointPath: string | null = null;
    const recent: number[] = [];
    while (state.step < state.plan.totalSteps) {
      if (signal?.aborted) {
        lastCheckpointPath = await save(false);
        throw new TrainingCancelledError(lastCheckpointPath, state.step);
      }
      if (state.seconds > deadline) {
        emit({ type: 'log', message: `stopping at step ${state.step}: the time budget is spent` });
        break;
      }
      let rows = rowsFor(state.cursor.epoch);
      if (state.cursor.row >= rows.length) {
        state.cursor = { epoch: state.cursor.epoch + 1, row: 0 };
        state.rng = { seed: info.seed, epoch: state.cursor.epoch };
        rows = rowsFor(state.cursor.epoch);
      }
      const batch = fillRows(
        examples,
        rows.slice(state.cursor.row, state.cursor.row + info.batch),
        info.batch,
        info.seqLen,
        padId,
      );
      const learningRate = learningRateAt(schedule, state.step + 1);
      const started = performance.now();
      const result = await trainer.step({ tokens: batch.tokens, lossMask: batch.lossMask }, learningRate);
      const seconds = (performance.now() - started) / 1000;
      state.step++;
      state.cursor = { epoch: state.cursor.epoch, row: state.cursor.row + info.batch };
      state.tokens += result.tokens;
      state.seconds += seconds;
      state.losses.push({
        step: state.step,
        loss: round(result.loss, 5),
        learningRate,
        tokens: state.tokens,
        seconds: round(state.seconds, 3),
      });
      recent.push(seconds);
      if (recent.length > 20) recent.shift();
      const now = performance.now();
      if (now - lastEventAt > 100 || state.step === state.plan.totalSteps) {
        lastEventAt = now;
        const perStep = recent.reduce((a, b) => a + b, 0) / recent.length;
        emit({
          type: 'step',
          step: state.step,
          totalSteps: state.plan.totalSteps,
          loss: result.loss,
          learningRate,
          tokens: state.tokens,
          tokensPerSecond: state.seconds > 0 ? state.tokens / state.seconds : 0,
          elapsedSeconds: state.seconds,
          etaSeconds: perStep * (state.plan.totalSteps - state.step),
          fraction: state.step / state.plan.totalSteps,
        });
      }
      if (state.seconds - lastCheckpointAt >= checkpointSeconds || state.step % checkpointSteps === 0) {
        if (state.step < state.plan.totalSteps) {
          lastCheckpointPath = await save(false);
          lastCheckpointAt = state.seconds;
        }
      }
    }
    await save(true);
    const trainable = await trainer.getTrainable();
    return { state, trainable, trainableParameters: trainer.trainableParameters, resumedFrom };
  } finally {
    await trainer.release().catch(() => undefined);
  }
}

/**
 * Token slots (B·T, what the budget and the step count are in) per second of the training step,
 * measured before training: one warm-up step and three timed steps at learning rate 0 (AdamW then
 * leaves the weights as they are), the fastest counted (the machine may be shared), then a fresh
 * optimizer state. Not targets/s: a step costs the same whatever share of its slots are targets,
 * and counting targets planned half the steps a --minutes budget pays for.
 */
async function measureTokensPerSecond(
  trainer: StepTrainer,
  examples: TrainExample[],
  rows: number[][],
  info: RunInfo,
  padId: number,
): Promise<number> {
  const batch = fillRows(examples, rows.slice(0, info.batch), info.batch, info.seqLen, padId);
  await trainer.step({ tokens: batch.tokens, lossMask: batch.lossMask }, 0);
  let fastest = Infinity;
  for (let i = 0; i < 3; i++) {
    const started = performance.now();
    await trainer.step({ tokens: batch.tokens, lossMask: batch.lossMask }, 0);
    fastest = Math.min(fastest, (performance.now() - started) / 1000);
  }
  const zeros = (): Record<string, HostTensor> =>
    Object.fromEntries(
      trainer.trainable.map((t) => [
        t.name,
        { dtype: 'float32', shape: t.shape, data: new Float32Array(t.shape.reduce((a, b) => a * b, 1)) } as HostTensor,
      ]),
    );
  await trainer.setOptimizerState({ step: 0, m: zeros(), v: zeros() });
  return (info.batch * info.seqLen) / Math.max(fastest, 1e-6);
}

/**
 * For a run that diverged: a clearer error when the base weights themselves hold NaN or infinity
 * (no learning rate helps then); null otherwise. Checked only on failure: scanning every weight
 * of a large base costs seconds.
 */
async function nonFiniteBaseError(baseDir: string, error: unknown): Promise<Error | null> {
  if (!/diverged/.test(error instanceof Error ? error.message : String(error))) return null;
  let base: Awaited<ReturnType<typeof loadCheckpoint>>;
  try {
    base = await loadCheckpoint(baseDir);
  } catch {
    return null;
  }
  for (const [name, tensor] of base.weights) {
    if (!tensorIsFinite(tensor)) {
      return new Error(
        `${baseDir}: the base model's weights are not finite (${name} holds NaN or infinity): the checkpoint is corrupt; no learning rate trains on it`,
      );
    }
  }
  return null;
}

function tensorIsFinite(tensor: HostTensor): boolean {
  const data = tensor.data;
  if (data instanceof Float32Array || data instanceof Float64Array) {
    for (let i = 0; i < data.length; i++) if (!Number.isFinite(data[i])) return false;
  } else if (tensor.dtype === 'float16' && data instanceof Uint16Array) {
    for (let i = 0; i < data.length; i++) if ((data[i] & 0x7c00) === 0x7c00) return false; // all exponent bits: inf or NaN
  }
  return true;
}

/** The base's weights with the trained ones in place (full fine-tuning trains every tensor). */
async function fullWeights(
  baseDir: string,
  trainable: ReadonlyMap<string, HostTensor>,
): Promise<Map<string, HostTensor>> {
  const base = await loadCheckpoint(baseDir);
  return new Map([...base.weights].map(([name, tensor]) => [name, trainable.get(name) ?? tensor]));
}

/** The adapter active for `mode` on this base, to evaluate on the same split (promotion compares them). */
async function activeForComparison(
  registry: Registry,
  mode: Mode,
  config: ModelConfig,
  baseSha256: string,
  exclude: string | null,
): Promise<{ id: string; model: ModelUnderTest } | null> {
  const id = await registry.activeId(mode);
  if (id === null || id === exclude) return null;
  try {
    const dir = registry.adapterPath(id);
    const manifest = readManifest(dir);
    if (!manifest || manifest.base.sha256 !== baseSha256) return null;
    if (manifest.training.method === 'lora') {
      const loaded = await loadAdapter(dir, config, { baseSha256 });
      return { id, model: { name: id, kind: 'lora', adapter: loraAdapterOf(loaded) } };
    }
    return { id, model: { name: id, kind: 'full', checkpointDir: dir } };
  } catch {
    return null; // an unusable active adapter is compared by its manifest only (see Registry.promote)
  }
}

/** The rows a continued run trains on (incremental.ts), logged with their counts. */
async function continuedExamples(
  run: RunFolder,
  info: RunInfo,
  emit: (event: TrainEvent) => void,
): Promise<IncrementalSelection> {
  const parent = info.parent!;
  const selection = await incrementalExamples(run.datasetPath, info.repoRoot, parent, info.seed);
  emit({
    type: 'log',
    message:
      selection.note !== null
        ? `continuing ${parent.id}: ${selection.note}`
        : `continuing ${parent.id}: ${selection.changed.files} files changed since its commit (${selection.changed.tokens} tokens), ${selection.replay.tokens} tokens of older files replayed`,
  });
  return selection;
}

function openDataset(file: string, tokenizerSha256: string): DatasetReader | null {
  if (!fs.existsSync(file)) return null;
  try {
    const reader = DatasetReader.open(file);
    if (reader.header.tokenizer.sha256 !== tokenizerSha256) {
      reader.close();
      return null;
    }
    return reader;
  } catch {
    return null; // unfinished or corrupt: mined again
  }
}

function safeManifest(dir: string): AdapterManifest | null {
  try {
    return readManifest(dir);
  } catch {
    return null;
  }
}

function readJson<T>(file: string): T | null {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
  } catch {
    return null;
  }
}

function modelName(dir: string): string {
  try {
    const json = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')) as { _name_or_path?: string };
    if (json._name_or_path) return json._name_or_path;
  } catch {
    // fall through to the folder name
  }
  return path.basename(path.resolve(dir)) || os.hostname();
}

function assertGitRepository(folder: string): void {
  try {
    runGitSync(folder, ['rev-parse', '--is-inside-work-tree']);
  } catch {
    throw new Error(
      `not a git repository: ${folder} (Idiom mines the files git tracks; run \`git init\` and commit first)`,
    );
  }
}

function checkBudget(budget: Budget): void {
  if ('tokens' in budget) {
    if (!Number.isInteger(budget.tokens) || budget.tokens < 1)
      throw new Error(`--tokens must be a positive integer, got ${budget.tokens}`);
  } else if (!(Number.isFinite(budget.minutes) && budget.minutes > 0))
    throw new Error(`--minutes must be a positive number, got ${budget.minutes}`);
}

/** The staged candidate against what serves `mode` now, on replayed held-out lines (see compareOnReplay). */
async function replayStaged(
  staged: string,
  activeId: string | null,
  context: {
    repoRoot: string;
    repoStart: string;
    baseDir: string;
    mode: Mode;
    policy: Policy | null;
    emit: (event: TrainEvent) => void;
    signal?: AbortSignal;
    lines: number;
    seed: number;
  },
): Promise<QualityComparison | null> {
  const mined: MinedFile[] = [];
  await mineRepository(
    context.repoStart,
    { pathFilter: context.policy ? trainingPathFilter(context.policy) : undefined, signal: context.signal },
    (file) => void mined.push(file),
  );
  const quality = await compareOnReplay({
    repo: context.repoRoot,
    base: context.baseDir,
    candidate: path.resolve(staged),
    reference: activeId ?? 'none',
    mined,
    lines: context.lines,
    seed: context.seed,
    mode: context.mode === 'compliance' ? 'compliance' : 'complete',
    log: (message) => context.emit({ type: 'log', message }),
  });
  if (quality) {
    const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
    context.emit({
      type: 'log',
      message: `replayed ${quality.lines} held-out lines (${quality.points} points): candidate ${pct(quality.candidate.exactMatch)} exact, ${quality.reference.name} ${pct(quality.reference.score.exactMatch)}`,
    });
  }
  return quality;
}
