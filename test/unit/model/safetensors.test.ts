import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { HostTensor } from '../../../trainer/model/tensor';
import { Rng } from '../../../trainer/model/random';
import {
  readSafetensors,
  readSafetensorsHeader,
  serializeSafetensors,
  writeSafetensors,
} from '../../../trainer/model/safetensors';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-safetensors-'));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Builds a safetensors image by hand from a header object and a data buffer (no writer involved). */
function handMade(header: unknown, data: Uint8Array = new Uint8Array(0), headerLengthOverride?: bigint): Uint8Array {
  const json = new TextEncoder().encode(typeof header === 'string' ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, headerLengthOverride ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

function bytesOf(view: ArrayBufferView): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

/** Asserts one clear single-line error that names the source. */
function assertClearError(run: () => unknown, pattern: RegExp, source: string): void {
  assert.throws(run, (error: unknown) => {
    assert.ok(error instanceof Error, 'throws an Error');
    assert.ok(error.message.startsWith(source), `message names ${source}: ${error.message}`);
    assert.match(error.message, pattern);
    assert.ok(!error.message.includes('\n'), 'one line');
    return true;
  });
}

describe('safetensors', () => {
  it('round-trips every dtype bit-exactly, with metadata and aligned offsets', () => {
    const rng = new Rng(1);
    const f32 = rng.fillNormal(new Float32Array(3 * 5));
    const specials = new Float32Array([NaN, -0, Infinity, -Infinity, 1e-45, 3.4e38]);
    const nanWithPayload = new Uint32Array([0x7fc12345]);
    const tensors: Record<string, HostTensor> = {
      'model.weight': { dtype: 'float32', shape: [3, 5], data: f32 },
      specials: { dtype: 'float32', shape: [6], data: specials },
      payload: { dtype: 'float32', shape: [1], data: new Float32Array(nanWithPayload.buffer) },
      half: {
        dtype: 'float16',
        shape: [2, 3],
        data: new Uint16Array([0x0001, 0x3c00, 0x7bff, 0xfc00, 0x7e01, 0x8000]),
      },
      odd: { dtype: 'uint8', shape: [3], data: new Uint8Array([1, 2, 255]) },
      i8: { dtype: 'int8', shape: [2], data: new Int8Array([-128, 127]) },
      i32: { dtype: 'int32', shape: [2], data: new Int32Array([-5, 2147483647]) },
      i64: { dtype: 'int64', shape: [2], data: new BigInt64Array([-(2n ** 62n), 42n]) },
      f64: { dtype: 'float64', shape: [1, 2], data: new Float64Array([Math.PI, -1e300]) },
      scalar: { dtype: 'float32', shape: [], data: new Float32Array([7]) },
      empty: { dtype: 'float32', shape: [0, 4], data: new Float32Array(0) },
    };
    const file = path.join(dir, 'all.safetensors');
    writeSafetensors(file, tensors, { format: 'pt', note: 'ünïcode' });
    assert.deepEqual(fs.readdirSync(dir), ['all.safetensors'], 'no temp file left behind');

    const raw = fs.readFileSync(file);
    const headerLength = Number(raw.readBigUInt64LE(0));
    assert.equal((8 + headerLength) % 8, 0, 'data starts 8-byte aligned');
    const headerText = raw.subarray(8, 8 + headerLength).toString('utf8');
    assert.equal(
      headerText,
      headerText.trimEnd() + ' '.repeat(headerText.length - headerText.trimEnd().length),
      'padded with spaces',
    );

    for (const source of [file, new Uint8Array(raw)]) {
      const read = readSafetensors(source);
      assert.deepEqual(read.metadata, { format: 'pt', note: 'ünïcode' });
      assert.deepEqual([...read.tensors.keys()].sort(), Object.keys(tensors).sort());
      for (const [name, tensor] of Object.entries(tensors)) {
        const entry = read.tensors.get(name)!;
        assert.deepEqual(entry.shape, tensor.shape, name);
        const host = entry.toHostTensor();
        assert.equal(host.dtype, tensor.dtype, name);
        assert.deepEqual(bytesOf(host.data), bytesOf(tensor.data), `${name} bits`);
      }
      // Every tensor's offset is a multiple of its item size (wider dtypes first).
      for (const entry of read.header.tensors.values()) {
        const itemSize = { F64: 8, I64: 8, F32: 4, I32: 4, F16: 2, BF16: 2, I16: 2, I8: 1, U8: 1, BOOL: 1 }[
          entry.dtype
        ];
        assert.equal(entry.dataOffsets[0] % itemSize, 0);
      }
      assert.deepEqual(Array.from(read.tensors.get('half')!.toFloat32().slice(0, 3)), [2 ** -24, 1, 65504]);
    }
  });

  it('reads from a buffer without copying, and from a misaligned view correctly', () => {
    const values = Float32Array.from({ length: 16 }, (_, i) => i * 0.5 - 3);
    const image = serializeSafetensors({ w: { dtype: 'float32', shape: [4, 4], data: values } });
    const read = readSafetensors(image);
    const floats = read.tensors.get('w')!.toFloat32();
    assert.equal(floats.buffer, image.buffer, 'F32 from an aligned buffer is a view');
    assert.deepEqual(Array.from(floats), Array.from(values));

    const shifted = new Uint8Array(image.length + 1);
    shifted.set(image, 1);
    const misaligned = readSafetensors(shifted.subarray(1));
    assert.deepEqual(Array.from(misaligned.tensors.get('w')!.toFloat32()), Array.from(values));
  });

  it('converts float32 to F16 and BF16 on write (round to nearest even) and back to float32 on read', () => {
    // 1 + 2^-11 lies exactly between the halves 1 and 1 + 2^-10: ties to even gives 1.
    // 1 + 3 * 2^-11 lies between 1 + 2^-10 and 1 + 2^-9: ties to even gives 1 + 2^-9.
    // 1 + 2^-8 is a half, and lies exactly between the bfloat16 values 1 and 1 + 2^-7: ties to even gives 1.
    const input = new Float32Array([1 + 2 ** -11, 1 + 3 * 2 ** -11, 1 + 2 ** -8, 70000, -(2 ** -25), 2 ** -24 * 1.5]);
    const expectedHalf = [1, 1 + 2 ** -9, 1 + 2 ** -8, Infinity, -0, 2 ** -23];
    const expectedBf16 = [1, 1, 1, 70144, -(2 ** -25), 2 ** -24 * 1.5];
    const file16 = path.join(dir, 'f16.safetensors');
    const fileBf = path.join(dir, 'bf16.safetensors');
    writeSafetensors(file16, { x: { dtype: 'float32', shape: [6], data: input } }, undefined, { floatDtype: 'F16' });
    writeSafetensors(fileBf, { x: { dtype: 'float32', shape: [6], data: input } }, undefined, { floatDtype: 'BF16' });
    const half = readSafetensors(file16).tensors.get('x')!;
    const bf = readSafetensors(fileBf).tensors.get('x')!;
    assert.equal(half.dtype, 'F16');
    assert.equal(bf.dtype, 'BF16');
    assert.equal(fs.statSync(file16).size - readSafetensorsHeader(file16).dataStart, 12);
    const halfValues = Array.from(half.toFloat32());
    const bfValues = Array.from(bf.toFloat32());
    for (let i = 0; i < input.length; i++) {
      assert.ok(
        Object.is(halfValues[i], expectedHalf[i]),
        `F16 ${input[i]} -> ${halfValues[i]}, expected ${expectedHalf[i]}`,
      );
      assert.ok(
        Object.is(bfValues[i], expectedBf16[i]),
        `BF16 ${input[i]} -> ${bfValues[i]}, expected ${expectedBf16[i]}`,
      );
    }
    assert.equal(bf.toHostTensor().dtype, 'float32');
  });

  it('reads only the header with readSafetensorsHeader', () => {
    const file = path.join(dir, 'h.safetensors');
    writeSafetensors(file, { a: { dtype: 'float32', shape: [2, 3], data: new Float32Array(6) } }, { format: 'pt' });
    const header = readSafetensorsHeader(file);
    assert.deepEqual(header.tensors.get('a'), { dtype: 'F32', shape: [2, 3], dataOffsets: [0, 24] });
    assert.equal(header.dataLength, 24);
    assert.equal(header.dataStart + header.dataLength, fs.statSync(file).size);
    assert.deepEqual(header.metadata, { format: 'pt' });
  });

  it('rejects bad files with one clear error each', () => {
    const data = new Uint8Array(16);
    // A 2-byte header of 0xff bytes: not UTF-8.
    const badUtf8 = new Uint8Array(10);
    new DataView(badUtf8.buffer).setBigUint64(0, 2n, true);
    badUtf8.fill(0xff, 8);
    const ok = { a: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 16] } };
    const cases: Array<[string, Uint8Array, RegExp]> = [
      ['short', new Uint8Array(5), /file is 5 bytes, shorter than the 8-byte header length/],
      ['absurd', handMade(ok, data, 2n ** 40n), /header length \d+ is absurd/],
      ['beyond', handMade(ok, data, 1000n), /header length 1000 runs past the end/],
      ['garbled', handMade('{"a": {"dtype": "F32", "shape": [2, 2], "data_offs', data), /header is not valid JSON/],
      ['notobject', handMade('[1, 2, 3]', data), /header must be a JSON object/],
      ['badutf8', badUtf8, /header is not valid UTF-8/],
      [
        'dtype',
        handMade({ a: { dtype: 'F8_E4M3', shape: [16], data_offsets: [0, 16] } }, data),
        /tensor "a": unknown or unsupported dtype "F8_E4M3"/,
      ],
      [
        'shape',
        handMade({ a: { dtype: 'F32', shape: [2, -2], data_offsets: [0, 16] } }, data),
        /"shape" must be a list of non-negative integers/,
      ],
      [
        'oob',
        handMade({ a: { dtype: 'F32', shape: [2, 4], data_offsets: [0, 32] } }, data),
        /data_offsets \[0, 32\] out of bounds of the 16-byte data buffer/,
      ],
      ['reversed', handMade({ a: { dtype: 'F32', shape: [0], data_offsets: [8, 4] } }, data), /reversed/],
      [
        'size',
        handMade({ a: { dtype: 'F32', shape: [3], data_offsets: [0, 16] } }, data),
        /span 16 bytes but F32 \[3\] needs 12/,
      ],
      [
        'overlap',
        handMade(
          {
            a: { dtype: 'F32', shape: [3], data_offsets: [0, 12] },
            b: { dtype: 'F32', shape: [2], data_offsets: [8, 16] },
          },
          data,
        ),
        /tensors "a" and "b" overlap/,
      ],
      [
        'offsets',
        handMade({ a: { dtype: 'F32', shape: [4], data_offsets: [0] } }, data),
        /"data_offsets" must be \[begin, end\]/,
      ],
      ['metadata', handMade({ __metadata__: { n: 1 }, ...ok }, data), /"__metadata__" value for "n" must be a string/],
      ['truncated', handMade(ok, data).subarray(0, 8 + JSON.stringify(ok).length + 10), /out of bounds/],
    ];
    for (const [name, image, pattern] of cases) {
      const file = path.join(dir, `${name}.safetensors`);
      fs.writeFileSync(file, image);
      assertClearError(() => readSafetensors(file), pattern, file);
      assertClearError(() => readSafetensorsHeader(file), pattern, file);
      assertClearError(() => readSafetensors(image, name), pattern, name);
    }
    assertClearError(
      () => readSafetensors(path.join(dir, 'missing.safetensors')),
      /cannot open safetensors file \(ENOENT\)/,
      dir,
    );
  });

  it('never crashes on randomly corrupted files', () => {
    const rng = new Rng(42);
    const image = serializeSafetensors(
      {
        a: { dtype: 'float32', shape: [4, 3], data: rng.fillNormal(new Float32Array(12)) },
        b: { dtype: 'float16', shape: [5], data: new Uint16Array(5) },
      },
      { format: 'pt' },
    );
    let rejected = 0;
    for (let trial = 0; trial < 500; trial++) {
      const corrupt = image.slice(0, trial % 7 === 0 ? rng.int(image.length) : image.length);
      for (let flips = 1 + rng.int(4); flips > 0; flips--) {
        if (corrupt.length > 0) corrupt[rng.int(Math.min(corrupt.length, 8 + 120))] = rng.int(256);
      }
      try {
        const read = readSafetensors(corrupt, 'corrupt');
        for (const tensor of read.tensors.values()) tensor.toFloat32();
      } catch (error) {
        assert.ok(error instanceof Error);
        assert.match(error.message, /^corrupt: invalid safetensors: /);
        assert.ok(!error.message.includes('\n'));
        rejected++;
      }
    }
    assert.ok(rejected > 100, `most corruptions are caught (${rejected}/500)`);
  });

  it('rejects tensors whose data does not match their shape when writing', () => {
    assert.throws(
      () => serializeSafetensors({ w: { dtype: 'float32', shape: [2, 2], data: new Float32Array(3) } }),
      /tensor "w" of shape \[2, 2\] needs 4 values, has 3/,
    );
    assert.throws(
      () => serializeSafetensors({ w: { dtype: 'float16', shape: [2], data: new Float32Array(2) } }),
      /dtype float16 but its data is a Float32Array/,
    );
    assert.throws(
      () => writeSafetensors(path.join(dir, 'no', 'such', 'dir.safetensors'), {}),
      /cannot write \(ENOENT\)/,
    );
  });
});
