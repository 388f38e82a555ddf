// The language server: LSP 3.18 inline completions plus the `idiom/*` methods of protocol.ts.
// The only code (with main.ts) that speaks LSP; the pipeline stages live in completion/, context/
// and model/.

import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  ResponseError,
  TextDocuments,
  TextDocumentSyncKind,
  type Connection,
  type InitializeParams,
  type InitializeResult,
  type InlineCompletionItem,
} from 'vscode-languageserver';
import { TextDocument } from 'vscode-languageserver-textdocument';
import { CompletionProvider, type CompletionDocument } from './completion/provider';
import { similarSnippets, type SnippetSource } from './context/snippets';
import { loadModel, type LoadedModel } from './model/host';
import {
  ActivateRequest,
  AdaptersRequest,
  CancelTrainingRequest,
  defaultSettings,
  IdiomErrorCodes,
  modes,
  RollbackRequest,
  SetModeRequest,
  StatusNotification,
  StatusRequest,
  TrainRequest,
  type ConfigurationSettings,
  type IdiomSettings,
  type InitializationOptions,
  type ServerState,
} from './protocol';
import { StatusBoard } from './status';

/** Lines around the cursor that pick the repository context snippets. */
const snippetQueryLines = 20;

export function mergeSettings(base: IdiomSettings, change: Partial<IdiomSettings> | undefined): IdiomSettings {
  if (!change || typeof change !== 'object') return base;
  return {
    ...base,
    ...change,
    training: { ...base.training, ...(change.training ?? {}) },
    lora: { ...base.lora, ...(change.lora ?? {}) },
  };
}

export class IdiomServer {
  private readonly documents = new TextDocuments(TextDocument);
  private readonly status: StatusBoard;
  private readonly completions: CompletionProvider;
  private settings: IdiomSettings = defaultSettings;
  private defaultModelPath = '';
  private trusted = true;
  private workspaceRoots: string[] = [];
  private model: LoadedModel | null = null;
  private loadedModelPath: string | null = null;
  private loading: Promise<void> = Promise.resolve();

  constructor(private readonly connection: Connection) {
    this.status = new StatusBoard(
      { state: 'starting', mode: 'complete', model: null, adapter: null, training: null, trusted: true, message: 'starting' },
      (status) => void connection.sendNotification(StatusNotification, status).catch(() => undefined),
    );
    this.completions = new CompletionProvider(
      () => (this.settings.enable ? this.model : null),
      (document) => this.snippetsFor(document),
      (line) => this.logError(line),
    );
    this.documents.onDidChangeContent((change) => this.completions.documentChanged(change.document.uri, change.document.getText()));
    this.register();
    this.documents.listen(connection);
  }

  private logError(line: string): void {
    this.connection.console.error(line);
  }

  private register(): void {
    const connection = this.connection;
    connection.onInitialize((params) => this.initialize(params));
    connection.onInitialized(() => this.reloadModel());
    connection.onDidChangeConfiguration((change) => {
      const settings = (change.settings as ConfigurationSettings | null | undefined)?.idiom;
      this.settings = mergeSettings(this.settings, settings);
      this.status.update({ mode: this.settings.mode, state: this.stateAfterSettings() });
      this.reloadModel();
    });
    connection.onShutdown(async () => {
      this.completions.inflight.abortAll('shutting down');
      await this.model?.dispose();
    });

    connection.languages.inlineCompletion.on(async (params, token) => {
      const document = this.documents.get(params.textDocument.uri);
      if (!document) return null;
      const offset = document.offsetAt(params.position);
      const answer = await this.completions.complete(
        { uri: document.uri, languageId: document.languageId, text: document.getText(), offset },
        token,
      );
      if (!answer || token.isCancellationRequested) return null;
      const item: InlineCompletionItem = {
        insertText: answer.text,
        range: { start: params.position, end: params.position },
      };
      return { items: [item] };
    });

    connection.onRequest(StatusRequest, () => this.status.current);
    connection.onRequest(SetModeRequest, (params) => {
      if (!params || !modes.includes(params.mode)) {
        throw new ResponseError(IdiomErrorCodes.invalidParams, `unknown mode ${JSON.stringify(params?.mode)}; expected one of ${modes.join(', ')}`);
      }
      this.settings = { ...this.settings, mode: params.mode };
      this.status.update({ mode: params.mode });
      return this.status.current;
    });
    connection.onRequest(TrainRequest, () => {
      if (!this.trusted) throw new ResponseError(IdiomErrorCodes.untrusted, 'training is disabled in an untrusted workspace');
      if (this.workspaceRoots.length === 0) throw new ResponseError(IdiomErrorCodes.noWorkspace, 'open a folder to train on its repository');
      throw new ResponseError(IdiomErrorCodes.notAvailable, 'training is not available in this build yet (`idiom train` is not implemented)');
    });
    connection.onRequest(CancelTrainingRequest, () => ({ cancelled: false }));
    const noRegistry = () => {
      throw new ResponseError(IdiomErrorCodes.notAvailable, 'the adapter registry is not available in this build yet');
    };
    connection.onRequest(AdaptersRequest, noRegistry);
    connection.onRequest(ActivateRequest, noRegistry);
    connection.onRequest(RollbackRequest, noRegistry);
  }

  private initialize(params: InitializeParams): InitializeResult {
    const options = (params.initializationOptions ?? {}) as InitializationOptions;
    this.settings = mergeSettings(defaultSettings, options.settings);
    this.defaultModelPath = typeof options.defaultModelPath === 'string' ? options.defaultModelPath : '';
    this.trusted = options.trusted !== false;
    this.workspaceRoots = (params.workspaceFolders ?? [])
      .map((folder) => folder.uri)
      .filter((uri) => uri.startsWith('file:'))
      .map((uri) => fileURLToPath(uri));
    this.status.update({ mode: this.settings.mode, trusted: this.trusted });
    return {
      capabilities: {
        textDocumentSync: TextDocumentSyncKind.Incremental,
        inlineCompletionProvider: true,
      },
      serverInfo: { name: 'idiom', version: '0.1.0' },
    };
  }

  /** The base model directory the settings ask for: a custom one only in a trusted workspace. */
  private modelPath(): string {
    const custom = this.settings.baseModelPath.trim();
    if (custom !== '' && this.trusted) {
      return path.isAbsolute(custom) || this.workspaceRoots.length === 0 ? custom : path.join(this.workspaceRoots[0], custom);
    }
    return this.defaultModelPath;
  }

  private stateAfterSettings(): ServerState {
    if (!this.settings.enable) return 'disabled';
    if (this.model) return 'ready';
    return this.status.current.state === 'disabled' ? 'no-model' : this.status.current.state;
  }

  /** Loads the configured base model unless it is already the one serving. Serialized. */
  private reloadModel(): void {
    this.loading = this.loading.then(() => this.loadConfiguredModel());
  }

  private async loadConfiguredModel(): Promise<void> {
    const dir = this.modelPath();
    if (dir === this.loadedModelPath && (this.model || this.status.current.state !== 'starting')) return;
    this.status.update({ state: 'loading', message: dir === '' ? 'looking for a model' : `loading ${dir}` });
    this.completions.modelChanged();
    const previous = this.model;
    this.model = null;
    await previous?.dispose().catch(() => undefined);
    this.loadedModelPath = dir;
    try {
      const result = await loadModel(dir);
      if (result.model) {
        this.model = result.model;
        this.status.update({ state: this.settings.enable ? 'ready' : 'disabled', model: result.model.info, message: `serving ${result.model.info.name}` });
      } else {
        this.logError(`no model: ${result.reason}`);
        this.status.update({ state: this.settings.enable ? 'no-model' : 'disabled', model: null, message: `no model: ${result.reason}` });
      }
    } catch (error) {
      // A corrupt model costs one line in the log; the server keeps answering (with nothing).
      const message = error instanceof Error ? error.message : String(error);
      this.logError(`cannot load the base model: ${message}`);
      this.status.update({ state: 'error', model: null, message: `cannot load the base model: ${message}` });
    }
  }

  private snippetsFor(document: CompletionDocument): ReturnType<typeof similarSnippets> {
    const before = document.text.slice(0, document.offset).split('\n');
    const query = before.slice(-snippetQueryLines).join('\n');
    const sources: SnippetSource[] = [];
    for (const other of this.documents.all()) {
      if (other.uri === document.uri) continue;
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
