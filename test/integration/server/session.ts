// Drives the real language server (`idiom lsp --stdio`) over stdio with vscode-jsonrpc, as any
// LSP client would: spawn, initialize, collect logs, status and $/progress notifications.
import { spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import {
  CancellationTokenSource,
  createMessageConnection,
  StreamMessageReader,
  StreamMessageWriter,
  type MessageConnection,
} from 'vscode-jsonrpc/node';
import { StatusNotification, type InitializationOptions, type StatusResult } from '../../../server/protocol';

export const bin = path.join(__dirname, '..', '..', '..', 'trainer', 'cli', 'bin.js');

export interface ProgressNotification {
  token: string | number;
  value: {
    kind: 'begin' | 'report' | 'end';
    title?: string;
    message?: string;
    percentage?: number;
    cancellable?: boolean;
  };
  at: number;
}

export interface Session {
  connection: MessageConnection;
  child: ChildProcess;
  logs: string[];
  statuses: StatusResult[];
  progress: ProgressNotification[];
  stderr: string[];
  capabilities: Record<string, unknown>;
}

/**
 * What these tests compare the server's ghost text with is the engine's own completion
 * (reference.ts): no confidence gate, no recall, the FIM prompt. Tests of those set their own.
 */
export const engineEquivalentCompletion = { minConfidence: 0, recall: false, prompt: 'fim' } as const;

/** Completion settings that show a recalled line without the serving model's check. */
export const uncheckedRecall = { recallMinLogprob: null, recallMinTokenLogprob: null } as const;

/**
 * Starts the real server in `root` (the workspace folder) and completes the initialize handshake.
 * `serverArgs`: node's arguments, by default the CLI from sources (`idiom lsp --stdio`).
 */
export async function startServer(
  root: string,
  options: InitializationOptions,
  clientCapabilities: Record<string, unknown> = {},
  serverArgs: string[] = [bin, 'lsp', '--stdio'],
  /** What runs `serverArgs`: node by default, or a wrapper that execs node with them. */
  command: string = process.execPath,
): Promise<Session> {
  const child = spawn(command, serverArgs, { cwd: root, stdio: ['pipe', 'pipe', 'pipe'] });
  const stderr: string[] = [];
  child.stderr!.on('data', (chunk) => stderr.push(String(chunk)));
  const connection = createMessageConnection(
    new StreamMessageReader(child.stdout!),
    new StreamMessageWriter(child.stdin!),
  );
  const logs: string[] = [];
  const statuses: StatusResult[] = [];
  const progress: ProgressNotification[] = [];
  connection.onNotification('window/logMessage', (params: { message: string }) => {
    logs.push(params.message);
  });
  connection.onNotification(StatusNotification, (status) => {
    statuses.push(status);
  });
  connection.onNotification('$/progress', (params: Omit<ProgressNotification, 'at'>) => {
    progress.push({ ...params, at: Date.now() });
  });
  connection.onRequest('window/workDoneProgress/create', () => null);
  connection.listen();
  const exited = new Promise<never>((_, reject) =>
    child.once('exit', (code) =>
      reject(new Error(`the server exited (${code}) during initialize: ${stderr.join('')}`)),
    ),
  );
  const initialized = await Promise.race([
    exited,
    connection.sendRequest<{ capabilities: Record<string, unknown> }>('initialize', {
      processId: process.pid,
      rootUri: pathToFileURL(root).href,
      workspaceFolders: [{ uri: pathToFileURL(root).href, name: 'repo' }],
      capabilities: clientCapabilities,
      initializationOptions: { ...options, settings: { completion: engineEquivalentCompletion, ...options.settings } },
    }),
  ]);
  exited.catch(() => undefined);
  await connection.sendNotification('initialized', {});
  return { connection, child, logs, statuses, progress, stderr, capabilities: initialized.capabilities };
}

export async function stopServer(session: Session): Promise<void> {
  const exited = new Promise((resolve) => session.child.once('exit', resolve));
  await session.connection.sendRequest('shutdown').catch(() => undefined);
  await session.connection.sendNotification('exit').catch(() => undefined);
  await exited;
  session.connection.dispose();
}

export async function waitFor<T>(what: string, probe: () => T | undefined, timeoutMs = 10_000): Promise<T> {
  const start = Date.now();
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Waits until the server has settled on a model (ready, or why not). */
export function waitForModel(session: Session, timeoutMs = 30_000): Promise<StatusResult> {
  return waitFor(
    'the model to load',
    () => {
      const last = session.statuses[session.statuses.length - 1];
      return last && ['ready', 'error', 'no-model'].includes(last.state) && !/^loading|looking/.test(last.message)
        ? last
        : undefined;
    },
    timeoutMs,
  );
}

export function openDocument(session: Session, file: string, text: string, languageId = 'typescript'): string {
  const uri = pathToFileURL(file).href;
  void session.connection.sendNotification('textDocument/didOpen', {
    textDocument: { uri, languageId, version: 1, text },
  });
  return uri;
}

export type InlineAnswer = { items: { insertText: string }[] } | null;

export function inlineCompletion(
  session: Session,
  uri: string,
  line: number,
  character: number,
): Promise<InlineAnswer> {
  return session.connection.sendRequest<InlineAnswer>('textDocument/inlineCompletion', {
    textDocument: { uri },
    position: { line, character },
    context: { triggerKind: 1 },
  });
}

/** The ghost text a fresh server (nothing cached) with `settings` shows at `cursor` in `file`. */
export async function freshServerGhostText(
  root: string,
  settings: InitializationOptions['settings'],
  file: string,
  text: string,
  cursor: { line: number; character: number },
): Promise<string | null> {
  const session = await startServer(root, { settings });
  try {
    const ready = await waitForModel(session);
    if (ready.state !== 'ready') throw new Error(`the model did not load: ${ready.message}`);
    const uri = openDocument(session, file, text);
    const answer = await inlineCompletion(session, uri, cursor.line, cursor.character);
    return answer?.items[0]?.insertText ?? null;
  } finally {
    await stopServer(session);
  }
}

/**
 * An automatic inline completion request cancelled right after it is sent: the server answers it
 * with null or with RequestCancelled (-32800); which one depends on how far it got.
 */
export async function cancelledInlineCompletion(
  session: Session,
  uri: string,
  line: number,
  character: number,
): Promise<{ value: InlineAnswer } | { code: number }> {
  const source = new CancellationTokenSource();
  const pending = session.connection.sendRequest<InlineAnswer>(
    'textDocument/inlineCompletion',
    { textDocument: { uri }, position: { line, character }, context: { triggerKind: 2 } },
    source.token,
  );
  source.cancel();
  return pending.then(
    (value) => ({ value }),
    (error: { code: number }) => ({ code: error.code }),
  );
}
