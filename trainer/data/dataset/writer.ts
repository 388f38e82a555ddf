// Streams examples into a dataset file with bounded memory: tokens go straight to the file
// through a fixed buffer, index records to a side file that is appended at the end, then the
// JSON header, then the preamble is patched with the header's position. Written under a temp
// name and renamed, so a reader never sees half a file.

import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  DATASET_MAGIC,
  encodeRecord,
  PREAMBLE_BYTES,
  RECORD_BYTES,
  type DatasetFileEntry,
  type DatasetHeader,
  type ExampleRecord,
} from './format';
import type { TokenizedExample } from './tokenize';
import { sha256OfFileSync } from '../../util/sha256';
import { prepareOutputFile } from '../../util/directories';

const BUFFER_BYTES = 1 << 20;

class BufferedFile {
  private readonly buffer = Buffer.alloc(BUFFER_BYTES);
  private used = 0;
  position: number;

  constructor(
    readonly fd: number,
    start: number,
  ) {
    this.position = start;
  }

  write(bytes: Uint8Array): void {
    let offset = 0;
    while (offset < bytes.length) {
      const n = Math.min(bytes.length - offset, BUFFER_BYTES - this.used);
      this.buffer.set(bytes.subarray(offset, offset + n), this.used);
      this.used += n;
      offset += n;
      if (this.used === BUFFER_BYTES) this.flush();
    }
  }

  flush(): void {
    let written = 0;
    while (written < this.used) {
      written += fs.writeSync(this.fd, this.buffer, written, this.used - written, this.position + written);
    }
    this.position += this.used;
    this.used = 0;
  }
}

export type HeaderFields = Omit<DatasetHeader, 'format' | 'version' | 'counts' | 'sections' | 'files'>;

export interface WrittenDataset {
  path: string;
  bytes: number;
  sha256: string;
  header: DatasetHeader;
}

export class DatasetWriter {
  private readonly tempPath: string;
  private readonly indexPath: string;
  private readonly tokens: BufferedFile;
  private readonly index: BufferedFile;
  private readonly record = Buffer.alloc(RECORD_BYTES);
  private readonly files: DatasetFileEntry[] = [];
  private tokenCount = 0;
  private exampleCount = 0;
  private readonly counts = { train: { examples: 0, tokens: 0 }, heldout: { examples: 0, tokens: 0 } };
  private readonly byKind = new Map<string, number>();
  private finished = false;

  constructor(
    readonly outputPath: string,
    private readonly vocabSize: number,
  ) {
    prepareOutputFile(outputPath);
    const directory = path.dirname(path.resolve(outputPath));
    const unique = `${process.pid}-${Date.now().toString(36)}`;
    this.tempPath = path.join(directory, `.${path.basename(outputPath)}.${unique}.tmp`);
    this.indexPath = `${this.tempPath}.index`;
    this.tokens = new BufferedFile(fs.openSync(this.tempPath, 'w'), PREAMBLE_BYTES);
    this.index = new BufferedFile(fs.openSync(this.indexPath, 'w+'), 0);
  }

  // Registers a source file; returns its index for addExample.
  addFile(entry: DatasetFileEntry): number {
    this.files.push(entry);
    return this.files.length - 1;
  }

  addExample(file: number, example: TokenizedExample): void {
    const { tokens } = example;
    for (let i = 0; i < tokens.length; i++) {
      const id = tokens[i];
      if (!(id >= 0 && id < this.vocabSize))
        throw new Error(`token id ${id} outside the vocabulary (${this.vocabSize})`);
    }
    const record: ExampleRecord = {
      tokenStart: this.tokenCount,
      length: tokens.length,
      lossStart: example.lossStart,
      file,
      kind: example.kind,
      split: example.split,
      flags: example.flags,
    };
    // Little-endian on every platform Node runs on that matters here; checked once below.
    this.tokens.write(new Uint8Array(tokens.buffer, tokens.byteOffset, tokens.byteLength));
    encodeRecord(record, this.record, 0);
    this.index.write(this.record);
    this.tokenCount += tokens.length;
    this.exampleCount++;
    this.counts[example.split].examples++;
    this.counts[example.split].tokens += tokens.length;
    this.byKind.set(example.kind, (this.byKind.get(example.kind) ?? 0) + 1);
  }

  get examples(): number {
    return this.exampleCount;
  }

  get totalTokens(): number {
    return this.tokenCount;
  }

  get splitCounts(): { train: { examples: number; tokens: number }; heldout: { examples: number; tokens: number } } {
    return { train: { ...this.counts.train }, heldout: { ...this.counts.heldout } };
  }

  // Appends the index and header, patches the preamble and moves the file into place.
  finish(fields: HeaderFields): WrittenDataset {
    if (this.finished) throw new Error('dataset already finished');
    this.finished = true;
    try {
      this.tokens.flush();
      this.index.flush();
      // Index, 8-aligned.
      const indexOffset = align8(this.tokens.position);
      if (indexOffset > this.tokens.position) this.tokens.write(Buffer.alloc(indexOffset - this.tokens.position));
      const chunk = Buffer.alloc(BUFFER_BYTES - (BUFFER_BYTES % RECORD_BYTES));
      const indexBytes = this.index.position;
      for (let at = 0; at < indexBytes; ) {
        const n = fs.readSync(this.index.fd, chunk, 0, Math.min(chunk.length, indexBytes - at), at);
        if (n <= 0) throw new Error('dataset index could not be read back');
        this.tokens.write(chunk.subarray(0, n));
        at += n;
      }
      this.tokens.flush();
      const headerOffset = this.tokens.position;
      const header: DatasetHeader = {
        format: 'idiom-dataset',
        version: 1,
        ...fields,
        counts: {
          examples: this.exampleCount,
          tokens: this.tokenCount,
          ...this.splitCounts,
          byKind: Object.fromEntries([...this.byKind.entries()].sort(([a], [b]) => (a < b ? -1 : 1))),
        },
        sections: {
          tokens: { offset: PREAMBLE_BYTES, count: this.tokenCount, dtype: 'int32le' },
          index: { offset: indexOffset, count: this.exampleCount, recordBytes: RECORD_BYTES },
        },
        files: this.files,
      };
      const json = Buffer.from(JSON.stringify(header), 'utf8');
      this.tokens.write(json);
      this.tokens.flush();
      const preamble = Buffer.alloc(PREAMBLE_BYTES);
      preamble.write(DATASET_MAGIC, 0, 'ascii');
      preamble.writeBigUInt64LE(BigInt(headerOffset), 8);
      preamble.writeBigUInt64LE(BigInt(json.length), 16);
      fs.writeSync(this.tokens.fd, preamble, 0, PREAMBLE_BYTES, 0);
      fs.fsyncSync(this.tokens.fd);
      fs.closeSync(this.tokens.fd);
      fs.closeSync(this.index.fd);
      fs.rmSync(this.indexPath, { force: true });
      fs.renameSync(this.tempPath, this.outputPath);
      return {
        path: this.outputPath,
        bytes: headerOffset + json.length,
        sha256: sha256OfFileSync(this.outputPath),
        header,
      };
    } catch (error) {
      this.abort();
      throw error;
    }
  }

  // Removes the partial files (after an error).
  abort(): void {
    this.finished = true;
    for (const fd of [this.tokens.fd, this.index.fd]) {
      try {
        fs.closeSync(fd);
      } catch {
        // already closed
      }
    }
    fs.rmSync(this.tempPath, { force: true });
    fs.rmSync(this.indexPath, { force: true });
  }
}

function align8(n: number): number {
  return Math.ceil(n / 8) * 8;
}

if (new Uint8Array(new Uint32Array([1]).buffer)[0] !== 1) {
  throw new Error('the dataset writer needs a little-endian platform');
}
