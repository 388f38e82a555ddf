// A tensor held in JS memory: what checkpoints load into, what graphs take as initializers and
// feeds, and what sessions return. Row-major, shape in elements.

export type DType = 'float32' | 'float64' | 'float16' | 'int32' | 'int64' | 'int8' | 'uint8' | 'bool';

export type TensorData =
  | Float32Array
  | Float64Array
  | Uint16Array // float16 bits
  | Int32Array
  | BigInt64Array
  | Int8Array
  | Uint8Array;

export interface HostTensor {
  dtype: DType;
  shape: number[];
  data: TensorData;
}

export function elementCount(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}
