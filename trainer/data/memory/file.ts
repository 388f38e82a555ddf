import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import type { MemoryDocument } from './memory';

// The repository memory's text as it travels with an adapter: memory.jsonl.gz in the adapter
// folder, one {"path", "text"} line per mined training file. Mined text only: files with secrets,
// generated, binary or huge files never reach it, as they never reach the dataset.

export const MEMORY_FILE = 'memory.jsonl.gz';

/** Text kept at most: the index holds about one unit per 4 characters, 4 int32 arrays each. */
export const MAX_MEMORY_CHARS = 8_000_000;

/** Collects documents up to `maxChars` and writes them (atomically) as memory.jsonl.gz. */
export class MemoryWriter {
  private readonly lines: string[] = [];
  private chars = 0;
  skipped = 0;

  constructor(private readonly maxChars = MAX_MEMORY_CHARS) {}

  add(document: MemoryDocument): void {
    if (this.chars + document.text.length > this.maxChars) {
      this.skipped++;
      return;
    }
    this.chars += document.text.length;
    this.lines.push(JSON.stringify({ path: document.path, text: document.text }));
  }

  get documents(): number {
    return this.lines.length;
  }

  write(file: string): void {
    const temp = `${file}.tmp-${process.pid}`;
    fs.writeFileSync(temp, zlib.gzipSync(Buffer.from(this.lines.join('\n'), 'utf8')));
    fs.renameSync(temp, file);
  }
}

/** The documents of `dir`/memory.jsonl.gz; null when the folder has none; one-line error when corrupt. */
export function readMemoryFile(dir: string): MemoryDocument[] | null {
  const file = path.join(dir, MEMORY_FILE);
  if (!fs.existsSync(file)) return null;
  let text: string;
  try {
    text = zlib.gunzipSync(fs.readFileSync(file)).toString('utf8');
  } catch (error) {
    throw new Error(`${file}: not a gzip file (${(error as Error).message})`);
  }
  if (text === '') return [];
  return text.split('\n').map((line, index) => {
    let record: unknown;
    try {
      record = JSON.parse(line);
    } catch {
      throw new Error(`${file}: line ${index + 1} is not JSON`);
    }
    const { path: documentPath, text: documentText } = (record ?? {}) as Record<string, unknown>;
    if (typeof documentPath !== 'string' || typeof documentText !== 'string')
      throw new Error(`${file}: line ${index + 1} needs string "path" and "text"`);
    return { path: documentPath, text: documentText };
  });
}
