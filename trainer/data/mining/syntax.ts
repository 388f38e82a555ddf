// tree-sitter parsing through web-tree-sitter and the grammars shipped by @vscode/tree-sitter-wasm
// (WebAssembly: no native build, and the same code runs in the VS Code extension host).
// One parse per file yields its chunks (functions, methods, classes with byte ranges) and the
// spans of its named nodes, which the example builder uses to cut FIM middles at AST boundaries.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { Language, Parser } from 'web-tree-sitter';
import type { ChunkKind, LanguageSpec } from './languages';

export interface Chunk {
  kind: ChunkKind;
  // The grammar's node type, e.g. `method_definition`.
  type: string;
  name: string | null;
  // UTF-16 offsets into the decoded text (what String.slice takes).
  startIndex: number;
  endIndex: number;
  // UTF-8 byte offsets into the file (LF-normalised).
  startByte: number;
  endByte: number;
  // 0-based, inclusive.
  startLine: number;
  endLine: number;
  // Number of enclosing chunks.
  depth: number;
}

export interface SyntaxIndex {
  chunks: Chunk[];
  // Named nodes in document order (parents before children): [start, end) UTF-16 offsets.
  nodeStarts: Int32Array;
  nodeEnds: Int32Array;
  nodeCount: number;
  hasErrors: boolean;
}

let initialised: Promise<void> | undefined;
const languages = new Map<string, Promise<Language>>();
const parsers = new Map<string, Parser>();

// Where the .wasm files are. In a checkout: the npm packages. A bundle (the extension, dist/)
// may ship them in one folder instead: IDIOM_TREE_SITTER_DIR, or a `tree-sitter/` folder next to
// the bundle, holding web-tree-sitter.wasm and the grammars.

function locateWasm(file: string, packageFile: () => string): string {
  for (const directory of [process.env.IDIOM_TREE_SITTER_DIR, path.join(__dirname, 'tree-sitter')]) {
    if (directory && fs.existsSync(path.join(directory, file))) return path.join(directory, file);
  }
  try {
    return packageFile();
  } catch {
    throw new Error(
      `tree-sitter file ${file} not found (install @vscode/tree-sitter-wasm and web-tree-sitter, or set IDIOM_TREE_SITTER_DIR)`,
    );
  }
}

function grammarPath(grammar: string): string {
  return locateWasm(grammar, () =>
    path.join(path.dirname(require.resolve('@vscode/tree-sitter-wasm/package.json')), 'wasm', grammar),
  );
}

async function initialise(): Promise<void> {
  initialised ??= Parser.init({
    locateFile: (file: string) =>
      file.endsWith('.wasm')
        ? locateWasm('web-tree-sitter.wasm', () => require.resolve('web-tree-sitter/web-tree-sitter.wasm'))
        : file,
  });
  return initialised;
}

async function loadLanguage(spec: LanguageSpec): Promise<Language> {
  await initialise();
  let language = languages.get(spec.grammar);
  if (!language) {
    language = Promise.resolve()
      .then(() => Language.load(grammarPath(spec.grammar)))
      .catch((error: unknown) => {
        languages.delete(spec.grammar);
        throw new Error(`cannot load tree-sitter grammar ${spec.grammar}: ${(error as Error).message}`);
      });
    languages.set(spec.grammar, language);
  }
  return language;
}

interface LoadedLanguage {
  parser: Parser;
  chunkTypeIds: Map<number, ChunkKind>;
}
const loaded = new Map<string, LoadedLanguage>();

// Loads (once) the grammar for a language and returns a parser bound to it.
export async function parserFor(spec: LanguageSpec): Promise<LoadedLanguage> {
  const cached = loaded.get(spec.id);
  if (cached) return cached;
  const language = await loadLanguage(spec);
  let parser = parsers.get(spec.id);
  if (!parser) {
    parser = new Parser();
    parser.setLanguage(language);
    parsers.set(spec.id, parser);
  }
  const chunkTypeIds = new Map<number, ChunkKind>();
  for (const [type, kind] of Object.entries(spec.chunkNodes)) {
    const id = language.idForNodeType(type, true);
    if (id !== null && id !== undefined) chunkTypeIds.set(id, kind);
  }
  const entry = { parser, chunkTypeIds };
  loaded.set(spec.id, entry);
  return entry;
}

// Anonymous functions count as chunks only when they span lines (a callback body, not `x => x`).
const ANONYMOUS_FUNCTION = new Set([
  'arrow_function',
  'function_expression',
  'func_literal',
  'closure_expression',
  'lambda_expression',
  'anonymous_function',
]);

function lineStartsOf(text: string): number[] {
  const starts = [0];
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) === 10) starts.push(i + 1);
  return starts;
}

export function lineAt(lineStarts: readonly number[], index: number): number {
  let lo = 0;
  let hi = lineStarts.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (lineStarts[mid] <= index) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// UTF-8 byte offsets for UTF-16 offsets, in one pass over the text.
export function utf8Offsets(text: string, indices: readonly number[]): Map<number, number> {
  const sorted = [...new Set(indices)].sort((a, b) => a - b);
  const out = new Map<number, number>();
  let bytes = 0;
  let i = 0;
  for (const target of sorted) {
    for (; i < target && i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c < 0x80) bytes += 1;
      else if (c < 0x800) bytes += 2;
      else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
        const next = text.charCodeAt(i + 1);
        if (next >= 0xdc00 && next <= 0xdfff) {
          bytes += 4;
          i++;
          continue;
        }
        bytes += 3;
      } else bytes += 3;
    }
    out.set(target, bytes);
  }
  return out;
}

// Parses the text and indexes its chunks and named nodes.
export async function indexSyntax(text: string, spec: LanguageSpec): Promise<SyntaxIndex> {
  const { parser, chunkTypeIds } = await parserFor(spec);
  const tree = parser.parse(text);
  if (!tree) throw new Error(`tree-sitter could not parse a ${spec.id} file`);
  try {
    const lineStarts = lineStartsOf(text);
    let starts = new Int32Array(1024);
    let ends = new Int32Array(1024);
    let count = 0;
    const chunks: Omit<Chunk, 'startByte' | 'endByte'>[] = [];
    const open: { end: number; kind: ChunkKind }[] = [];
    const cursor = tree.walk();
    try {
      let depth = 0;
      for (;;) {
        if (depth > 0 && cursor.nodeIsNamed) {
          const start = cursor.startIndex;
          const end = cursor.endIndex;
          if (end > start) {
            if (count === starts.length) {
              const grownStarts = new Int32Array(count * 2);
              grownStarts.set(starts);
              starts = grownStarts;
              const grownEnds = new Int32Array(count * 2);
              grownEnds.set(ends);
              ends = grownEnds;
            }
            starts[count] = start;
            ends[count] = end;
            count++;
            let kind = chunkTypeIds.get(cursor.nodeTypeId);
            if (kind) {
              while (open.length > 0 && open[open.length - 1].end <= start) open.pop();
              const type = cursor.nodeType;
              const startLine = lineAt(lineStarts, start);
              const endLine = lineAt(lineStarts, Math.max(start, end - 1));
              const anonymous = ANONYMOUS_FUNCTION.has(type);
              if (!anonymous || endLine > startLine) {
                if (kind === 'function' && open.length > 0 && open[open.length - 1].kind === 'class') kind = 'method';
                const node = cursor.currentNode;
                const parent = anonymous ? node.parent : null;
                const name =
                  node.childForFieldName('name')?.text ??
                  parent?.childForFieldName('name')?.text ??
                  parent?.childForFieldName('key')?.text ??
                  null;
                chunks.push({
                  kind,
                  type,
                  name,
                  startIndex: start,
                  endIndex: end,
                  startLine,
                  endLine,
                  depth: open.length,
                });
                open.push({ end, kind });
              }
            }
          }
        }
        if (cursor.gotoFirstChild()) {
          depth++;
          continue;
        }
        while (!cursor.gotoNextSibling()) {
          if (!cursor.gotoParent()) {
            depth = -1;
            break;
          }
          depth--;
        }
        if (depth < 0) break;
      }
    } finally {
      cursor.delete();
    }
    const byteOf = utf8Offsets(
      text,
      chunks.flatMap((chunk) => [chunk.startIndex, chunk.endIndex]),
    );
    return {
      chunks: chunks.map((chunk) => ({
        ...chunk,
        startByte: byteOf.get(chunk.startIndex)!,
        endByte: byteOf.get(chunk.endIndex)!,
      })),
      nodeStarts: starts,
      nodeEnds: ends,
      nodeCount: count,
      hasErrors: tree.rootNode.hasError,
    };
  } finally {
    tree.delete();
  }
}
