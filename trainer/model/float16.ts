// IEEE half (F16) and bfloat16 (BF16) <-> float32, bit-exact: subnormals, infinities and NaN
// payloads are kept; float32 -> 16 bits rounds to nearest, ties to even.
// Hand-written: Float16Array is not in Node 20, and no npm package covers bf16 with RNE.

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

let halfToFloatBits: Uint32Array | null = null;

/** Float32 bit patterns of all 65536 half values (256 KiB, built on first use). */
function halfTable(): Uint32Array {
  if (halfToFloatBits) return halfToFloatBits;
  const table = new Uint32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exponent = (h >>> 10) & 0x1f;
    const mantissa = h & 0x3ff;
    if (exponent === 0x1f) {
      table[h] = (sign | 0x7f800000 | (mantissa << 13)) >>> 0; // inf, or NaN with its payload
    } else if (exponent !== 0) {
      table[h] = (sign | ((exponent + 112) << 23) | (mantissa << 13)) >>> 0;
    } else {
      // zero or subnormal: mantissa * 2^-24 is exact in float32
      f32Scratch[0] = mantissa * 2 ** -24;
      table[h] = (sign | u32Scratch[0]) >>> 0;
    }
  }
  halfToFloatBits = table;
  return table;
}

export function halfBitsToFloat32(bits: number): number {
  u32Scratch[0] = halfTable()[bits & 0xffff];
  return f32Scratch[0];
}

export function bfloat16BitsToFloat32(bits: number): number {
  u32Scratch[0] = (bits & 0xffff) << 16;
  return f32Scratch[0];
}

/** Float32 -> half bits, round to nearest even; overflow gives infinity, NaN stays NaN. */
export function float32ToHalfBits(value: number): number {
  f32Scratch[0] = value;
  return float32BitsToHalfBits(u32Scratch[0]);
}

function float32BitsToHalfBits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exponent = (x >>> 23) & 0xff;
  const mantissa = x & 0x7fffff;
  if (exponent === 0xff) {
    if (mantissa === 0) return sign | 0x7c00;
    return sign | 0x7c00 | 0x200 | (mantissa >>> 13); // quiet NaN, top payload bits kept
  }
  const halfExponent = exponent - 112; // rebias 127 -> 15
  if (halfExponent >= 0x1f) return sign | 0x7c00;
  if (halfExponent <= 0) {
    // Half subnormal: count of 2^-24 units is (1.mantissa) >> (14 - halfExponent), rounded.
    if (halfExponent < -10) return sign; // below half of the smallest subnormal
    const full = mantissa | 0x800000;
    const shift = 14 - halfExponent;
    let q = full >>> shift;
    const rest = full & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rest > half || (rest === half && (q & 1) === 1)) q++;
    return sign | q; // q may carry into the smallest normal, which is correct
  }
  let q = (halfExponent << 10) | (mantissa >>> 13);
  const rest = mantissa & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (q & 1) === 1)) q++; // a carry may reach infinity, which is correct
  return sign | q;
}

/** Float32 -> bfloat16 bits, round to nearest even; NaN stays a quiet NaN. */
export function float32ToBfloat16Bits(value: number): number {
  f32Scratch[0] = value;
  return float32BitsToBfloat16Bits(u32Scratch[0]);
}

function float32BitsToBfloat16Bits(x: number): number {
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff) !== 0) return ((x >>> 16) | 0x40) & 0xffff;
  const roundingBias = 0x7fff + ((x >>> 16) & 1);
  return ((x + roundingBias) >>> 16) & 0xffff;
}

export function halfArrayToFloat32(bits: Uint16Array, out = new Float32Array(bits.length)): Float32Array {
  const table = halfTable();
  const outBits = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < bits.length; i++) outBits[i] = table[bits[i]];
  return out;
}

export function bfloat16ArrayToFloat32(bits: Uint16Array, out = new Float32Array(bits.length)): Float32Array {
  const outBits = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < bits.length; i++) outBits[i] = bits[i] << 16;
  return out;
}

export function float32ArrayToHalf(values: Float32Array, out = new Uint16Array(values.length)): Uint16Array {
  const inBits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  for (let i = 0; i < values.length; i++) out[i] = float32BitsToHalfBits(inBits[i]);
  return out;
}

export function float32ArrayToBfloat16(values: Float32Array, out = new Uint16Array(values.length)): Uint16Array {
  const inBits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  for (let i = 0; i < values.length; i++) out[i] = float32BitsToBfloat16Bits(inBits[i]);
  return out;
}
