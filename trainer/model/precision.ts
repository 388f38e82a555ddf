import { countParameters, type ModelConfig } from './config';

// The serving precision a model gets from the idiom.precision setting.

export type ServingPrecisionSetting = 'auto' | 'float32' | 'int8' | 'int4';

/** Above this many parameters `auto` serves int8 weights; the embedded model (~6M) stays float32. */
export const AUTO_INT8_PARAMETERS = 100e6;

/** Values per quantization block along K, each with one float32 scale (MatMulNBits' layout). */
export const INT8_BLOCK = 128;
export const INT4_BLOCK = 32;

/** Bytes a served weight parameter takes at `precision`, block scales included. */
export function servedBytesPerParameter(precision: 'float32' | 'int8' | 'int4'): number {
  if (precision === 'float32') return 4;
  return precision === 'int8' ? 1 + 4 / INT8_BLOCK : 0.5 + 4 / INT4_BLOCK;
}

/** `auto` → int8 above AUTO_INT8_PARAMETERS parameters, else float32; any other setting as it is. */
export function servingPrecision(
  setting: ServingPrecisionSetting,
  model: ModelConfig | number,
): 'float32' | 'int8' | 'int4' {
  if (setting !== 'auto') return setting;
  const parameters = typeof model === 'number' ? model : countParameters(model);
  return parameters > AUTO_INT8_PARAMETERS ? 'int8' : 'float32';
}
