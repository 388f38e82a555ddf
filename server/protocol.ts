// The one seam between the extension and the language server: every custom `idiom/*` method and
// notification as a typed constant, plus the settings and status shapes both sides exchange.
// It imports vscode-jsonrpc (shared by client and server), types of the trainer (erased from the
// bundle) and trainer/adapters/mode.ts (no imports), so the extension bundle pulls in no server or
// trainer code. Any LSP client (Neovim, Helix, Emacs) can call these methods by name.

import { NotificationType, RequestType, type ProgressToken } from 'vscode-jsonrpc';
import type { AdapterWeight } from '../trainer/adapters/combine';
import type { DriftReport } from '../trainer/training/eval/drift';
import type { HeldOutMetrics } from '../trainer/adapters/manifest';
import type { Mode } from '../trainer/adapters/mode';
import type { AdapterEntry } from '../trainer/adapters/registry';
import type { LocalModel, MachineMemory } from '../trainer/model/hub/catalog';
import type { Acceptance, SuggestionEvent } from '../trainer/adapters/stats';

export { MODES } from '../trainer/adapters/mode';
export { labelWithAge } from '../trainer/adapters/label';
export type { Acceptance, HeldOutMetrics, LocalModel, Mode, SuggestionEvent };

export type { AdapterWeight };

export type Device = 'auto' | 'cpu' | 'gpu';

/** How a completion endpoint is spoken to (server/completion/endpoint.ts). */
export type EndpointKind = 'openai-completions' | 'llama-infill';

export interface EndpointSettings {
  /** Base URL, e.g. http://127.0.0.1:8080; '' completes locally. */
  url: string;
  kind: EndpointKind;
  /** The model (or LoRA module) name the server knows; '' asks for `idiom-<id>` of the serving adapter (as exported). */
  model: string;
  timeoutMs: number;
}

export interface EndpointState {
  url: string;
  kind: EndpointKind;
  state: 'up' | 'down';
  /** Why it is down (one line). */
  message: string | null;
}

export const PRECISION_SETTINGS = ['auto', 'float32', 'int8', 'int4'] as const;
export type PrecisionSetting = (typeof PRECISION_SETTINGS)[number];

/** The `idiom.*` settings, as the extension reads them and the server receives them. */
export interface IdiomSettings {
  enable: boolean;
  /** Language ids (`markdown`, `plaintext`, …) that get no inline completions. */
  disabledLanguages: string[];
  /** Directory of an HF-style checkpoint (config.json, model.safetensors, tokenizer.json); '' = the bundled default model. */
  baseModelPath: string;
  device: Device;
  /**
   * Weights of the served base model: 'auto' is int8 for a model above ~100M parameters and
   * float32 for the embedded one; the LoRA adapter stays float32 on top (a feed).
   */
  precision: PrecisionSetting;
  /** `incremental`: Retrain continues the active LoRA adapter (`idiom train --from active`, its LoRA settings). */
  training: { minutes: number; incremental: boolean };
  lora: { r: number; alpha: number; targets: string[] };
  debounceMs: number;
  mode: Mode;
  /** Review mode: the top share (%) of the repository's lines that is unusual, and the line aggregate (max of the tokens' surprisal, or their mean). */
  review?: { percentile?: number; aggregate?: 'mean' | 'max' };
  /**
   * Inline completions: the model's suggestion shows only when its first line is at least
   * `minConfidence` probable (0 shows all), decoded in at most `maxNewTokens` tokens; `recall`
   * shows a line written the same way in this file or the adapter's repository memory; `prompt` asks the model to fill in the middle ('fim') or
   * to continue the text before the cursor ('prefix'); 'auto' is 'prefix' for the embedded model
   * (too small to fill in the middle: its model card measures 0% FIM line exact match) and 'fim'
   * for any other. A recalled line is hidden when the serving model finds it (with its line end)
   * less likely than `recallMinLogprob` as a whole or `recallMinTokenLogprob` per token (natural
   * log); null turns that check off.
   */
  completion: {
    minConfidence: number;
    maxNewTokens?: number;
    recall: boolean;
    recallMinLogprob?: number | null;
    recallMinTokenLogprob?: number | null;
    prompt: 'auto' | 'fim' | 'prefix';
  };
  /** Where `idiom/downloadModel` fetches models (the Hugging Face Hub or a mirror); '' turns downloads off. */
  hubEndpoint: string;
  /**
   * Per mode, LoRA adapters served together as one ({id, weight}; weight 1 when left out); an
   * empty list serves the registry's combination (`idiom adapters combine`) or active adapter.
   */
  adapters: Record<Mode, AdapterWeight[]>;
  /** When HEAD moves the active adapter is scored on the changed files: drifted past +lossIncrease or more than commitsBehind commits. */
  drift: { lossIncrease: number; commitsBehind: number };
  /**
   * A model server that generates completions instead of the local engine (url '' = local):
   * `kind` is its protocol, `model` the name it serves (default: the serving adapter's id),
   * `timeoutMs` how long a completion may take before the local model answers instead.
   */
  endpoint: EndpointSettings;
}

/** `idiom.completion.maxNewTokens` when unset: a few lines of code. */
export const DEFAULT_MAX_NEW_TOKENS = 64;

export const defaultSettings: IdiomSettings = {
  enable: true,
  // Prose, as Copilot's defaults: a code model's guesses there are noise.
  disabledLanguages: ['plaintext', 'markdown'],
  baseModelPath: '',
  device: 'auto',
  precision: 'auto',
  training: { minutes: 10, incremental: true },
  lora: { r: 16, alpha: 32, targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] },
  debounceMs: 150,
  mode: 'complete',
  completion: {
    minConfidence: 0.2,
    maxNewTokens: DEFAULT_MAX_NEW_TOKENS,
    recall: true,
    recallMinLogprob: -80,
    recallMinTokenLogprob: -5.6,
    prompt: 'auto',
  },
  hubEndpoint: 'https://huggingface.co',
  adapters: { complete: [], review: [], compliance: [] },
  drift: { lossIncrease: 0.05, commitsBehind: 20 },
  endpoint: { url: '', kind: 'openai-completions', model: '', timeoutMs: 4000 },
};

/** `initialize` params' `initializationOptions`. Every field is optional so other editors can omit them. */
export interface InitializationOptions {
  settings?: Partial<IdiomSettings>;
  /** Where the bundled default model lives (the extension's models/ directory). Omitted: the package's models/; '' for none. */
  defaultModelPath?: string;
  /** False in an untrusted workspace: no training, no custom base model. Defaults to true. */
  trusted?: boolean;
  /**
   * Serves this adapter (an id in the registry, or an absolute path to an adapter folder) in every
   * mode, or the base alone with 'none', instead of the registry's active adapter: side-by-side
   * comparisons (`idiom bench quality`, promotion in `idiom train`) without changing the registry.
   */
  adapter?: string;
}

/** `workspace/didChangeConfiguration` params carry `{ settings: { idiom: Partial<IdiomSettings> } }`. */
export interface ConfigurationSettings {
  idiom?: Partial<IdiomSettings>;
}

export type ServerState = 'starting' | 'no-model' | 'loading' | 'ready' | 'training' | 'disabled' | 'error';

export interface ModelInfo {
  /** Directory the base model was loaded from. */
  path: string;
  name: string;
  /** The precision its weights serve at (idiom.precision, with auto resolved). */
  precision?: 'float32' | 'int8' | 'int4';
}

/** An adapter as clients see it: the registry's entry without its internal fields, plus its report. */
export interface AdapterSummary extends Omit<AdapterEntry, 'kind' | 'base' | 'activeModes'> {
  /** Every mode it is active for. */
  activeModes?: Mode[];
  /** The self-contained HTML training report (loss curve, comparison with the base and the previous adapter), when one was written. */
  report?: string;
  /** What users did with its suggestions (.idiom/stats.jsonl); absent before any was shown. */
  acceptance?: Acceptance;
}

export interface TrainingProgress {
  phase: 'mining' | 'tokenizing' | 'compiling' | 'training' | 'evaluating' | 'saving';
  message: string;
  /** 0..1 when known. */
  fraction: number | null;
}

export interface StatusResult {
  state: ServerState;
  mode: Mode;
  model: ModelInfo | null;
  /** The adapter serving the current mode, or null for the base model alone. */
  adapter: AdapterSummary | null;
  training: TrainingProgress | null;
  trusted: boolean;
  /** One line a person reads: what the server is doing, or why it cannot complete. */
  message: string;
  /** Set when the adapter active for this mode cannot be loaded (the base model serves meanwhile). */
  adapterProblem?: string | null;
  /** Several adapters serving as one (then `adapter` is null), e.g. label "team×1 + mine×0.5". */
  combination?: Combination | null;
  /** How far the code moved on since the serving adapter was trained (checked when HEAD moves). */
  drift?: DriftReport | null;
  /** The completion endpoint, when one is configured: up, or down and why (the local model serves). */
  endpoint?: EndpointState | null;
}

/** Adapters served together, and where that choice came from. */
export interface Combination {
  adapters: AdapterWeight[];
  label: string;
  /** idiom/combineAdapters this session, the idiom.adapters setting, or the registry's combinations.json. */
  source: 'session' | 'setting' | 'registry';
}

export interface TrainParams {
  /** Repository root; defaults to the first workspace folder. */
  root?: string;
  minutes?: number;
  /** A token budget instead of minutes (small test runs). */
  tokens?: number;
  method?: 'lora' | 'full';
  lora?: { r: number; alpha: number; targets: string[] };
  device?: Device;
  /** Activate the new adapter even if it does not beat the current one on the held-out split. */
  force?: boolean;
  /** Peak learning rate (default 3e-4 for LoRA, 5e-5 for full fine-tuning). */
  learningRate?: number;
  /** Compute threads for training (default: every core). */
  threads?: number;
  seed?: number;
  /** Continue this LoRA adapter ('active': the mode's active one) on what changed since its commit, with its LoRA settings (`lora` is ignored). */
  from?: string;
  /** LSP work-done progress token chosen by the client; without one the server creates its own (`window/workDoneProgress/create`). */
  workDoneToken?: ProgressToken;
}

export interface TrainResult {
  adapter: AdapterSummary;
  activated: boolean;
  /** One line: which held-out losses were compared and why the adapter was (not) activated. */
  reason: string;
  tokens: number;
  seconds: number;
  steps: number;
  /** The HTML training report, when written. */
  report: string | null;
}

export interface AdaptersParams {
  root?: string;
}

export interface AdaptersResult {
  adapters: AdapterSummary[];
}

export interface ActivateParams {
  id: string;
  mode?: Mode;
}

export interface RollbackParams {
  mode?: Mode;
}

export interface SetModeParams {
  mode: Mode;
}

export interface CancelResult {
  /** False when nothing was running. */
  cancelled: boolean;
}

/** JSON-RPC error codes of `idiom/*` requests (the server-defined range). */
export const IdiomErrorCodes = {
  /** The feature exists in the protocol but this server build cannot do it yet. */
  notAvailable: -32001,
  untrusted: -32002,
  noWorkspace: -32003,
  busy: -32004,
  trainingFailed: -32005,
  noModel: -32006,
  /** A model download failed (network, hash, memory); the one-line reason is the message. */
  downloadFailed: -32007,
  /** Publishing or fetching adapters through the git remote failed; the one-line reason is the message. */
  sharingFailed: -32008,
  /** LSP's RequestCancelled: the training run was cancelled (its checkpoint is kept). */
  cancelled: -32800,
  invalidParams: -32602,
} as const;

export const TrainRequest = new RequestType<TrainParams, TrainResult, void>('idiom/train');
export const CancelTrainingRequest = new RequestType<Record<string, never>, CancelResult, void>('idiom/cancel');
export const AdaptersRequest = new RequestType<AdaptersParams, AdaptersResult, void>('idiom/adapters');
export const ActivateRequest = new RequestType<ActivateParams, AdaptersResult, void>('idiom/activate');
export const RollbackRequest = new RequestType<RollbackParams, AdaptersResult, void>('idiom/rollback');

export interface PublishAdapterParams {
  /** Default: the adapter active for the current mode. */
  id?: string;
  /** Default: origin. */
  remote?: string;
}
export interface PublishAdapterResult {
  id: string;
  remote: string;
  /** False when the remote already had it. */
  published: boolean;
  bytes: number;
  /** Why the repository memory stayed home, when it did. */
  memoryLeftOut?: string;
}
export interface FetchAdaptersParams {
  remote?: string;
}
export interface FetchAdaptersResult {
  remote: string;
  fetched: Array<{ id: string; publishedBy: string | null; memoryDropped?: string }>;
  present: string[];
  refused: Array<{ id: string; reason: string }>;
  adapters: AdapterSummary[];
}
/** Commits an adapter to refs/idiom/adapters and pushes it to the repository's remote (trainer/adapters/sharing.ts). */
export const PublishAdapterRequest = new RequestType<PublishAdapterParams, PublishAdapterResult, void>(
  'idiom/publishAdapter',
);
/** Brings the adapters published on the remote into the registry; activates none. */
export const FetchAdaptersRequest = new RequestType<FetchAdaptersParams, FetchAdaptersResult, void>(
  'idiom/fetchAdapters',
);
export interface CombineAdaptersParams {
  /** Default: the current mode. */
  mode?: Mode;
  /** Serve these together for the rest of the session; [] drops the session's choice; absent: only report. */
  adapters?: AdapterWeight[];
}

export interface CombineAdaptersResult {
  mode: Mode;
  /** What serves `mode` now: a combination, or null for the active adapter (or the base). */
  combination: Combination | null;
  status: StatusResult;
}

/**
 * Combines LoRA adapters for this session (one adapter of rank Σ r, served as feeds). Refused in
 * one line (InvalidParams) when they cannot combine; what served before keeps serving.
 */
export const CombineAdaptersRequest = new RequestType<CombineAdaptersParams, CombineAdaptersResult, void>(
  'idiom/combineAdapters',
);
export const SetModeRequest = new RequestType<SetModeParams, StatusResult, void>('idiom/setMode');
export const StatusRequest = new RequestType<Record<string, never>, StatusResult, void>('idiom/status');
/**
 * The completion endpoint's API key, from the editor's secret storage (never a setting); null
 * forgets it. The server keeps it in memory only and sends it to idiom.endpoint.url alone.
 */
export const SetEndpointKeyNotification = new NotificationType<{ key: string | null }>('idiom/setEndpointKey');
/** Sent by the server whenever any field of StatusResult changes. */
export const StatusNotification = new NotificationType<StatusResult>('idiom/statusChanged');

export interface SuggestionAcceptedParams {
  /** The id the server put in the inline completion item's command arguments. */
  id: string;
}

/** The command every inline completion item carries; the extension forwards it as SuggestionAcceptedNotification. */
export const suggestionAcceptedCommand = 'idiom.suggestionAccepted';
/** Client → server: the user accepted a served suggestion (counted in .idiom/stats.jsonl; in compliance mode also logged as `accepted` in the audit log). */
export const SuggestionAcceptedNotification = new NotificationType<SuggestionAcceptedParams>(
  'idiom/suggestionAccepted',
);

export interface SuggestionEventParams {
  /** The id in the inline completion item's command arguments (every item carries one). */
  id: string;
  /** 'accepted' also arrives as SuggestionAcceptedNotification (the item's command). */
  event: Exclude<SuggestionEvent, 'accepted'>;
  /** Characters a partial accept inserted. */
  chars?: number;
}

/**
 * Client → server: a served suggestion was shown, partially accepted or dismissed. The server
 * appends it, with the adapter that served the suggestion, to .idiom/stats.jsonl (trusted
 * workspaces with a registry only; never sent anywhere).
 */
export const SuggestionEventNotification = new NotificationType<SuggestionEventParams>('idiom/suggestionEvent');

/** The adapters report: held-out loss, replay and acceptance per adapter version over time. */
export interface AdaptersReportResult {
  /** A self-contained page (inline Chart.js and data, nothing loaded from elsewhere). */
  html: string;
}

export const AdaptersReportRequest = new RequestType<AdaptersParams, AdaptersReportResult, void>(
  'idiom/adaptersReport',
);

export interface ReviewParams {
  uri: string;
  /** Every line with content instead of the lines changed since HEAD. */
  all?: boolean;
}

export interface ReviewResult {
  /** Lines reviewed and flagged; the flagged ones are also published as diagnostics. */
  reviewed: number;
  flagged: number[];
  threshold: number | null;
  /** Why nothing was reviewed (no model, not in a repository …). */
  problem?: string;
}

/** Reviews a document now (in any mode) and publishes its diagnostics. */
export const ReviewRequest = new RequestType<ReviewParams, ReviewResult, void>('idiom/review');

export interface ModelsResult {
  /** The embedded model, idiom.baseModelPath's folder and the Hugging Face cache's snapshots. */
  models: LocalModel[];
  memory: MachineMemory;
  /** The Hugging Face cache folder searched (and downloaded into). */
  cacheDir: string;
  /** False when idiom.hubEndpoint is empty or the workspace is untrusted. */
  downloads: boolean;
}

export interface DownloadModelParams {
  /** A Hub model id, `Org/Name`. */
  id: string;
  /** Branch, tag or commit (default main). */
  revision?: string;
  workDoneToken?: ProgressToken;
}

export interface DownloadModelResult {
  /** The downloaded snapshot, described: its path is what idiom.baseModelPath takes. */
  model: LocalModel;
  commit: string;
  /** Files continued from an interrupted download. */
  resumed: string[];
}

/** Lists the base models on this machine. */
export const ModelsRequest = new RequestType<Record<string, never> | null, ModelsResult, void>('idiom/models');
/** Downloads a model from the Hub into the Hugging Face cache (work-done progress, cancellable, resumable). */
export const DownloadModelRequest = new RequestType<DownloadModelParams, DownloadModelResult, void>(
  'idiom/downloadModel',
);
