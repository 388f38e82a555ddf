import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { packageRoot, resolveBaseDir } from '../../model/base-model';
import { percentile, startLspClient } from '../../training/eval/lsp-client';
import { round } from '../../util/round';
import { Tokenizer } from '../../model/tokenizer/tokenizer';
import type { ModelConfig } from '../../model/config';
import type { ServingPrecisionSetting } from '../../model/precision';
import { qwenTokenizerFiles, writeRandomCheckpoint } from './random-checkpoint';

// `idiom bench lsp`: inline completion latency and memory of the real language server, driven
// over stdio exactly as an editor drives it (`idiom lsp --stdio`, didOpen/didChange,
// textDocument/inlineCompletion), on a real source file.
//
// - rss: the server process's resident memory (its engine worker thread included) right after
//   initialize (idle, nothing loaded), once the model serves, and the peak while completing.
// - cold: the cursor put on a line of the file whose rest is deleted (a new line being written),
//   one request per line, lines spread over the file: no cache hit, no in-flight reuse. The
//   first request after the model loads is reported on its own.
// - warm (typing): on some of those lines the rest of the line is typed back one character at a
//   time, a request after every keystroke (debounce 0, as the e2e test configures VS Code): what a
//   user typing sees, with the cache, in-flight reuse and the engine's KV-prefix reuse in play.
// Latency is measured by the client: request sent → answer received.
//
// The server is set up as a user's would be: a model other than the embedded one fills in the
// middle (what `idiom.completion.prompt` auto gives a model set through idiom.baseModelPath).
// Random weights (--model-config) give every token a probability near 1/vocabulary, so the
// confidence gate would end each decode after one token, and no line would ever end: there the
// gate is off and each decode is capped at the median token count of the cut lines' rests plus
// the newline, the tokens a model that writes the line decodes.

export interface BenchLspOptions {
  /** Base model folder; default the embedded models/. */
  base?: string;
  /** A config.json's shapes with random weights and Qwen's tokenizer, written to a temporary folder. */
  config?: ModelConfig;
  /** idiom.precision for the server (default auto). */
  precision?: ServingPrecisionSetting;
  /** Source file to complete in; default this package's server/completion/postprocess.ts. */
  file?: string;
  /** Workspace folder: its repository's active adapter serves (default: none, the base alone). */
  repo?: string;
  coldRequests?: number;
  /** Lines whose rest is typed back character by character. */
  typedLines?: number;
  log?: (line: string) => void;
}

/** Resident set size of a process, bytes (Linux /proc). */
function rssOf(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const match = /VmRSS:\s+(\d+) kB/.exec(status);
  if (!match) throw new Error(`/proc/${pid}/status has no VmRSS`);
  return Number(match[1]) * 1024;
}

interface Position {
  line: number;
  character: number;
}

/** Where a line is cut: halfway through its code. */
function cutColumn(line: string): number {
  const indent = line.length - line.trimStart().length;
  return indent + Math.floor((line.length - indent) / 2);
}

/** Whether `dir` is the embedded model (models/), which `auto` prompts left to right. */
function isEmbeddedModel(dir: string): boolean {
  try {
    return path.resolve(dir) === resolveBaseDir(undefined);
  } catch {
    return false;
  }
}

/** Lines worth completing on: code, not blank, not a lone bracket; spread evenly over the file. */
function pickLines(lines: string[], count: number): number[] {
  const candidates = lines
    .map((text, line) => ({ text: text.trim(), line }))
    .filter((entry) => entry.text.length >= 12 && !/^[\])}]/.test(entry.text) && !entry.text.startsWith('//'));
  if (candidates.length === 0) throw new Error('the file has no line of code to complete on');
  const picked: number[] = [];
  for (let i = 0; i < count; i++) picked.push(candidates[Math.floor(((i + 0.5) * candidates.length) / count)].line);
  return [...new Set(picked)];
}

export async function benchLsp(options: BenchLspOptions = {}): Promise<Record<string, unknown>> {
  const log = options.log ?? (() => {});
  if (options.base && options.config) throw new Error('bench lsp takes --base or --model-config, not both');
  const scratch = options.config ? fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-bench-model-')) : null;
  try {
    if (scratch && options.config) {
      log(`writing a random checkpoint with Qwen's tokenizer to ${scratch}`);
      writeRandomCheckpoint(scratch, options.config, { tokenizerFiles: qwenTokenizerFiles() });
    }
    return await benchLspOn(scratch ?? resolveBaseDir(options.base), options, log);
  } finally {
    if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
  }
}

async function benchLspOn(
  base: string,
  options: BenchLspOptions,
  log: (line: string) => void,
): Promise<Record<string, unknown>> {
  const root = packageRoot();
  if (!root) throw new Error('cannot find the idiom package folder (to start `idiom lsp --stdio`)');
  const file = path.resolve(options.file ?? path.join(root, 'server', 'completion', 'postprocess.ts'));
  let original: string;
  try {
    original = fs.readFileSync(file, 'utf8');
  } catch (error) {
    throw new Error(`${file}: cannot read (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
  }
  const lines = original.split('\n');
  const coldLines = pickLines(lines, options.coldRequests ?? 24);
  const typedLines = coldLines.slice(0, options.typedLines ?? 4);
  const languageId =
    { '.ts': 'typescript', '.tsx': 'typescriptreact', '.js': 'javascript', '.py': 'python' }[path.extname(file)] ??
    'plaintext';

  const embedded = isEmbeddedModel(base);
  const tokenizer = await Tokenizer.load(base);
  const lineTokens = Math.round(
    percentile(
      coldLines.map((line) => tokenizer.encode(`${lines[line].slice(cutColumn(lines[line]))}\n`).length),
      50,
    ),
  );
  const completion: Record<string, unknown> = {
    ...(embedded ? {} : { prompt: 'fim' }),
    ...(options.config ? { minConfidence: 0, maxNewTokens: lineTokens } : {}),
  };
  const client = await startLspClient({
    base,
    repo: options.repo,
    cwd: path.dirname(file),
    settings: { precision: options.precision ?? 'auto', completion },
  });
  const { connection, pid } = client;
  try {
    await new Promise((resolve) => setTimeout(resolve, 300));
    const rssIdle = rssOf(pid);
    const loadMs = await client.ready();
    await new Promise((resolve) => setTimeout(resolve, 300));
    const rssModel = rssOf(pid);
    const adapter = client.status().adapter;
    log(
      `model loaded in ${Math.round(loadMs)} ms; rss idle ${Math.round(rssIdle / 2 ** 20)} MiB, with the model ${Math.round(rssModel / 2 ** 20)} MiB`,
    );

    let rssPeak = rssModel;
    const sampler = setInterval(() => {
      try {
        rssPeak = Math.max(rssPeak, rssOf(pid));
      } catch {
        // the server exited; the request fails below
      }
    }, 10);

    const uri = pathToFileURL(file).href;
    let version = 1;
    await connection.sendNotification('textDocument/didOpen', {
      textDocument: { uri, languageId, version, text: original },
    });
    const request = async (position: Position): Promise<{ ms: number; text: string | null }> => {
      const started = performance.now();
      const answer = await connection.sendRequest<{ items: { insertText: string }[] } | null>(
        'textDocument/inlineCompletion',
        {
          textDocument: { uri },
          position,
          context: { triggerKind: 2 },
        },
      );
      return { ms: performance.now() - started, text: answer?.items[0]?.insertText ?? null };
    };
    const setText = (text: string) =>
      connection.sendNotification('textDocument/didChange', {
        textDocument: { uri, version: ++version },
        contentChanges: [{ text }],
      });
    /** The file with line `line` cut after `keep` characters. */
    const cutAt = (line: number, keep: number) =>
      [...lines.slice(0, line), lines[line].slice(0, keep), ...lines.slice(line + 1)].join('\n');

    const cold: number[] = [];
    let firstMs = NaN;
    let empty = 0;
    for (const line of coldLines) {
      const keep = cutColumn(lines[line]);
      await setText(cutAt(line, keep));
      const { ms, text } = await request({ line, character: keep });
      if (Number.isNaN(firstMs)) firstMs = ms;
      else cold.push(ms);
      if (text === null) empty++;
    }
    log(`cold: ${cold.length + 1} requests`);

    const warm: number[] = [];
    let keystrokes = 0;
    for (const line of typedLines) {
      const start = cutColumn(lines[line]);
      await setText(cutAt(line, start));
      await request({ line, character: start });
      for (let keep = start + 1; keep <= lines[line].length; keep++) {
        // One keystroke: an incremental change, as editors send them.
        await connection.sendNotification('textDocument/didChange', {
          textDocument: { uri, version: ++version },
          contentChanges: [
            {
              range: { start: { line, character: keep - 1 }, end: { line, character: keep - 1 } },
              text: lines[line][keep - 1],
            },
          ],
        });
        warm.push((await request({ line, character: keep })).ms);
        keystrokes++;
      }
    }
    clearInterval(sampler);
    log(`warm: ${keystrokes} keystrokes on ${typedLines.length} lines`);

    const mib = (bytes: number) => round(bytes / 2 ** 20, 1);
    return {
      completionColdP50Ms: round(percentile(cold, 50), 1),
      completionColdP95Ms: round(percentile(cold, 95), 1),
      completionWarmP50Ms: round(percentile(warm, 50), 1),
      completionWarmP95Ms: round(percentile(warm, 95), 1),
      firstCompletionMs: round(firstMs, 1),
      modelLoadMs: round(loadMs, 1),
      rssIdleMiB: mib(rssIdle),
      rssModelLoadedMiB: mib(rssModel),
      rssCompletionPeakMiB: mib(rssPeak),
      requests: { cold: cold.length + 1, warm: warm.length, coldEmpty: empty },
      prompt: embedded ? 'auto' : 'fim',
      maxNewTokens: options.config ? lineTokens : 'default (the confidence gate and the line end stop decoding)',
      model: options.config ? "random weights at the config's shapes, Qwen tokenizer" : base,
      precision: client.status().precision,
      adapter,
      file: path.relative(root, file).startsWith('..') ? file : path.relative(root, file),
      measured:
        'client-side latency of textDocument/inlineCompletion through `idiom lsp --stdio`; cold: a line of the file cut in the middle (no cache or in-flight reuse), the first request after loading reported apart; warm: the rest of such lines typed back one keystroke at a time, one request per keystroke (with random weights no keystroke matches the suggestion, so each one decodes anew: the worst case); rss from /proc of the server process (worker threads included)',
    };
  } finally {
    await client.stop();
  }
}
