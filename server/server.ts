// The language server: LSP 3.18 inline completions plus the `idiom/*` methods of protocol.ts.
// The only code (with main.ts) that speaks LSP; the pipeline stages live in completion/, context/
// and model/ (base model, adapters), training runs in a child process (training/).

import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  ResponseError,
  TextDocuments,
  TextDocumentSyncKind,
  type CancellationToken,
  type Connection,
  type InitializeParams,
  type InitializeResult,
  type InlineCompletionItem,
  CodeActionKind,
  type WorkDoneProgressReporter,
} from 'vscode-languageserver';
import { TextDocument } from 'vscode-languageserver-textdocument';
import { CompletionProvider, defaultCompletionOptions, type CompletionDocument } from './completion/provider';
import { EndpointClient } from './completion/endpoint';
import { servedModelName } from '../trainer/adapters/export/export';
import type { PromptOrder } from './completion/prompt';
import { defaultRecallCheck, recallThreshold } from './completion/recall-check';
import { RepositoryMemory } from '../trainer/data/memory/memory';
import { readMemoryFile } from '../trainer/data/memory/file';
import { similarSnippets, type SnippetSource } from './context/snippets';
import type { Projection } from '../trainer/model/config';
import { packageRoot } from '../trainer/model/base-model';
import type { Registry } from '../trainer/adapters/registry';
import { oneLine, RepositoryAdapters } from './model/adapters';
import { registerSharingRequests } from './model/sharing';
import { appendDriftReading } from '../trainer/adapters/drift-log';
import { loadModel, type LoadedModel } from './model/host';
import { modelFolderProblem } from './model/preflight';
import { SessionCombinations } from './model/combination';
import { memoryRefusal, registerModelRequests } from './model/models';
import {
  ActivateRequest,
  AdaptersRequest,
  CancelTrainingRequest,
  defaultSettings,
  IdiomErrorCodes,
  MODES,
  RollbackRequest,
  ReviewRequest,
  SetModeRequest,
  StatusNotification,
  SuggestionAcceptedNotification,
  SuggestionEventNotification,
  SetEndpointKeyNotification,
  suggestionAcceptedCommand,
  StatusRequest,
  AdaptersReportRequest,
  TrainRequest,
  type ConfigurationSettings,
  type IdiomSettings,
  type InitializationOptions,
  type AdaptersResult,
  type Mode,
  type ServerState,
  type Combination,
  type StatusResult,
  type TrainingProgress,
  type TrainParams,
  type AdaptersParams,
  type TrainResult,
} from './protocol';
import { paramsProblem, requireParams, validatedDocumentEvents } from './params';
import { StatusBoard } from './status';
import { ComplianceGate } from './compliance/gate';
import { SuggestionStats } from './stats/suggestions';
import { registryTimelineHtml } from '../trainer/training/report/timeline';
import { defaultReviewSettings, ReviewService } from './review/diagnostics';
import { TrainJob } from './training/job';
import { DriftWatch, driftThresholds } from './drift/watch';
import type { TrainJobOptions } from './training/messages';
import { percentageOf, progressAfter } from './training/progress';

/** The package's embedded default model (models/), or '' when it is not installed. */
function embeddedModelPath(): string {
  const root = packageRoot();
  const dir = root ? path.join(root, 'models') : '';
  return dir !== '' && fs.existsSync(path.join(dir, 'config.json')) ? dir : '';
}

/** IDIOM_ENGINE_THREADS: compute threads of the completion engine (default: see loadModel). */
function engineThreadsFromEnvironment(): number | undefined {
  const fromEnv = Number(process.env.IDIOM_ENGINE_THREADS);
  return Number.isInteger(fromEnv) && fromEnv > 0 ? fromEnv : undefined;
}

/** Lines around the cursor that pick the repository context snippets. */
const snippetQueryLines = 20;

export function mergeSettings(base: IdiomSettings, change: Partial<IdiomSettings> | undefined): IdiomSettings {
  if (!change || typeof change !== 'object') return base;
  return {
    ...base,
    ...change,
    training: { ...base.training, ...(change.training ?? {}) },
    lora: { ...base.lora, ...(change.lora ?? {}) },
    review: { ...base.review, ...(change.review ?? {}) },
    completion: { ...base.completion, ...(change.completion ?? {}) },
    adapters: { ...base.adapters, ...(change.adapters ?? {}) },
    drift: { ...base.drift, ...(change.drift ?? {}) },
    endpoint: { ...base.endpoint, ...(change.endpoint ?? {}) },
  };
}

export class IdiomServer {
  private readonly documents = new TextDocuments(TextDocument);
  private readonly status: StatusBoard;
  private readonly completions: CompletionProvider;
  private settings: IdiomSettings = defaultSettings;
  private defaultModelPath = '';
  private trusted = true;
  /** The serving adapter's repository memory (memory.jsonl.gz in its folder), if any. */
  private memory: RepositoryMemory | null = null;
  /** initializationOptions.adapter: what serves instead of the registry's active adapter. */
  private pinnedAdapter: string | null = null;
  private workspaceRoots: string[] = [];
  private adapters: RepositoryAdapters | null = null;
  private model: LoadedModel | null = null;
  private loadedModelPath: string | null = null;
  private loadedPrecision: IdiomSettings['precision'] | null = null;
  /** The state of the model alone (what the status shows when not training and enabled). */
  private modelState: ServerState = 'starting';
  private training: { job: TrainJob; progress: TrainingProgress | null } | null = null;
  /** Model loads and adapter switches, one after the other. */
  private loading: Promise<void> = Promise.resolve();
  private readonly reviews: ReviewService;
  private driftWatch: DriftWatch | null = null;
  private gate: ComplianceGate | null = null;
  private readonly combinations = new SessionCombinations({
    mode: () => this.settings.mode,
    setting: () => this.settings.adapters,
    trusted: () => this.trusted,
    adapters: () => this.adapters,
    model: () => this.model,
    reload: () => this.reloadAdapter(),
    status: () => this.status.current,
  });
  /** Held in memory only (SetEndpointKeyNotification). */
  private endpointKey: string | null = null;
  private readonly endpoint = new EndpointClient(
    () => this.settings.endpoint ?? defaultSettings.endpoint,
    () => this.endpointKey,
    () => (this.status.current.adapter ? servedModelName(this.status.current.adapter.id) : 'idiom'),
    (state) => this.status.update({ endpoint: state }),
  );
  private readonly suggestions = new SuggestionStats(() => this.statsRegistry(), {
    info: (line) => this.connection.console.info(line),
    error: (line) => this.logError(line),
  });

  constructor(private readonly connection: Connection) {
    this.status = new StatusBoard(
      {
        state: 'starting',
        mode: 'complete',
        model: null,
        adapter: null,
        training: null,
        trusted: true,
        message: 'starting',
        adapterProblem: null,
      },
      (status) => void connection.sendNotification(StatusNotification, status).catch(() => undefined),
    );
    this.completions = new CompletionProvider(
      () => (this.settings.enable ? this.model : null),
      (document) => this.snippetsFor(document),
      { error: (line) => this.logError(line), warn: (line) => this.connection.console.warn(line) },
      () => this.completionOptions(),
      () => this.memory,
      () => (this.settings.endpoint?.url ? this.endpoint : null),
    );
    this.documents.onDidChangeContent((change) =>
      this.completions.documentChanged(change.document.uri, change.document.getText()),
    );
    this.reviews = new ReviewService({
      model: () => (this.settings.enable ? this.model : null),
      settings: () => ({
        percentile: this.settings.review?.percentile ?? defaultReviewSettings.percentile,
        aggregate: this.settings.review?.aggregate ?? defaultReviewSettings.aggregate,
      }),
      publish: (uri, diagnostics) => void connection.sendDiagnostics({ uri, diagnostics }).catch(() => undefined),
      document: (uri) => this.documents.get(uri),
      log: (line) => this.connection.console.info(line),
    });
    // Review mode reviews a document when it is opened and saved (debounced), never on each keystroke.
    this.documents.onDidOpen((event) => this.settings.mode === 'review' && this.reviews.schedule(event.document.uri));
    this.documents.onDidSave((event) => this.settings.mode === 'review' && this.reviews.schedule(event.document.uri));
    this.documents.onDidClose((event) => this.reviews.forget(event.document.uri));
    this.register();
    this.documents.listen(validatedDocumentEvents(connection, (line) => this.connection.console.warn(line)));
  }

  private logError(line: string): void {
    this.connection.console.error(line);
  }

  private register(): void {
    const connection = this.connection;
    connection.onInitialize((params) => this.initialize(requireParams('initialize', params)));
    connection.onInitialized(() => this.reloadModel());
    connection.onDidChangeConfiguration((change) => {
      const problem = paramsProblem('workspace/didChangeConfiguration', change);
      if (problem) return this.connection.console.warn(`ignored ${problem}`);
      const settings = (change.settings as ConfigurationSettings | null | undefined)?.idiom;
      const previousMode = this.settings.mode;
      const previousAdapters = JSON.stringify(this.settings.adapters);
      const previousEndpoint = JSON.stringify(this.settings.endpoint);
      this.settings = mergeSettings(this.settings, settings);
      if (JSON.stringify(this.settings.endpoint) !== previousEndpoint) {
        this.endpoint.reset();
        this.completions.modelChanged(); // what the other generator decoded is not this one's
      }
      this.status.update({ mode: this.settings.mode, state: this.displayedState() });
      this.reloadModel();
      this.driftWatch?.schedule();
      if (this.settings.mode !== previousMode) void this.modeChanged();
      else if (JSON.stringify(this.settings.adapters) !== previousAdapters) void this.reloadAdapter();
    });
    connection.onShutdown(async () => {
      this.driftWatch?.dispose();
      this.completions.inflight.abortAll('shutting down');
      this.training?.job.cancel();
      await this.model?.dispose();
    });

    connection.languages.inlineCompletion.on(async (params, token) => {
      requireParams('textDocument/inlineCompletion', params);
      const document = this.documents.get(params.textDocument.uri);
      if (
        !document ||
        (Array.isArray(this.settings.disabledLanguages) &&
          this.settings.disabledLanguages.includes(document.languageId))
      )
        return null;
      const offset = document.offsetAt(params.position);
      // A position beyond the document is clamped (as offsetAt does), never echoed back.
      const at = document.positionAt(offset);
      const text = document.getText();
      const answer = await this.completions.complete(
        { uri: document.uri, languageId: document.languageId, text, offset },
        token,
      );
      if (!answer || token.isCancellationRequested) return null;
      const item: InlineCompletionItem = {
        insertText: answer.text,
        range: { start: at, end: at },
      };
      let id = SuggestionStats.newId();
      if (this.settings.mode === 'compliance') {
        const allowed = await this.checkCompliance(document.uri, answer.text, text, offset);
        if (allowed === null) return null;
        id = allowed;
      }
      // Every item carries its id: the client's events count for the adapter that served it.
      this.suggestions.remember(id, this.status.current.adapter?.id ?? null, this.settings.mode, answer.text);
      item.command = { title: 'Idiom: suggestion accepted', command: suggestionAcceptedCommand, arguments: [id] };
      return { items: [item] };
    });
    connection.onNotification(SuggestionAcceptedNotification, (params) => {
      const problem = paramsProblem('idiom/suggestionAccepted', params);
      if (problem) return this.connection.console.warn(`ignored ${problem}`);
      const servedIn = this.suggestions.modeOf(params.id);
      this.suggestions.record(params.id, 'accepted');
      if (servedIn !== null && servedIn !== 'compliance') return;
      const gate = this.complianceGate();
      if (!gate) return;
      gate.accepted(params.id, 'compliance').then(
        (known) =>
          known ||
          this.connection.console.info(
            `accept of an unknown suggestion ${params.id} (not served by this server, or already logged)`,
          ),
        (error) => this.logError(`cannot write the audit log: ${oneLine(error)}`),
      );
    });
    connection.onNotification(SetEndpointKeyNotification, (params) => {
      const key = (params as { key?: unknown } | null)?.key;
      if (key !== null && typeof key !== 'string')
        return this.connection.console.warn('ignored idiom/setEndpointKey: key must be a string or null');
      this.endpointKey = key === '' ? null : key;
    });
    connection.onNotification(SuggestionEventNotification, (params) => {
      const problem = paramsProblem('idiom/suggestionEvent', params);
      if (problem) return this.connection.console.warn(`ignored ${problem}`);
      if (!this.suggestions.record(params.id, params.event, params.chars ?? 0))
        this.connection.console.info(
          `${params.event} of an unknown suggestion ${params.id} (not served by this server)`,
        );
    });
    connection.onCodeAction((params) => {
      requireParams('textDocument/codeAction', params);
      return this.reviews.codeActions(params.textDocument.uri, params.context.diagnostics).catch((error) => {
        this.logError(`review code action failed: ${oneLine(error)}`);
        return [];
      });
    });
    connection.onRequest(ReviewRequest, async (params) => {
      requireParams('idiom/review', params);
      try {
        return await this.reviews.review(params.uri, params.all === true);
      } catch (error) {
        return { reviewed: 0, flagged: [], threshold: null, problem: oneLine(error) };
      }
    });

    connection.onRequest(StatusRequest, () => this.status.current);
    connection.onRequest(SetModeRequest, async (params) => {
      requireParams('idiom/setMode', params);
      const changed = params.mode !== this.settings.mode;
      this.settings = { ...this.settings, mode: params.mode };
      this.status.update({ mode: params.mode });
      // Answered once the mode's adapter serves, so the next request already uses it.
      if (changed) await this.modeChanged();
      return this.status.current;
    });
    connection.onRequest(TrainRequest, (params, token) =>
      this.train(requireParams<TrainParams | null>('idiom/train', params) ?? {}, token),
    );
    connection.onRequest(CancelTrainingRequest, () => {
      if (!this.training) return { cancelled: false };
      this.training.job.cancel();
      return { cancelled: true };
    });
    connection.onRequest(AdaptersRequest, async (params) => ({
      adapters: await this.requireAdapters(requireParams<AdaptersParams | null>('idiom/adapters', params)?.root).list(),
    }));
    connection.onRequest(AdaptersReportRequest, async (params) => {
      const adapters = this.requireAdapters(requireParams<AdaptersParams | null>('idiom/adaptersReport', params)?.root);
      return { html: await registryTimelineHtml(adapters.repoRoot) };
    });
    connection.onRequest(ActivateRequest, async (params) => {
      requireParams('idiom/activate', params);
      const mode = this.modeParam(params.mode);
      return this.changeRegistry(mode, (registry) =>
        registry.activate(params.id, mode, { reason: 'activated from the editor' }),
      );
    });
    registerModelRequests(connection, {
      settings: () => this.settings,
      trusted: () => this.trusted,
      embeddedPath: () => this.defaultModelPath,
      configuredPath: () => (this.modelPath() === this.defaultModelPath ? '' : this.modelPath()),
      log: (line) => this.connection.console.info(line),
    });
    this.combinations.register(connection);
    registerSharingRequests(connection, {
      trusted: () => this.trusted,
      mode: () => this.settings.mode,
      adapters: () => this.requireAdapters(undefined),
    });
    connection.onRequest(RollbackRequest, async (params) => {
      requireParams('idiom/rollback', params);
      const mode = this.modeParam(params?.mode);
      return this.changeRegistry(mode, (registry) =>
        registry.rollback(mode, { reason: 'rolled back from the editor' }),
      );
    });
  }

  private initialize(params: InitializeParams): InitializeResult {
    const options = (params.initializationOptions ?? {}) as InitializationOptions;
    this.settings = mergeSettings(defaultSettings, options.settings);
    // Other editors launch `idiom lsp --stdio` without options: the package's embedded model serves.
    this.defaultModelPath =
      typeof options.defaultModelPath === 'string' ? options.defaultModelPath : embeddedModelPath();
    this.trusted = options.trusted !== false;
    this.pinnedAdapter = typeof options.adapter === 'string' && options.adapter !== '' ? options.adapter : null;
    const folders = (params.workspaceFolders ?? []).map((folder) => folder.uri);
    if (folders.length === 0 && params.rootUri) folders.push(params.rootUri);
    this.workspaceRoots = folders.filter((uri) => uri.startsWith('file:')).map((uri) => fileURLToPath(uri));
    this.adapters = this.workspaceRoots.length > 0 ? RepositoryAdapters.forFolder(this.workspaceRoots[0]) : null;
    // Activations made elsewhere (the CLI, a run in a terminal) take effect here too.
    this.adapters?.watch(() => void this.adapterMayHaveChanged());
    if (this.adapters) this.combinations.watch(this.adapters, () => void this.reloadAdapter());
    if (this.adapters && this.trusted) this.startDriftWatch(this.adapters);
    this.status.update({ mode: this.settings.mode, trusted: this.trusted });
    return {
      capabilities: {
        textDocumentSync: { openClose: true, change: TextDocumentSyncKind.Incremental, save: { includeText: false } },
        inlineCompletionProvider: true,
        codeActionProvider: { codeActionKinds: [CodeActionKind.QuickFix] },
      },
      serverInfo: { name: 'idiom', version: '0.1.0' },
    };
  }

  // ---- model and adapter ---------------------------------------------------------------------

  /** The base model directory the settings ask for: a custom one only in a trusted workspace. */
  private modelPath(): string {
    const custom = this.settings.baseModelPath.trim();
    if (custom !== '' && this.trusted) {
      return path.isAbsolute(custom) || this.workspaceRoots.length === 0
        ? custom
        : path.join(this.workspaceRoots[0], custom);
    }
    return this.defaultModelPath;
  }

  private displayedState(): ServerState {
    if (!this.settings.enable) return 'disabled';
    if (this.training) return 'training';
    return this.modelState;
  }

  private setModelState(state: ServerState, change: Partial<StatusResult> = {}): void {
    this.modelState = state;
    this.status.update({ ...change, state: this.displayedState() });
  }

  /** Loads the configured base model unless it is already the one serving. Serialized. */
  private reloadModel(): void {
    this.loading = this.loading.then(() => this.loadConfiguredModel());
  }

  /** Serves what is active for the current mode on the loaded base. Serialized after loads. */
  private reloadAdapter(): Promise<void> {
    this.loading = this.loading.then(() => this.loadServingAdapter());
    return this.loading;
  }

  private async loadConfiguredModel(): Promise<void> {
    const dir = this.modelPath();
    const precision = this.settings.precision;
    if (dir === this.loadedModelPath && precision === this.loadedPrecision && this.modelState !== 'starting') return;
    // A model this machine cannot hold is not loaded: what serves now keeps serving.
    const refusal = dir === '' || dir === this.defaultModelPath ? null : memoryRefusal(dir, precision);
    if (refusal) {
      this.logError(`not loading the base model: ${refusal}`);
      if (this.model) this.status.update({ message: `${refusal}; still serving ${this.model.info.name}` });
      else this.setModelState('no-model', { model: null, adapter: null, message: `no model: ${refusal}` });
      return;
    }
    // A folder whose config, weights or FIM tokens cannot serve this mode: what serves now keeps serving.
    const problem = this.model && dir !== '' ? await modelFolderProblem(dir, this.settings.mode, precision) : null;
    if (problem && this.model) {
      this.logError(`not loading the base model: ${problem}`);
      this.status.update({ message: `${problem}; still serving ${this.model.info.name}` });
      return;
    }
    this.setModelState('loading', { message: dir === '' ? 'looking for a model' : `loading ${dir}` });
    this.completions.modelChanged();
    const previous = this.model;
    const previousLoad = previous
      ? { dir: this.loadedModelPath ?? '', precision: this.loadedPrecision ?? precision }
      : null;
    this.model = null;
    await previous?.dispose().catch(() => undefined);
    this.loadedModelPath = dir;
    this.loadedPrecision = precision;
    try {
      const result = await loadModel(dir, { threads: engineThreadsFromEnvironment(), precision });
      if (result.model) {
        await this.serve(result.model);
      } else {
        this.logError(`no model: ${result.reason}`);
        this.setModelState('no-model', { model: null, adapter: null, message: `no model: ${result.reason}` });
      }
    } catch (error) {
      const message = `cannot load the base model: ${oneLine(error)}`;
      this.logError(message);
      // The previous model goes back to serving; the failed folder is not retried until the setting changes.
      const restored = previousLoad ? await this.restoreModel(previousLoad.dir, previousLoad.precision) : null;
      if (restored) this.status.update({ message: `${message}; still serving ${restored.info.name}` });
      else this.setModelState('error', { model: null, adapter: null, message });
    }
  }

  private async serve(model: LoadedModel): Promise<void> {
    // Ready once what serves this mode is on: the first completion already uses the adapter.
    const serving = await this.applyServingAdapter(model);
    this.model = model;
    this.setModelState('ready', { model: model.info, ...serving });
    this.driftWatch?.schedule();
    if (model.completionProblem) this.logError(`no inline completion: ${model.completionProblem}`);
  }

  /** Loads what served before a failed switch; null when that fails too. */
  private async restoreModel(dir: string, precision: IdiomSettings['precision']): Promise<LoadedModel | null> {
    try {
      const result = await loadModel(dir, { threads: engineThreadsFromEnvironment(), precision });
      if (!result.model) return null;
      await this.serve(result.model);
      return result.model;
    } catch (error) {
      this.logError(`cannot load the previous base model again: ${oneLine(error)}`);
      return null;
    }
  }

  /** Scores the serving adapter on what changed since its commit whenever HEAD or the adapter moves. */
  private startDriftWatch(adapters: RepositoryAdapters): void {
    this.driftWatch = new DriftWatch({
      root: adapters.repoRoot,
      model: () => this.model,
      manifest: async () => {
        const id = this.status.current.adapter?.id;
        const registry = id ? await adapters.registry(false) : null;
        return registry && id ? registry.manifest(id) : null;
      },
      thresholds: () => driftThresholds(this.settings.drift),
      publish: (drift) => this.status.update({ drift }),
      record: (drift) => {
        // Only where the registry already exists and the workspace is trusted, like stats.jsonl.
        const dir = this.trusted ? adapters.writableRegistryDir() : null;
        if (!dir) return;
        try {
          appendDriftReading(dir, {
            at: new Date().toISOString(),
            adapter: drift.adapterId,
            head: drift.head,
            commitsBehind: drift.commitsBehind,
            lossIncrease: drift.lossIncrease,
            drifted: drift.drifted,
          });
        } catch (error) {
          this.connection.console.warn(`cannot record the drift reading: ${oneLine(error)}`);
        }
      },
      log: (line) => this.connection.console.info(line),
    });
    void this.driftWatch.start();
  }

  private async loadServingAdapter(): Promise<void> {
    const model = this.model;
    if (!model) return;
    this.status.update(await this.applyServingAdapter(model));
    this.driftWatch?.schedule();
  }

  /** Puts what is active for the current mode on `model` (the base when it cannot load); the status fields to show. */
  private async applyServingAdapter(
    model: LoadedModel,
  ): Promise<Pick<StatusResult, 'adapter' | 'adapterProblem' | 'message' | 'combination'>> {
    const mode = this.settings.mode;
    // Several adapters as one, unless a pinned adapter (a side-by-side comparison) serves.
    const combined = this.pinnedAdapter === null ? await this.combinations.servingFor(model, mode) : null;
    let combination = combined?.combination ?? null;
    // A repository's .idiom/ is content of that repository: untrusted, it never reaches the engine.
    const choice =
      combined?.choice ??
      (this.adapters && this.trusted
        ? await this.adapters.servingFor(model, mode, this.pinnedAdapter)
        : { weights: { kind: 'base' } as const, adapter: null, problem: null });
    try {
      await model.setWeights(choice.weights);
    } catch (error) {
      choice.problem = `cannot switch to adapter ${choice.adapter?.id ?? combination?.label ?? ''}: ${oneLine(error)}; serving the base model`;
      choice.adapter = null;
      combination = null;
      await model.setWeights({ kind: 'base' }).catch(() => undefined);
    }
    this.memory = this.loadMemory(
      combination ? await this.combinationFolders(combination) : choice.adapter ? [choice.adapter.path] : [],
    );
    this.completions.modelChanged();
    if (choice.problem) this.logError(choice.problem);
    const serving = combination
      ? `${model.info.name} + ${combination.label}`
      : choice.adapter
        ? `${model.info.name} + adapter ${choice.adapter.id}`
        : model.info.name;
    return {
      adapter: choice.adapter,
      adapterProblem: choice.problem,
      message: choice.problem ?? `serving ${serving} (${mode})`,
      combination,
    };
  }

  /** The registry folders of a combination's adapters, the heaviest first. */
  private async combinationFolders(combination: Combination): Promise<string[]> {
    const registry = await this.adapters?.registry(false);
    if (!registry) return [];
    return [...combination.adapters].sort((a, b) => b.weight - a.weight).map((a) => registry.adapterPath(a.id));
  }

  /**
   * The repository memory the serving adapter folders carry (a combination's together, a path
   * the first folder holds winning); null without any. A bad file costs one log line.
   */
  private loadMemory(adapterDirs: readonly string[]): RepositoryMemory | null {
    const byPath = new Map<string, string>();
    for (const dir of adapterDirs) {
      try {
        for (const document of readMemoryFile(dir) ?? [])
          if (!byPath.has(document.path)) byPath.set(document.path, document.text);
      } catch (error) {
        this.logError(`repository memory not loaded: ${oneLine(error)}`);
      }
    }
    return byPath.size > 0 ? new RepositoryMemory([...byPath].map(([path, text]) => ({ path, text }))) : null;
  }

  private completionOptions(): typeof defaultCompletionOptions {
    const settings = this.settings.completion ?? defaultSettings.completion;
    const minConfidence = Number(settings.minConfidence);
    const maxNewTokens = Number(settings.maxNewTokens);
    return {
      ...defaultCompletionOptions,
      minConfidence:
        Number.isFinite(minConfidence) && minConfidence >= 0 && minConfidence <= 1
          ? minConfidence
          : defaultSettings.completion.minConfidence,
      maxNewTokens:
        Number.isInteger(maxNewTokens) && maxNewTokens >= 1 && maxNewTokens <= 512
          ? maxNewTokens
          : defaultCompletionOptions.maxNewTokens,
      recall: settings.recall === false ? null : defaultCompletionOptions.recall,
      recallCheck: {
        minLogprob: recallThreshold(settings.recallMinLogprob, defaultRecallCheck.minLogprob),
        minTokenLogprob: recallThreshold(settings.recallMinTokenLogprob, defaultRecallCheck.minTokenLogprob),
      },
      promptOrder: this.promptOrder(settings.prompt),
    };
  }

  private promptOrder(setting: string | undefined): PromptOrder {
    if (setting === 'fim') return 'psm';
    if (setting === 'prefix') return 'prefix';
    return this.loadedModelPath !== null && this.loadedModelPath === this.defaultModelPath ? 'prefix' : 'psm';
  }

  // ---- modes ---------------------------------------------------------------------------------

  private modeChanged(): Promise<void> {
    return this.reloadAdapter().then(() => {
      if (this.settings.mode !== 'review') return this.reviews.clear();
      for (const document of this.documents.all()) this.reviews.schedule(document.uri);
    });
  }

  private complianceGate(): ComplianceGate | null {
    if (!this.gate && this.adapters) this.gate = new ComplianceGate(this.adapters.repoRoot);
    return this.gate;
  }

  /** The id of a suggestion the policy allows (logged as served), or null (blocked, logged, never shown). */
  private async checkCompliance(
    uri: string,
    suggestion: string,
    fileText: string,
    offset: number,
  ): Promise<string | null> {
    const gate = this.complianceGate();
    if (!gate) {
      this.logError('compliance mode needs a workspace folder with idiom-policy.json: nothing is served');
      return null;
    }
    try {
      const answer = await gate.check({
        file: uri.startsWith('file:') ? fileURLToPath(uri) : null,
        text: suggestion,
        fileText,
        offset,
        mode: 'compliance',
        adapter: this.status.current.adapter,
      });
      if (!answer.allowed) {
        this.connection.console.info(`compliance mode: suggestion not shown: ${answer.reason}`);
        return null;
      }
      return answer.id;
    } catch (error) {
      // No audit entry, no suggestion.
      this.logError(`cannot write the audit log ${gate.auditFile}: ${oneLine(error)}`);
      return null;
    }
  }

  // ---- registry ------------------------------------------------------------------------------

  /** Where suggestion events are counted: the registry folder of a trusted workspace, once it exists. */
  private statsRegistry(): string | null {
    if (!this.trusted || !this.adapters) return null;
    return this.adapters.writableRegistryDir();
  }

  private async adapterMayHaveChanged(): Promise<void> {
    const model = this.model;
    if (!model || !this.adapters || !this.trusted) return;
    // A combination serves instead of the active adapter: an activation does not change it.
    if (this.status.current.combination) return;
    const registry = await this.adapters.registry(false).catch(() => null);
    const activeId = registry ? await registry.activeId(this.settings.mode).catch(() => undefined) : null;
    if (activeId === undefined || activeId === model.adapterId) return;
    this.connection.console.info(
      `the active ${this.settings.mode} adapter changed to ${activeId ?? 'none (base model)'}`,
    );
    await this.reloadAdapter();
  }

  private requireAdapters(root: string | undefined): RepositoryAdapters {
    if (typeof root === 'string' && root !== '') {
      const adapters = RepositoryAdapters.forFolder(root);
      return this.adapters && adapters.repoRoot === this.adapters.repoRoot ? this.adapters : adapters;
    }
    if (!this.adapters)
      throw new ResponseError(IdiomErrorCodes.noWorkspace, 'open a folder: adapters belong to a repository');
    return this.adapters;
  }

  private modeParam(mode: unknown): Mode {
    if (mode === undefined || mode === null) return this.settings.mode;
    if (!MODES.includes(mode as Mode))
      throw new ResponseError(
        IdiomErrorCodes.invalidParams,
        `unknown mode ${JSON.stringify(mode)}; expected one of ${MODES.join(', ')}`,
      );
    return mode as Mode;
  }

  /** Activation or rollback: the registry changes, then the server serves what is now active. */
  private async changeRegistry(mode: Mode, change: (registry: Registry) => Promise<unknown>): Promise<AdaptersResult> {
    if (!this.trusted)
      throw new ResponseError(IdiomErrorCodes.untrusted, 'adapters cannot be changed in an untrusted workspace');
    const adapters = this.requireAdapters(undefined);
    const registry = await adapters.registry(true);
    try {
      await change(registry!);
    } catch (error) {
      throw new ResponseError(IdiomErrorCodes.invalidParams, oneLine(error));
    }
    if (mode === this.settings.mode) await this.reloadAdapter();
    return { adapters: await adapters.list() };
  }

  // ---- training ------------------------------------------------------------------------------

  private async train(params: TrainParams, token: CancellationToken): Promise<TrainResult> {
    if (!this.trusted)
      throw new ResponseError(IdiomErrorCodes.untrusted, 'training is disabled in an untrusted workspace');
    const root = typeof params.root === 'string' && params.root !== '' ? params.root : this.workspaceRoots[0];
    if (!root) throw new ResponseError(IdiomErrorCodes.noWorkspace, 'open a folder to train on its repository');
    if (this.training)
      throw new ResponseError(IdiomErrorCodes.busy, 'a training run is already in progress (idiom/cancel stops it)');
    const base = this.modelPath();
    if (base === '')
      throw new ResponseError(IdiomErrorCodes.noModel, 'no base model to train (set idiom.baseModelPath)');
    const device = params.device ?? this.settings.device;
    const lora = params.lora ?? this.settings.lora;
    const mode = this.settings.mode;
    const options: TrainJobOptions = {
      repo: root,
      base,
      method: params.method ?? 'lora',
      budget:
        typeof params.tokens === 'number'
          ? { tokens: params.tokens }
          : { minutes: params.minutes ?? this.settings.training.minutes },
      mode,
      backend: device === 'cpu' ? 'ort' : device === 'gpu' ? 'torch' : 'auto',
      force: params.force ?? false,
      // A continued adapter keeps its parent's LoRA settings.
      ...(typeof params.from === 'string' && params.from !== ''
        ? { from: params.from }
        : { lora: { r: lora.r, alpha: lora.alpha, targets: lora.targets as Projection[] } }),
      ...(params.threads ? { threads: params.threads } : {}),
      ...(params.learningRate ? { learningRate: params.learningRate } : {}),
      ...(params.seed !== undefined ? { seed: params.seed } : {}),
    };

    const reporter: WorkDoneProgressReporter & { token?: CancellationToken } =
      params.workDoneToken !== undefined
        ? this.connection.window.attachWorkDoneProgress(params.workDoneToken)
        : await this.connection.window.createWorkDoneProgress();
    reporter.begin('Idiom: training on this repository', 0, 'starting', true);
    let percentage = 0;
    const job = TrainJob.start(options, (event) => {
      if (event.type === 'log') this.connection.console.info(`training: ${event.message}`);
      if (!this.training || this.training.job !== job) return;
      const progress = progressAfter(this.training.progress, event);
      if (!progress) return;
      this.training.progress = progress;
      percentage = percentageOf(progress, percentage);
      reporter.report(percentage, progress.message);
      this.status.update({ training: progress, message: `training: ${progress.message}` });
    });
    this.training = { job, progress: null };
    this.status.update({
      state: this.displayedState(),
      training: { phase: 'mining', message: 'starting', fraction: 0 },
      message: `training on ${root}`,
    });
    const cancelListeners = [
      token.onCancellationRequested(() => job.cancel()),
      reporter.token?.onCancellationRequested(() => job.cancel()),
    ];

    const outcome = await job.outcome;
    for (const listener of cancelListeners) listener?.dispose();
    this.training = null;
    reporter.done();
    this.status.update({
      state: this.displayedState(),
      training: null,
      message: this.model ? `serving ${this.model.info.name}` : this.status.current.message,
    });

    if (outcome.kind === 'cancelled') {
      this.connection.console.info(outcome.message);
      throw new ResponseError(IdiomErrorCodes.cancelled, outcome.message);
    }
    if (outcome.kind === 'failed') {
      const line = `training failed: ${outcome.message.replace(/\s*\n\s*/g, ' ')}`;
      this.logError(line);
      if (this.model) await this.reloadAdapter();
      throw new ResponseError(IdiomErrorCodes.trainingFailed, line);
    }
    const result = outcome.result;
    this.connection.console.info(`trained ${result.adapter.id}: ${result.promotionReason}`);
    // The new adapter serves from the next completion on, without a restart.
    if (this.model && mode === this.settings.mode) await this.reloadAdapter();
    const adapters = RepositoryAdapters.forFolder(root);
    const summary = (await adapters.summary(result.adapter.id)) ?? {
      id: result.adapter.id,
      created: '',
      mode,
      active: result.activated,
      path: result.adapter.path,
      parent: null,
      metrics: null,
      training: null,
    };
    return {
      adapter: summary,
      activated: result.activated,
      reason: result.promotionReason,
      tokens: result.tokens,
      seconds: result.seconds,
      steps: result.steps,
      report: result.report,
    };
  }

  // ---- context -------------------------------------------------------------------------------

  private snippetsFor(document: CompletionDocument): ReturnType<typeof similarSnippets> {
    const before = document.text.slice(0, document.offset).split('\n');
    const query = before.slice(-snippetQueryLines).join('\n');
    const sources: SnippetSource[] = [];
    const gate = this.settings.mode === 'compliance' ? this.complianceGate() : null;
    for (const other of this.documents.all()) {
      if (other.uri === document.uri) continue;
      // Compliance: only files the policy allows as context reach the prompt (none without a policy).
      if (
        this.settings.mode === 'compliance' &&
        !(gate && other.uri.startsWith('file:') && gate.contextAllowed(fileURLToPath(other.uri)))
      )
        continue;
      sources.push({ path: this.relativePath(other.uri), text: other.getText() });
    }
    return similarSnippets(query, sources);
  }

  private relativePath(uri: string): string {
    if (!uri.startsWith('file:')) return uri;
    const file = fileURLToPath(uri);
    for (const root of this.workspaceRoots) {
      const relative = path.relative(root, file);
      if (!relative.startsWith('..') && !path.isAbsolute(relative)) return relative;
    }
    return path.basename(file);
  }

  listen(): void {
    this.connection.listen();
  }

  /** Resolves once the model the settings ask for is loaded (or known to be missing). */
  whenIdle(): Promise<void> {
    return this.loading;
  }
}
