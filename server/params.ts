// Every incoming params object is checked at the boundary, one validator per method, before any
// handler sees it: a request with params of the wrong shape is answered InvalidParams (-32602)
// naming the field, a notification with them is dropped with one log line. Handlers can then
// trust the types of server/protocol.ts (a `uri: 42` in a didOpen used to break every later
// completion; non-object train params started a training).

import {
  ResponseError,
  type DidChangeTextDocumentParams,
  type DidCloseTextDocumentParams,
  type DidOpenTextDocumentParams,
  type DidSaveTextDocumentParams,
  type Disposable,
  type RequestHandler,
  type TextEdit,
  type WillSaveTextDocumentParams,
} from 'vscode-languageserver/node';
import { IdiomErrorCodes, MODES, PRECISION_SETTINGS } from './protocol';

/** Checks `value` at `path` (`params.position.line`); returns why it is wrong, or null. */
export type Shape = (value: unknown, path: string) => string | null;

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string') return value.length > 40 ? 'a long string' : JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  return typeof value === 'object' ? 'an object' : typeof value;
}

const must = (path: string, what: string, value: unknown) => `${path} must be ${what} (got ${describe(value)})`;

export const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

export const string: Shape = (value, path) => (typeof value === 'string' ? null : must(path, 'a string', value));
export const boolean: Shape = (value, path) => (typeof value === 'boolean' ? null : must(path, 'true or false', value));
export const number: Shape = (value, path) =>
  typeof value === 'number' && Number.isFinite(value) ? null : must(path, 'a number', value);
export const positive: Shape = (value, path) =>
  typeof value === 'number' && Number.isFinite(value) && value > 0 ? null : must(path, 'a positive number', value);
export const integer: Shape = (value, path) => (Number.isSafeInteger(value) ? null : must(path, 'an integer', value));
/** LSP's uinteger (line, character, version). */
export const uinteger: Shape = (value, path) =>
  Number.isSafeInteger(value) && (value as number) >= 0 ? null : must(path, 'a non-negative integer', value);
export const positiveInteger: Shape = (value, path) =>
  Number.isSafeInteger(value) && (value as number) > 0 ? null : must(path, 'a positive integer', value);

export function oneOf(values: readonly unknown[]): Shape {
  return (value, path) =>
    values.includes(value) ? null : must(path, `one of ${values.map((v) => JSON.stringify(v)).join(', ')}`, value);
}

export function arrayOf(item: Shape): Shape {
  return (value, path) => {
    if (!Array.isArray(value)) return must(path, 'an array', value);
    for (let i = 0; i < value.length; i++) {
      const problem = item(value[i], `${path}[${i}]`);
      if (problem) return problem;
    }
    return null;
  };
}

/** Absent (undefined or null) or `shape`. */
export function optional(shape: Shape): Shape {
  return (value, path) => (value === undefined || value === null ? null : shape(value, path));
}

/** An object whose listed fields have these shapes; other fields are left alone. */
export function object(fields: Record<string, Shape>): Shape {
  return (value, path) => {
    if (!isObject(value)) return must(path, 'an object', value);
    for (const [name, shape] of Object.entries(fields)) {
      const problem = shape(value[name], `${path}.${name}`);
      if (problem) return problem;
    }
    return null;
  };
}

const uri = string;
const position = object({ line: uinteger, character: uinteger });
const range = object({ start: position, end: position });
const textDocumentIdentifier = object({ uri });
const mode: Shape = (value, path) =>
  MODES.includes(value as never)
    ? null
    : `unknown mode ${describe(value)} at ${path}; expected one of ${MODES.join(', ')}`;

const progressToken: Shape = (value, path) =>
  typeof value === 'string' || Number.isSafeInteger(value) ? null : must(path, 'a string or an integer', value);

const adapterWeights = arrayOf(object({ id: string, weight: optional(number) }));

/** `IdiomSettings`, every field optional (initializationOptions.settings, didChangeConfiguration). */
export const settingsShape = object({
  enable: optional(boolean),
  disabledLanguages: optional(arrayOf(string)),
  baseModelPath: optional(string),
  device: optional(oneOf(['auto', 'cpu', 'gpu'])),
  precision: optional(oneOf([...PRECISION_SETTINGS])),
  training: optional(object({ minutes: optional(positive) })),
  lora: optional(
    object({ r: optional(positiveInteger), alpha: optional(positive), targets: optional(arrayOf(string)) }),
  ),
  debounceMs: optional(number),
  mode: optional(mode),
  review: optional(object({ percentile: optional(number), aggregate: optional(oneOf(['mean', 'max'])) })),
  completion: optional(
    object({
      minConfidence: optional(number),
      recall: optional(boolean),
      prompt: optional(oneOf(['auto', 'fim', 'prefix'])),
    }),
  ),
  hubEndpoint: optional(string),
  endpoint: optional(
    object({
      url: optional(string),
      kind: optional(oneOf(['openai-completions', 'llama-infill'])),
      model: optional(string),
      timeoutMs: optional(positive),
    }),
  ),
  adapters: optional(
    object({
      complete: optional(adapterWeights),
      review: optional(adapterWeights),
      compliance: optional(adapterWeights),
    }),
  ),
});

/** One validator per method the server handles. */
export const paramsShapes = {
  initialize: object({
    rootUri: optional(string),
    workspaceFolders: optional(arrayOf(object({ uri }))),
    initializationOptions: optional(
      object({
        settings: optional(settingsShape),
        defaultModelPath: optional(string),
        trusted: optional(boolean),
        adapter: optional(string),
      }),
    ),
  }),
  'workspace/didChangeConfiguration': object({ settings: optional(object({ idiom: optional(settingsShape) })) }),
  'textDocument/didOpen': object({ textDocument: object({ uri, languageId: string, version: integer, text: string }) }),
  'textDocument/didChange': object({
    textDocument: object({ uri, version: integer }),
    contentChanges: arrayOf(object({ text: string, range: optional(range) })),
  }),
  'textDocument/didClose': object({ textDocument: textDocumentIdentifier }),
  'textDocument/willSave': object({ textDocument: textDocumentIdentifier, reason: integer }),
  'textDocument/willSaveWaitUntil': object({ textDocument: textDocumentIdentifier, reason: integer }),
  'textDocument/didSave': object({ textDocument: textDocumentIdentifier, text: optional(string) }),
  'textDocument/inlineCompletion': object({ textDocument: textDocumentIdentifier, position }),
  'textDocument/codeAction': object({
    textDocument: textDocumentIdentifier,
    range,
    context: object({ diagnostics: arrayOf(object({ range })) }),
  }),
  'idiom/suggestionAccepted': object({ id: string }),
  'idiom/suggestionEvent': object({
    id: string,
    event: oneOf(['shown', 'partial', 'dismissed']),
    chars: optional(uinteger),
  }),
  'idiom/review': object({ uri, all: optional(boolean) }),
  'idiom/setMode': object({ mode }),
  'idiom/train': optional(
    object({
      root: optional(string),
      minutes: optional(positive),
      tokens: optional(positiveInteger),
      method: optional(oneOf(['lora', 'full'])),
      lora: optional(
        object({ r: optional(positiveInteger), alpha: optional(positive), targets: optional(arrayOf(string)) }),
      ),
      device: optional(oneOf(['auto', 'cpu', 'gpu'])),
      force: optional(boolean),
      learningRate: optional(positive),
      threads: optional(positiveInteger),
      seed: optional(integer),
      workDoneToken: optional(progressToken),
    }),
  ),
  'idiom/adapters': optional(object({ root: optional(string) })),
  'idiom/adaptersReport': optional(object({ root: optional(string) })),
  'idiom/activate': object({ id: string, mode: optional(mode) }),
  'idiom/combineAdapters': optional(object({ mode: optional(mode), adapters: optional(adapterWeights) })),
  'idiom/rollback': optional(object({ mode: optional(mode) })),
  'idiom/models': optional(object({})),
  'idiom/publishAdapter': optional(object({ id: optional(string), remote: optional(string) })),
  'idiom/fetchAdapters': optional(object({ remote: optional(string) })),
  'idiom/downloadModel': object({ id: string, revision: optional(string), workDoneToken: optional(progressToken) }),
} satisfies Record<string, Shape>;

export type ValidatedMethod = keyof typeof paramsShapes;

/** Why `params` do not fit `method`, as one line, or null. */
export function paramsProblem(method: ValidatedMethod, params: unknown): string | null {
  const problem = paramsShapes[method](params, 'params');
  return problem ? `${method}: ${problem}` : null;
}

/** `params`, typed, or a thrown InvalidParams response error naming the field. */
export function requireParams<T>(method: ValidatedMethod, params: unknown): T {
  const problem = paramsProblem(method, params);
  if (problem) throw new ResponseError(IdiomErrorCodes.invalidParams, problem);
  return params as T;
}

/** The document-sync part of a connection, as TextDocuments.listen() takes it. */
export interface DocumentEvents {
  onDidOpenTextDocument(handler: (params: DidOpenTextDocumentParams) => void): Disposable;
  onDidChangeTextDocument(handler: (params: DidChangeTextDocumentParams) => void): Disposable;
  onDidCloseTextDocument(handler: (params: DidCloseTextDocumentParams) => void): Disposable;
  onWillSaveTextDocument(handler: (params: WillSaveTextDocumentParams) => void): Disposable;
  onWillSaveTextDocumentWaitUntil(
    handler: RequestHandler<WillSaveTextDocumentParams, TextEdit[] | undefined | null, void>,
  ): Disposable;
  onDidSaveTextDocument(handler: (params: DidSaveTextDocumentParams) => void): Disposable;
}

/**
 * `connection`'s document-sync events, each checked first: a notification with bad params never
 * reaches the document store (it is dropped with one line to `log`), a willSaveWaitUntil request
 * with them is answered InvalidParams.
 */
export function validatedDocumentEvents(connection: DocumentEvents, log: (line: string) => void): DocumentEvents {
  const checked =
    <P>(method: ValidatedMethod, handler: (params: P) => void) =>
    (params: P): void => {
      const problem = paramsProblem(method, params);
      if (problem) log(`ignored ${problem}`);
      else handler(params);
    };
  return {
    onDidOpenTextDocument: (handler) => connection.onDidOpenTextDocument(checked('textDocument/didOpen', handler)),
    onDidChangeTextDocument: (handler) =>
      connection.onDidChangeTextDocument(checked('textDocument/didChange', handler)),
    onDidCloseTextDocument: (handler) => connection.onDidCloseTextDocument(checked('textDocument/didClose', handler)),
    onWillSaveTextDocument: (handler) => connection.onWillSaveTextDocument(checked('textDocument/willSave', handler)),
    onWillSaveTextDocumentWaitUntil: (handler) =>
      connection.onWillSaveTextDocumentWaitUntil((params, token) =>
        handler(requireParams('textDocument/willSaveWaitUntil', params), token),
      ),
    onDidSaveTextDocument: (handler) => connection.onDidSaveTextDocument(checked('textDocument/didSave', handler)),
  };
}
