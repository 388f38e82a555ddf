// Strict safetensors reader/writer. Written here because no usable safetensors package exists on npm.
// Format: u64 little-endian header length N, N bytes of JSON header
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?: {string: string}}, then the
// data buffer; offsets are relative to the start of the data buffer.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { elementCount, type HostTensor } from './tensor';
import { bfloat16ArrayToFloat32, float32ArrayToBfloat16, float32ArrayToHalf, halfArrayToFloat32 } from './float16';

export type SafetensorsDType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

const ITEM_SIZE: Record<SafetensorsDType, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};
const SUPPORTED_DTYPES = Object.keys(ITEM_SIZE) as SafetensorsDType[];

/** The reference implementation refuses headers above 100 MB; so do we. */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;

const METADATA_KEY = '__metadata__';

export interface SafetensorsHeaderEntry {
  dtype: SafetensorsDType;
  shape: number[];
  /** [begin, end) in bytes, relative to the data buffer. */
  dataOffsets: [number, number];
}

export interface SafetensorsHeader {
  /** N: JSON header bytes (padding included). */
  headerLength: number;
  /** 8 + N: where the data buffer starts in the file. */
  dataStart: number;
  /** Bytes in the data buffer. */
  dataLength: number;
  /** In header order. */
  tensors: Map<string, SafetensorsHeaderEntry>;
  metadata: Record<string, string>;
}

export class SafetensorsTensor {
  constructor(
    readonly name: string,
    readonly dtype: SafetensorsDType,
    readonly shape: number[],
    /** Raw little-endian bytes; a view into the file's buffer where possible (no copy). */
    readonly bytes: Uint8Array,
  ) {}

  get elementCount(): number {
    return elementCount(this.shape);
  }

  /**
   * Values as float32, converted on each call. For F32 this is a view sharing memory with `bytes`
   * when aligned (copy it before mutating if the source buffer must stay intact).
   */
  toFloat32(): Float32Array {
    const n = this.elementCount;
    switch (this.dtype) {
      case 'F32': {
        const bytes = aligned(this.bytes, 4);
        return new Float32Array(bytes.buffer, bytes.byteOffset, n);
      }
      case 'F16':
        return halfArrayToFloat32(this.uint16());
      case 'BF16':
        return bfloat16ArrayToFloat32(this.uint16());
      case 'F64':
        return Float32Array.from(this.float64());
      case 'I64': {
        const source = this.int64();
        const out = new Float32Array(n);
        for (let i = 0; i < n; i++) out[i] = Number(source[i]);
        return out;
      }
      case 'I32':
      case 'I16':
      case 'I8':
      case 'U8':
      case 'BOOL':
        return Float32Array.from(this.integers());
    }
  }

  /** The tensor in its own precision where HostTensor has one; BF16 and I16 are widened (float32, int32). */
  toHostTensor(): HostTensor {
    const shape = [...this.shape];
    switch (this.dtype) {
      case 'F32':
      case 'BF16':
        return { dtype: 'float32', shape, data: this.toFloat32() };
      case 'F16':
        return { dtype: 'float16', shape, data: this.uint16() };
      case 'F64':
        return { dtype: 'float64', shape, data: this.float64() };
      case 'I64':
        return { dtype: 'int64', shape, data: this.int64() };
      case 'I32':
        return { dtype: 'int32', shape, data: this.int32() };
      case 'I16':
        return { dtype: 'int32', shape, data: Int32Array.from(this.integers()) };
      case 'I8':
        return {
          dtype: 'int8',
          shape,
          data: new Int8Array(this.bytes.buffer, this.bytes.byteOffset, this.bytes.length),
        };
      case 'U8':
        return { dtype: 'uint8', shape, data: this.bytes };
      case 'BOOL':
        return { dtype: 'bool', shape, data: this.bytes };
    }
  }

  private uint16(): Uint16Array {
    const bytes = aligned(this.bytes, 2);
    return new Uint16Array(bytes.buffer, bytes.byteOffset, this.elementCount);
  }

  private int32(): Int32Array {
    const bytes = aligned(this.bytes, 4);
    return new Int32Array(bytes.buffer, bytes.byteOffset, this.elementCount);
  }

  private float64(): Float64Array {
    const bytes = aligned(this.bytes, 8);
    return new Float64Array(bytes.buffer, bytes.byteOffset, this.elementCount);
  }

  private int64(): BigInt64Array {
    const bytes = aligned(this.bytes, 8);
    return new BigInt64Array(bytes.buffer, bytes.byteOffset, this.elementCount);
  }

  private integers(): ArrayLike<number> {
    const bytes = this.bytes;
    switch (this.dtype) {
      case 'I32':
        return this.int32();
      case 'I16': {
        const b = aligned(bytes, 2);
        return new Int16Array(b.buffer, b.byteOffset, this.elementCount);
      }
      case 'I8':
        return new Int8Array(bytes.buffer, bytes.byteOffset, bytes.length);
      default:
        return bytes;
    }
  }
}

export interface SafetensorsFile {
  header: SafetensorsHeader;
  /** In header order. */
  tensors: Map<string, SafetensorsTensor>;
  metadata: Record<string, string>;
}

/** Reads and validates only the header of a safetensors file (the data is not read). */
export function readSafetensorsHeader(file: string): SafetensorsHeader {
  const fd = openForReading(file);
  try {
    return readHeaderFromFd(fd, fs.fstatSync(fd).size, file);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Reads a safetensors file (path) or buffer. From a buffer, tensors are views into it; from a
 * path, each tensor is read into its own aligned buffer (files over 2 GiB work).
 */
export function readSafetensors(source: string | Uint8Array, sourceName?: string): SafetensorsFile {
  assertLittleEndianHost();
  if (typeof source === 'string') {
    const fd = openForReading(source);
    try {
      const header = readHeaderFromFd(fd, fs.fstatSync(fd).size, source);
      const tensors = new Map<string, SafetensorsTensor>();
      for (const [name, entry] of header.tensors) {
        const [begin, end] = entry.dataOffsets;
        const bytes = new Uint8Array(end - begin);
        readFully(fd, bytes, header.dataStart + begin, source);
        tensors.set(name, new SafetensorsTensor(name, entry.dtype, entry.shape, bytes));
      }
      return { header, tensors, metadata: header.metadata };
    } finally {
      fs.closeSync(fd);
    }
  }
  const name = sourceName ?? 'safetensors buffer';
  const header = parseHeaderBytes(source, source.length, name);
  const tensors = new Map<string, SafetensorsTensor>();
  for (const [tensorName, entry] of header.tensors) {
    const [begin, end] = entry.dataOffsets;
    const bytes = source.subarray(header.dataStart + begin, header.dataStart + end);
    tensors.set(tensorName, new SafetensorsTensor(tensorName, entry.dtype, entry.shape, bytes));
  }
  return { header, tensors, metadata: header.metadata };
}

/**
 * Parses the header of a safetensors image. `bytes` holds at least the first 8 + N bytes;
 * `fileSize` is the full size (offsets are checked against it).
 */
export function parseHeaderBytes(bytes: Uint8Array, fileSize: number, source: string): SafetensorsHeader {
  const fail = (message: string): never => {
    throw new Error(`${source}: invalid safetensors: ${message}`);
  };
  if (fileSize < 8) fail(`file is ${fileSize} bytes, shorter than the 8-byte header length`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const low = view.getUint32(0, true);
  const high = view.getUint32(4, true);
  const headerLength = high * 2 ** 32 + low;
  if (high !== 0 || headerLength > MAX_HEADER_BYTES)
    fail(`header length ${headerLength} is absurd (limit ${MAX_HEADER_BYTES})`);
  if (headerLength < 2) fail(`header length ${headerLength} is too small for a JSON object`);
  if (8 + headerLength > fileSize) fail(`header length ${headerLength} runs past the end of the ${fileSize}-byte file`);
  if (bytes.length < 8 + headerLength) fail(`only ${bytes.length} of ${8 + headerLength} header bytes available`);

  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + headerLength));
  } catch {
    return fail('header is not valid UTF-8');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    return fail(`header is not valid JSON (${(error as Error).message})`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) fail('header must be a JSON object');

  const dataStart = 8 + headerLength;
  const dataLength = fileSize - dataStart;
  const tensors = new Map<string, SafetensorsHeaderEntry>();
  let metadata: Record<string, string> = {};
  for (const [name, value] of Object.entries(json as Record<string, unknown>)) {
    if (name === METADATA_KEY) {
      metadata = parseMetadata(value, fail);
      continue;
    }
    if (value === null || typeof value !== 'object' || Array.isArray(value))
      fail(`tensor "${name}": entry must be an object`);
    const entry = value as Record<string, unknown>;
    const dtype = entry.dtype;
    if (typeof dtype !== 'string') fail(`tensor "${name}": missing or non-string "dtype"`);
    if (!SUPPORTED_DTYPES.includes(dtype as SafetensorsDType)) {
      fail(`tensor "${name}": unknown or unsupported dtype "${dtype}" (supported: ${SUPPORTED_DTYPES.join(', ')})`);
    }
    const shape = entry.shape;
    if (!Array.isArray(shape) || !shape.every((d) => typeof d === 'number' && Number.isSafeInteger(d) && d >= 0)) {
      fail(`tensor "${name}": "shape" must be a list of non-negative integers, got ${JSON.stringify(shape)}`);
    }
    const offsets = entry.data_offsets;
    if (
      !Array.isArray(offsets) ||
      offsets.length !== 2 ||
      !offsets.every((o) => typeof o === 'number' && Number.isSafeInteger(o) && o >= 0)
    ) {
      fail(
        `tensor "${name}": "data_offsets" must be [begin, end] non-negative integers, got ${JSON.stringify(offsets)}`,
      );
    }
    const [begin, end] = offsets as [number, number];
    if (begin > end) fail(`tensor "${name}": data_offsets [${begin}, ${end}] are reversed`);
    if (end > dataLength)
      fail(`tensor "${name}": data_offsets [${begin}, ${end}] out of bounds of the ${dataLength}-byte data buffer`);
    const expectedBytes = elementCount(shape as number[]) * ITEM_SIZE[dtype as SafetensorsDType];
    if (end - begin !== expectedBytes) {
      fail(
        `tensor "${name}": data_offsets span ${end - begin} bytes but ${dtype} [${(shape as number[]).join(', ')}] needs ${expectedBytes}`,
      );
    }
    tensors.set(name, { dtype: dtype as SafetensorsDType, shape: [...(shape as number[])], dataOffsets: [begin, end] });
  }

  const byBegin = [...tensors.entries()].filter(([, e]) => e.dataOffsets[1] > e.dataOffsets[0]);
  byBegin.sort((a, b) => a[1].dataOffsets[0] - b[1].dataOffsets[0]);
  for (let i = 1; i < byBegin.length; i++) {
    const [previousName, previous] = byBegin[i - 1];
    const [name, entry] = byBegin[i];
    if (entry.dataOffsets[0] < previous.dataOffsets[1]) {
      fail(`tensors "${previousName}" and "${name}" overlap in the data buffer`);
    }
  }
  return { headerLength, dataStart, dataLength, tensors, metadata };
}

function parseMetadata(value: unknown, fail: (message: string) => never): Record<string, string> {
  if (value === null || typeof value !== 'object' || Array.isArray(value))
    fail('"__metadata__" must be an object of strings');
  const metadata: Record<string, string> = {};
  for (const [key, item] of Object.entries(value as Record<string, unknown>)) {
    if (typeof item !== 'string') fail(`"__metadata__" value for "${key}" must be a string`);
    metadata[key] = item as string;
  }
  return metadata;
}

function readHeaderFromFd(fd: number, fileSize: number, source: string): SafetensorsHeader {
  if (fileSize < 8) return parseHeaderBytes(new Uint8Array(0), fileSize, source);
  const prefix = new Uint8Array(8);
  readFully(fd, prefix, 0, source);
  const view = new DataView(prefix.buffer);
  const headerLength = view.getUint32(4, true) * 2 ** 32 + view.getUint32(0, true);
  if (headerLength > MAX_HEADER_BYTES || 8 + headerLength > fileSize) return parseHeaderBytes(prefix, fileSize, source);
  const bytes = new Uint8Array(8 + headerLength);
  bytes.set(prefix);
  readFully(fd, bytes.subarray(8), 8, source);
  return parseHeaderBytes(bytes, fileSize, source);
}

// ---- writing --------------------------------------------------------------------------------

export interface WriteSafetensorsOptions {
  /** Store float32 tensors as this dtype (rounded to nearest even). Default F32. */
  floatDtype?: 'F32' | 'F16' | 'BF16';
}

type TensorSet = Record<string, HostTensor> | Map<string, HostTensor>;

interface PlannedFile {
  header: Uint8Array; // 8-byte length + padded JSON
  chunks: Uint8Array[]; // tensor bytes, in data order
  totalBytes: number;
}

function planSafetensors(
  tensors: TensorSet,
  metadata: Record<string, string> | undefined,
  options: WriteSafetensorsOptions,
): PlannedFile {
  assertLittleEndianHost();
  const entries = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  const prepared = entries.map(([name, tensor]) => {
    if (name.length === 0 || name === METADATA_KEY) throw new Error(`safetensors: invalid tensor name "${name}"`);
    if (!Array.isArray(tensor.shape) || !tensor.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new Error(`safetensors: tensor "${name}" has an invalid shape [${tensor.shape}]`);
    }
    const n = elementCount(tensor.shape);
    if (tensor.data.length !== n) {
      throw new Error(
        `safetensors: tensor "${name}" of shape [${tensor.shape.join(', ')}] needs ${n} values, has ${tensor.data.length}`,
      );
    }
    const { dtype, bytes } = encodeTensor(name, tensor, options.floatDtype ?? 'F32');
    return { name, dtype, shape: tensor.shape, bytes };
  });
  // Wider dtypes first, then by name: every tensor starts aligned to its item size.
  prepared.sort((a, b) => ITEM_SIZE[b.dtype] - ITEM_SIZE[a.dtype] || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));

  const headerJson: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) {
    for (const [key, value] of Object.entries(metadata)) {
      if (typeof value !== 'string') throw new Error(`safetensors: metadata value for "${key}" must be a string`);
    }
    headerJson[METADATA_KEY] = metadata;
  }
  let offset = 0;
  for (const tensor of prepared) {
    headerJson[tensor.name] = {
      dtype: tensor.dtype,
      shape: tensor.shape,
      data_offsets: [offset, offset + tensor.bytes.length],
    };
    offset += tensor.bytes.length;
  }
  const json = new TextEncoder().encode(JSON.stringify(headerJson));
  const paddedLength = Math.ceil(json.length / 8) * 8;
  const header = new Uint8Array(8 + paddedLength).fill(0x20, 8); // pad with spaces
  new DataView(header.buffer).setUint32(0, paddedLength, true);
  header.set(json, 8);
  return { header, chunks: prepared.map((t) => t.bytes), totalBytes: header.length + offset };
}

function encodeTensor(
  name: string,
  tensor: HostTensor,
  floatDtype: 'F32' | 'F16' | 'BF16',
): { dtype: SafetensorsDType; bytes: Uint8Array } {
  const asBytes = (data: ArrayBufferView): Uint8Array => new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const expect = <T>(ok: boolean, data: T): T => {
    if (!ok)
      throw new Error(
        `safetensors: tensor "${name}" has dtype ${tensor.dtype} but its data is a ${tensor.data.constructor.name}`,
      );
    return data;
  };
  const data = tensor.data;
  switch (tensor.dtype) {
    case 'float32': {
      const values = expect(data instanceof Float32Array, data as Float32Array);
      if (floatDtype === 'F16') return { dtype: 'F16', bytes: asBytes(float32ArrayToHalf(values)) };
      if (floatDtype === 'BF16') return { dtype: 'BF16', bytes: asBytes(float32ArrayToBfloat16(values)) };
      return { dtype: 'F32', bytes: asBytes(values) };
    }
    case 'float16':
      return { dtype: 'F16', bytes: asBytes(expect(data instanceof Uint16Array, data)) };
    case 'float64':
      return { dtype: 'F64', bytes: asBytes(expect(data instanceof Float64Array, data)) };
    case 'int32':
      return { dtype: 'I32', bytes: asBytes(expect(data instanceof Int32Array, data)) };
    case 'int64':
      return { dtype: 'I64', bytes: asBytes(expect(data instanceof BigInt64Array, data)) };
    case 'int8':
      return { dtype: 'I8', bytes: asBytes(expect(data instanceof Int8Array, data)) };
    case 'uint8':
      return { dtype: 'U8', bytes: asBytes(expect(data instanceof Uint8Array, data)) };
    case 'bool':
      return { dtype: 'BOOL', bytes: asBytes(expect(data instanceof Uint8Array, data)) };
  }
}

/** The whole safetensors image in memory (for small tensors and tests). */
export function serializeSafetensors(
  tensors: TensorSet,
  metadata?: Record<string, string>,
  options: WriteSafetensorsOptions = {},
): Uint8Array {
  const plan = planSafetensors(tensors, metadata, options);
  const out = new Uint8Array(plan.totalBytes);
  out.set(plan.header, 0);
  let offset = plan.header.length;
  for (const chunk of plan.chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

/** Writes a safetensors file atomically (temp file in the same folder, fsync, rename). */
export function writeSafetensors(
  file: string,
  tensors: TensorSet,
  metadata?: Record<string, string>,
  options: WriteSafetensorsOptions = {},
): void {
  const plan = planSafetensors(tensors, metadata, options);
  writeFileAtomically(file, [plan.header, ...plan.chunks]);
}

/**
 * Writes `chunks` to `file` through a temp file + rename, so readers never see a partial file. A
 * generator may make each chunk as it is written (a large file is never whole in memory).
 */
export function writeFileAtomically(file: string, chunks: Iterable<Uint8Array>): void {
  const temp = path.join(
    path.dirname(file),
    `.${path.basename(file)}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`,
  );
  let fd: number | null = null;
  try {
    fd = fs.openSync(temp, 'w');
    for (const chunk of chunks) {
      let written = 0;
      while (written < chunk.length) written += fs.writeSync(fd, chunk, written, chunk.length - written);
    }
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = null;
    fs.renameSync(temp, file);
  } catch (error) {
    if (fd !== null) fs.closeSync(fd);
    fs.rmSync(temp, { force: true });
    throw new Error(`${file}: cannot write (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
}

// ---- helpers --------------------------------------------------------------------------------

function aligned(bytes: Uint8Array, itemSize: number): Uint8Array {
  return bytes.byteOffset % itemSize === 0 ? bytes : bytes.slice();
}

function openForReading(file: string): number {
  try {
    return fs.openSync(file, 'r');
  } catch (error) {
    throw new Error(
      `${file}: cannot open safetensors file (${(error as NodeJS.ErrnoException).code ?? String(error)})`,
    );
  }
}

function readFully(fd: number, target: Uint8Array, position: number, source: string): void {
  let done = 0;
  while (done < target.length) {
    const chunk = Math.min(target.length - done, 1 << 30);
    const n = fs.readSync(fd, target, done, chunk, position + done);
    if (n === 0) throw new Error(`${source}: invalid safetensors: file ended early (truncated?)`);
    done += n;
  }
}

function assertLittleEndianHost(): void {
  if (os.endianness() !== 'LE') throw new Error('safetensors: big-endian hosts are not supported');
}
