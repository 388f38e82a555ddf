// A GGUF (version 3) writer: header, typed key/value metadata, tensor infos, then aligned tensor
// data, little-endian, as llama.cpp's ggml/gguf reads it. Written here because npm's GGUF packages
// parse files but none writes tensors; the format is a header and a flat table.
//
// Shapes are given in row-major order (numpy / safetensors: [out, in]); GGUF stores them reversed
// (ne[0] is the innermost dimension), which writeGguf does.

import { float32ArrayToHalf, float32ToHalfBits } from '../../model/float16';
import { writeFileAtomically } from '../../model/safetensors';

const MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
const VERSION = 3;
const ALIGNMENT = 32;

/** ggml's tensor types that the export writes. */
export type GgmlType = 'F32' | 'F16' | 'Q8_0';
const GGML_TYPE_ID: Record<GgmlType, number> = { F32: 0, F16: 1, Q8_0: 8 };
/** Q8_0: blocks of 32 values, each an f16 scale and 32 int8s. */
export const Q8_0_BLOCK = 32;
const Q8_0_BLOCK_BYTES = 2 + Q8_0_BLOCK;

export type GgufValue =
  | { type: 'string'; value: string }
  | { type: 'uint32'; value: number }
  | { type: 'int32'; value: number }
  | { type: 'float32'; value: number }
  | { type: 'bool'; value: boolean }
  | { type: 'string[]'; value: readonly string[] }
  | { type: 'int32[]'; value: readonly number[] };

export interface GgufTensor {
  name: string;
  /** Row-major shape ([out, in] for a linear weight). */
  shape: readonly number[];
  type: GgmlType;
  /** Float32 values in row-major order; called once, while the file is written. */
  values: () => Float32Array;
}

const VALUE_TYPE = { uint32: 4, int32: 5, float32: 6, bool: 7, string: 8, array: 9 } as const;

/** Bytes a tensor of `shape` takes as `type`. */
export function tensorBytes(shape: readonly number[], type: GgmlType): number {
  const count = shape.reduce((a, b) => a * b, 1);
  if (type === 'F32') return count * 4;
  if (type === 'F16') return count * 2;
  return (count / Q8_0_BLOCK) * Q8_0_BLOCK_BYTES;
}

/** Whether `type` can hold a tensor of `shape`: Q8_0 needs rows that are whole blocks. */
export function typeFits(shape: readonly number[], type: GgmlType): boolean {
  return type !== 'Q8_0' || (shape.length > 0 && shape[shape.length - 1] % Q8_0_BLOCK === 0);
}

/** Q8_0 as ggml's reference quantizer makes it: d = max|x| / 127, q = round(x / d), d stored as f16. */
export function quantizeQ8_0(values: Float32Array): Uint8Array {
  if (values.length % Q8_0_BLOCK !== 0) throw new Error(`Q8_0 needs a multiple of ${Q8_0_BLOCK} values`);
  const blocks = values.length / Q8_0_BLOCK;
  const out = new Uint8Array(blocks * Q8_0_BLOCK_BYTES);
  const view = new DataView(out.buffer);
  for (let b = 0; b < blocks; b++) {
    const start = b * Q8_0_BLOCK;
    let amax = 0;
    for (let i = 0; i < Q8_0_BLOCK; i++) amax = Math.max(amax, Math.abs(values[start + i]));
    const d = Math.fround(amax / 127);
    const inverse = d === 0 ? 0 : Math.fround(1 / d);
    const at = b * Q8_0_BLOCK_BYTES;
    view.setUint16(at, float32ToHalfBits(d), true);
    for (let i = 0; i < Q8_0_BLOCK; i++) {
      const x = Math.fround(values[start + i] * inverse);
      // Half away from zero, like C's roundf.
      view.setInt8(at + 2 + i, Math.sign(x) * Math.floor(Math.abs(x) + 0.5));
    }
  }
  return out;
}

function encodeTensor(values: Float32Array, type: GgmlType): Uint8Array {
  if (type === 'F32') return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  if (type === 'F16') {
    const half = float32ArrayToHalf(values);
    return new Uint8Array(half.buffer, half.byteOffset, half.byteLength);
  }
  return quantizeQ8_0(values);
}

/** Grows as values are appended; the header is small, the tensors are written separately. */
class ByteWriter {
  private buffer = new Uint8Array(1 << 16);
  private view = new DataView(this.buffer.buffer);
  length = 0;

  private room(bytes: number): void {
    if (this.length + bytes <= this.buffer.length) return;
    let size = this.buffer.length * 2;
    while (size < this.length + bytes) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buffer.subarray(0, this.length));
    this.buffer = next;
    this.view = new DataView(next.buffer);
  }
  u32(value: number): void {
    this.room(4);
    this.view.setUint32(this.length, value, true);
    this.length += 4;
  }
  i32(value: number): void {
    this.room(4);
    this.view.setInt32(this.length, value, true);
    this.length += 4;
  }
  u64(value: number): void {
    this.room(8);
    this.view.setBigUint64(this.length, BigInt(value), true);
    this.length += 8;
  }
  f32(value: number): void {
    this.room(4);
    this.view.setFloat32(this.length, value, true);
    this.length += 4;
  }
  u8(value: number): void {
    this.room(1);
    this.view.setUint8(this.length, value);
    this.length += 1;
  }
  string(text: string): void {
    const bytes = new TextEncoder().encode(text);
    this.u64(bytes.length);
    this.room(bytes.length);
    this.buffer.set(bytes, this.length);
    this.length += bytes.length;
  }
  padTo(alignment: number): void {
    const padding = (alignment - (this.length % alignment)) % alignment;
    this.room(padding);
    this.length += padding; // the buffer is zero-filled
  }
  bytes(): Uint8Array {
    return this.buffer.subarray(0, this.length);
  }
}

function writeValue(out: ByteWriter, value: GgufValue): void {
  switch (value.type) {
    case 'string':
      out.u32(VALUE_TYPE.string);
      out.string(value.value);
      return;
    case 'uint32':
      out.u32(VALUE_TYPE.uint32);
      out.u32(value.value);
      return;
    case 'int32':
      out.u32(VALUE_TYPE.int32);
      out.i32(value.value);
      return;
    case 'float32':
      out.u32(VALUE_TYPE.float32);
      out.f32(value.value);
      return;
    case 'bool':
      out.u32(VALUE_TYPE.bool);
      out.u8(value.value ? 1 : 0);
      return;
    case 'string[]':
      out.u32(VALUE_TYPE.array);
      out.u32(VALUE_TYPE.string);
      out.u64(value.value.length);
      for (const text of value.value) out.string(text);
      return;
    case 'int32[]':
      out.u32(VALUE_TYPE.array);
      out.u32(VALUE_TYPE.int32);
      out.u64(value.value.length);
      for (const n of value.value) out.i32(n);
      return;
  }
}

/**
 * Writes `file` atomically (temp file beside it, then rename): metadata in the order given, then
 * the tensors, each tensor's values produced and encoded one at a time.
 */
export function writeGguf(
  file: string,
  metadata: ReadonlyMap<string, GgufValue>,
  tensors: readonly GgufTensor[],
): void {
  const header = new ByteWriter();
  header.u32(MAGIC);
  header.u32(VERSION);
  header.u64(tensors.length);
  header.u64(metadata.size);
  for (const [key, value] of metadata) {
    header.string(key);
    writeValue(header, value);
  }
  let offset = 0;
  const names = new Set<string>();
  for (const tensor of tensors) {
    if (names.has(tensor.name)) throw new Error(`GGUF: tensor "${tensor.name}" appears twice`);
    names.add(tensor.name);
    if (!typeFits(tensor.shape, tensor.type))
      throw new Error(`GGUF: tensor "${tensor.name}" [${tensor.shape.join(', ')}] cannot be stored as ${tensor.type}`);
    header.string(tensor.name);
    header.u32(tensor.shape.length);
    for (const dim of [...tensor.shape].reverse()) header.u64(dim);
    header.u32(GGML_TYPE_ID[tensor.type]);
    header.u64(offset);
    offset += tensorBytes(tensor.shape, tensor.type);
    offset += (ALIGNMENT - (offset % ALIGNMENT)) % ALIGNMENT;
  }
  header.padTo(ALIGNMENT);

  // One tensor's bytes in memory at a time.
  function* chunks(): Generator<Uint8Array> {
    yield header.bytes();
    const zeros = new Uint8Array(ALIGNMENT);
    for (const tensor of tensors) {
      const values = tensor.values();
      const expected = tensor.shape.reduce((a, b) => a * b, 1);
      if (values.length !== expected)
        throw new Error(`GGUF: tensor "${tensor.name}" has ${values.length} values, its shape needs ${expected}`);
      const bytes = encodeTensor(values, tensor.type);
      yield bytes;
      yield zeros.subarray(0, (ALIGNMENT - (bytes.length % ALIGNMENT)) % ALIGNMENT);
    }
  }
  writeFileAtomically(file, chunks());
}
