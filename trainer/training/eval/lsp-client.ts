import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { packageRoot } from '../../model/base-model';
import {
  createMessageConnection,
  StreamMessageReader,
  StreamMessageWriter,
  type MessageConnection,
} from 'vscode-jsonrpc/node';

// The real language server (`idiom lsp --stdio`) driven over stdio as an editor drives it, for the
// benchmarks that measure what a user sees: started, initialized, waited on until its model
// serves, and shut down.

export interface LspClientOptions {
  base: string;
  /** Workspace folder: its repository's adapters serve; none: the base alone. */
  repo?: string;
  /** Extra initializationOptions (settings are merged over the base model path). */
  settings?: Record<string, unknown>;
  /** initializationOptions.adapter: an adapter id, or 'none' for the base alone. */
  adapter?: string;
  cwd: string;
}

export interface LspClient {
  connection: MessageConnection;
  child: ChildProcess;
  pid: number;
  /** What the server's status says now. */
  status(): { state: string; message: string; adapter: string | null; precision: string | null };
  /** Sends `initialized` and waits until the model serves; returns the milliseconds it took. */
  ready(timeoutMs?: number): Promise<number>;
  stop(): Promise<void>;
}

/**
 * Arguments to `node` that start the language server on stdio: the bundle's server.js beside this
 * bundle (an installed extension ships dist/ alone), else the CLI of the package's sources.
 */
export function serverCommand(): string[] {
  if (!__filename.endsWith('.ts')) {
    for (const candidate of [path.join(__dirname, 'server.js'), path.join(__dirname, '..', 'server.js')]) {
      if (fs.existsSync(candidate)) return [candidate, '--stdio'];
    }
  }
  const root = packageRoot();
  if (root && fs.existsSync(path.join(root, 'trainer', 'cli', 'bin.js')))
    return [path.join(root, 'trainer', 'cli', 'bin.js'), 'lsp', '--stdio'];
  throw new Error('cannot find the language server (dist/server.js or trainer/cli/bin.js); run npm run build');
}

export async function startLspClient(options: LspClientOptions): Promise<LspClient> {
  const child = spawn(process.execPath, serverCommand(), { cwd: options.cwd, stdio: ['pipe', 'pipe', 'pipe'] });
  child.stderr.resume();
  const connection = createMessageConnection(
    new StreamMessageReader(child.stdout),
    new StreamMessageWriter(child.stdin),
  );
  let state = 'starting';
  let message = '';
  let adapter: string | null = null;
  let precision: string | null = null;
  connection.onNotification(
    'idiom/statusChanged',
    (status: {
      state: string;
      message: string;
      adapter: { id: string } | null;
      model?: { precision?: string } | null;
    }) => {
      state = status.state;
      message = status.message;
      adapter = status.adapter?.id ?? null;
      precision = status.model?.precision ?? null;
    },
  );
  connection.onNotification('window/logMessage', () => undefined);
  connection.listen();
  const repoUri = options.repo ? pathToFileURL(path.resolve(options.repo)).href : null;
  const stop = async () => {
    await connection.sendRequest('shutdown').catch(() => undefined);
    await connection.sendNotification('exit').catch(() => undefined);
    await new Promise((resolve) => {
      if (child.exitCode !== null) return resolve(undefined);
      child.once('exit', resolve);
      setTimeout(() => {
        child.kill('SIGKILL');
        resolve(undefined);
      }, 5000).unref();
    });
    connection.dispose();
  };
  try {
    await connection.sendRequest('initialize', {
      processId: process.pid,
      rootUri: repoUri,
      workspaceFolders: repoUri ? [{ uri: repoUri, name: 'repo' }] : null,
      capabilities: {},
      initializationOptions: {
        settings: { baseModelPath: options.base, ...options.settings },
        defaultModelPath: options.base,
        ...(options.adapter ? { adapter: options.adapter } : {}),
      },
    });
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    connection,
    child,
    pid: child.pid!,
    status: () => ({ state, message, adapter, precision }),
    async ready(timeoutMs = 120_000) {
      const started = performance.now();
      await connection.sendNotification('initialized', {});
      while (state !== 'ready' || /^loading/.test(message)) {
        if (state === 'error' || state === 'no-model')
          throw new Error(`the server cannot serve ${options.base}: ${message}`);
        if (performance.now() - started > timeoutMs)
          throw new Error(`the model did not load within ${Math.round(timeoutMs / 1000)} s`);
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      return performance.now() - started;
    },
    stop,
  };
}

/** The p-th percentile (nearest rank) of `values`; NaN when empty. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank];
}
