import * as vscode from 'vscode';
import {
  LanguageClient,
  TransportKind,
  type LanguageClientOptions,
  type ServerOptions,
} from 'vscode-languageclient/node';
import {
  SetEndpointKeyNotification,
  StatusNotification,
  StatusRequest,
  type InitializationOptions,
  type StatusResult,
} from '../server/protocol';
import { readSettings } from './config';
import { offerRetrain } from './drift';
import { IdiomStatusBar } from './status-bar';
import { SuggestionEvents } from './suggestions';

/** Where the completion endpoint's API key is kept (VS Code secret storage, never settings). */
export const ENDPOINT_KEY_SECRET = 'idiom.endpoint.apiKey';

/** Owns the language client, the output channel, the status bar and every disposable. */
export class Ctx implements vscode.Disposable {
  readonly output = vscode.window.createOutputChannel('Idiom', { log: true });
  readonly statusBar = new IdiomStatusBar();
  /** Shown, partly accepted and dismissed suggestions, told to the server (counted per adapter). */
  readonly suggestions = new SuggestionEvents(
    () => this.clientInstance,
    (line) => this.output.error(line),
  );
  private readonly disposables: vscode.Disposable[] = [];
  private clientInstance: LanguageClient | undefined;
  lastStatus: StatusResult | undefined;

  constructor(readonly extensionContext: vscode.ExtensionContext) {
    this.disposables.push(this.output, this.statusBar, this.suggestions);
    this.disposables.push(
      vscode.workspace.onDidChangeConfiguration((event) => {
        if (event.affectsConfiguration('idiom')) void this.pushSettings();
      }),
      // Trust changes what the server may do (training, custom model): start it afresh.
      vscode.workspace.onDidGrantWorkspaceTrust(() => void this.restart()),
    );
  }

  get client(): LanguageClient | undefined {
    return this.clientInstance;
  }

  /** The running client, or an error a command can show. */
  requireClient(): LanguageClient {
    if (!this.clientInstance?.isRunning())
      throw new Error('the Idiom language server is not running (see Idiom: Show output)');
    return this.clientInstance;
  }

  pushDisposable(disposable: vscode.Disposable): void {
    this.disposables.push(disposable);
  }

  async start(): Promise<void> {
    const serverModule = this.extensionContext.asAbsolutePath('dist/server.js');
    const serverOptions: ServerOptions = {
      run: { module: serverModule, transport: TransportKind.stdio },
      debug: { module: serverModule, transport: TransportKind.stdio },
    };
    const initializationOptions: InitializationOptions = {
      settings: readSettings(),
      defaultModelPath: this.extensionContext.asAbsolutePath('models'),
      trusted: vscode.workspace.isTrusted,
    };
    const clientOptions: LanguageClientOptions = {
      documentSelector: [{ scheme: 'file' }, { scheme: 'untitled' }],
      outputChannel: this.output,
      initializationOptions,
      middleware: {
        // Debounce: a request that is still current after debounceMs goes to the server.
        provideInlineCompletionItems: async (document, position, context, token, next) => {
          const debounceMs = readSettings().debounceMs;
          if (debounceMs > 0) await new Promise((resolve) => setTimeout(resolve, debounceMs));
          if (token.isCancellationRequested) return null;
          const result = await next(document, position, context, token);
          if (!token.isCancellationRequested) this.suggestions.served(document, position, result);
          return result;
        },
      },
    };
    const client = new LanguageClient('idiom', 'Idiom', serverOptions, clientOptions);
    this.clientInstance = client;
    client.onNotification(StatusNotification, (status) => this.showStatus(status));
    await client.start();
    const key = await this.extensionContext.secrets.get(ENDPOINT_KEY_SECRET);
    if (key) await client.sendNotification(SetEndpointKeyNotification, { key });
    this.showStatus(await client.sendRequest(StatusRequest, {}));
  }

  showStatus(status: StatusResult): void {
    this.lastStatus = status;
    this.statusBar.show(status);
    offerRetrain(status);
  }

  async restart(): Promise<void> {
    await this.clientInstance?.stop();
    this.clientInstance = undefined;
    await this.start();
  }

  private async pushSettings(): Promise<void> {
    if (!this.clientInstance?.isRunning()) return;
    await this.clientInstance.sendNotification('workspace/didChangeConfiguration', {
      settings: { idiom: readSettings() },
    });
  }

  async dispose(): Promise<void> {
    const client = this.clientInstance;
    this.clientInstance = undefined;
    for (const disposable of this.disposables.splice(0)) disposable.dispose();
    await client?.stop();
  }
}
