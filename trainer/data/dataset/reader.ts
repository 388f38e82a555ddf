// Reads a dataset file with bounded memory: the header is parsed once, index records and tokens
// are read from disk as needed. Every offset is checked, so a truncated or corrupt file fails
// with one clear line instead of yielding garbage.

import * as fs from 'node:fs';
import {
  DATASET_MAGIC,
  DATASET_VERSION,
  decodeRecord,
  PREAMBLE_BYTES,
  RECORD_BYTES,
  type DatasetHeader,
  type DatasetSplit,
  type ExampleRecord,
} from './format';

export interface DatasetExample {
  index: number;
  record: ExampleRecord;
  tokens: Int32Array;
}

const INDEX_BLOCK = 4096; // records read per disk read while iterating

export class DatasetReader {
  private closed = false;

  private constructor(
    readonly path: string,
    private readonly fd: number,
    readonly header: DatasetHeader,
    private readonly fileBytes: number,
  ) {}

  static open(file: string): DatasetReader {
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch (error) {
      throw new Error(`${file}: cannot open dataset (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
    }
    try {
      const size = fs.fstatSync(fd).size;
      const fail = (why: string): never => {
        throw new Error(`${file}: not a valid Idiom dataset: ${why}`);
      };
      if (size < PREAMBLE_BYTES) fail('file too short');
      const preamble = Buffer.alloc(PREAMBLE_BYTES);
      fs.readSync(fd, preamble, 0, PREAMBLE_BYTES, 0);
      if (preamble.toString('ascii', 0, 8) !== DATASET_MAGIC) fail('wrong magic bytes');
      const headerOffset = Number(preamble.readBigUInt64LE(8));
      const headerLength = Number(preamble.readBigUInt64LE(16));
      if (headerOffset < PREAMBLE_BYTES || headerLength <= 0 || headerOffset + headerLength !== size) {
        fail('header offset/length do not match the file size (truncated or unfinished?)');
      }
      const json = Buffer.alloc(headerLength);
      fs.readSync(fd, json, 0, headerLength, headerOffset);
      let header: DatasetHeader;
      try {
        header = JSON.parse(json.toString('utf8')) as DatasetHeader;
      } catch {
        return fail('header is not JSON');
      }
      if (header?.format !== 'idiom-dataset') fail('header format is not idiom-dataset');
      if (header.version !== DATASET_VERSION) fail(`unsupported version ${header.version}`);
      const tokens = header.sections?.tokens;
      const index = header.sections?.index;
      if (!tokens || !index || !Array.isArray(header.files)) fail('header lacks sections or files');
      if (tokens.offset !== PREAMBLE_BYTES || tokens.dtype !== 'int32le') fail('unexpected token section');
      if (index.recordBytes !== RECORD_BYTES) fail(`index records of ${index.recordBytes} bytes`);
      if (tokens.offset + tokens.count * 4 > index.offset) fail('token section overlaps the index');
      if (index.offset + index.count * RECORD_BYTES > headerOffset) fail('index overlaps the header');
      return new DatasetReader(file, fd, header, size);
    } catch (error) {
      fs.closeSync(fd);
      throw error;
    }
  }

  get count(): number {
    return this.header.sections.index.count;
  }

  // The index record of example i, validated against the header.
  record(i: number): ExampleRecord {
    if (!Number.isInteger(i) || i < 0 || i >= this.count)
      throw new RangeError(`example ${i} out of range [0, ${this.count})`);
    const buffer = Buffer.alloc(RECORD_BYTES);
    this.readAt(buffer, this.header.sections.index.offset + i * RECORD_BYTES);
    return this.checked(decodeRecord(buffer, 0), i);
  }

  // The tokens of example i.
  tokens(i: number): Int32Array {
    return this.readTokens(this.record(i));
  }

  // Every example (optionally one split), in file order, reading the index in blocks.
  *examples(split?: DatasetSplit): Generator<DatasetExample> {
    const block = Buffer.alloc(INDEX_BLOCK * RECORD_BYTES);
    for (let first = 0; first < this.count; first += INDEX_BLOCK) {
      const n = Math.min(INDEX_BLOCK, this.count - first);
      this.readAt(block.subarray(0, n * RECORD_BYTES), this.header.sections.index.offset + first * RECORD_BYTES);
      for (let k = 0; k < n; k++) {
        const record = this.checked(decodeRecord(block, k * RECORD_BYTES), first + k);
        if (split && record.split !== split) continue;
        yield { index: first + k, record, tokens: this.readTokens(record) };
      }
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    fs.closeSync(this.fd);
  }

  private checked(record: ExampleRecord, i: number): ExampleRecord {
    const tokens = this.header.sections.tokens.count;
    if (record.tokenStart + record.length > tokens || record.length === 0) {
      throw new Error(`${this.path}: corrupt dataset: example ${i} lies outside the token section`);
    }
    if (record.lossStart > record.length)
      throw new Error(`${this.path}: corrupt dataset: example ${i} has lossStart past its end`);
    if (record.file >= this.header.files.length)
      throw new Error(`${this.path}: corrupt dataset: example ${i} names file ${record.file}`);
    return record;
  }

  private readTokens(record: ExampleRecord): Int32Array {
    const bytes = Buffer.alloc(record.length * 4);
    this.readAt(bytes, this.header.sections.tokens.offset + record.tokenStart * 4);
    const tokens = new Int32Array(record.length);
    for (let i = 0; i < record.length; i++) tokens[i] = bytes.readInt32LE(i * 4);
    return tokens;
  }

  private readAt(into: Buffer, position: number): void {
    if (this.closed) throw new Error(`${this.path}: dataset is closed`);
    if (position + into.length > this.fileBytes) throw new Error(`${this.path}: corrupt dataset: read past the end`);
    let done = 0;
    while (done < into.length) {
      const n = fs.readSync(this.fd, into, done, into.length - done, position + done);
      if (n <= 0) throw new Error(`${this.path}: corrupt dataset: short read`);
      done += n;
    }
  }
}
