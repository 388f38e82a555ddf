import { strict as assert } from 'node:assert';
import {
  bfloat16ArrayToFloat32,
  bfloat16BitsToFloat32,
  float32ArrayToBfloat16,
  float32ArrayToHalf,
  float32ToBfloat16Bits,
  float32ToHalfBits,
  halfArrayToFloat32,
  halfBitsToFloat32,
} from '../../../trainer/model/float16';
import { Rng } from '../../../trainer/model/random';

// Independent decoders written from the IEEE definitions (sign, exponent, mantissa), in float64.
function halfValue(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0x1f) return mantissa ? NaN : sign * Infinity;
  if (exponent === 0) return sign * mantissa * Math.pow(2, -24);
  return sign * (1 + mantissa / 1024) * Math.pow(2, exponent - 15);
}

function bfloat16Value(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 7) & 0xff;
  const mantissa = bits & 0x7f;
  if (exponent === 0xff) return mantissa ? NaN : sign * Infinity;
  if (exponent === 0) return sign * (mantissa / 128) * Math.pow(2, -126);
  return sign * (1 + mantissa / 128) * Math.pow(2, exponent - 127);
}

/** Checks that `bits` is a nearest 16-bit value to x, ties to even; infinity counts as the next step. */
function assertNearest(
  x: number,
  bits: number,
  decode: (b: number) => number,
  infBits: number,
  infStandIn: number,
): void {
  const magnitude = Math.abs(x);
  const r = bits & 0x7fff;
  assert.equal(bits & 0x8000 ? -1 : 1, x < 0 || Object.is(x, -0) ? -1 : 1, `sign of ${x}`);
  const value = (b: number): number => (b === infBits ? infStandIn : decode(b));
  const error = Math.abs(magnitude - value(r));
  if (r > 0) assert.ok(error <= Math.abs(magnitude - value(r - 1)), `${x} -> ${r} but ${r - 1} is nearer`);
  if (r < infBits) {
    const upError = Math.abs(magnitude - value(r + 1));
    assert.ok(error <= upError, `${x} -> ${r} but ${r + 1} is nearer`);
    if (error === upError) assert.equal(r & 1, 0, `tie for ${x} must go to even`);
  }
  if (r > 0 && error === Math.abs(magnitude - value(r - 1))) assert.equal(r & 1, 0, `tie for ${x} must go to even`);
}

function f32(x: number): number {
  return Math.fround(x);
}

describe('float16 / bfloat16 conversions', () => {
  it('decodes every half and bfloat16 bit pattern (subnormals, inf, NaN)', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const halves = halfArrayToFloat32(all);
    const bfloats = bfloat16ArrayToFloat32(all);
    for (let bits = 0; bits < 65536; bits++) {
      assert.ok(
        Object.is(halves[bits], halfValue(bits)) || (Number.isNaN(halves[bits]) && Number.isNaN(halfValue(bits))),
        `half ${bits}`,
      );
      assert.ok(Object.is(halfBitsToFloat32(bits), halves[bits]) || Number.isNaN(halves[bits]));
      const b = bfloat16Value(bits);
      assert.ok(Object.is(bfloats[bits], b) || (Number.isNaN(bfloats[bits]) && Number.isNaN(b)), `bf16 ${bits}`);
      assert.ok(Object.is(bfloat16BitsToFloat32(bits), bfloats[bits]) || Number.isNaN(b));
    }
  });

  it('encodes float32 to half and bfloat16 with round-to-nearest-even', () => {
    const rng = new Rng(7);
    const values: number[] = [0, -0, 1, -1, 65504, 65519, 65520, 1e6, -1e6, 2 ** -24, 2.9802322387695312e-8];
    values.push(
      2.9802322387695312e-8 * 1.0000001,
      6.103515625e-5,
      6.1e-5,
      1e-10,
      (2 - 2 ** -23) * 2 ** 127,
      1.1754943508222875e-38,
    );
    // Exact halfway points between neighbouring halves, and between neighbouring bfloat16 values.
    for (const bits of [0x0001, 0x0002, 0x03ff, 0x0400, 0x3c00, 0x3c01, 0x7bfe])
      values.push((halfValue(bits) + halfValue(bits + 1)) / 2);
    for (const bits of [0x0001, 0x3f80, 0x3f81, 0x7f7e])
      values.push(f32((bfloat16Value(bits) + bfloat16Value(bits + 1)) / 2));
    for (let i = 0; i < 20000; i++) {
      const exponent = rng.int(80) - 40;
      values.push(f32((rng.next() * 2 - 1) * Math.pow(2, exponent)));
    }
    for (const raw of values) {
      const x = f32(raw);
      assertNearest(x, float32ToHalfBits(x), halfValue, 0x7c00, 65536);
      assertNearest(x, float32ToBfloat16Bits(x), bfloat16Value, 0x7f80, Math.pow(2, 128));
    }
    assert.equal(float32ToHalfBits(Infinity), 0x7c00);
    assert.equal(float32ToHalfBits(-Infinity), 0xfc00);
    assert.ok(Number.isNaN(halfValue(float32ToHalfBits(NaN))));
    assert.ok(Number.isNaN(bfloat16Value(float32ToBfloat16Bits(NaN))));
    assert.equal(float32ToBfloat16Bits(-Infinity), 0xff80);

    const array = Float32Array.from(values.slice(0, 500));
    const halfBits = float32ArrayToHalf(array);
    const bfBits = float32ArrayToBfloat16(array);
    for (let i = 0; i < array.length; i++) {
      assert.equal(halfBits[i], float32ToHalfBits(array[i]));
      assert.equal(bfBits[i], float32ToBfloat16Bits(array[i]));
    }
  });
});
