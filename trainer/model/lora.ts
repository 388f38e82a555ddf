import { PROJECTIONS, type Projection } from './config';

// LoRA's settings with PEFT's meaning: W x + scaling · B A x on each target projection, where
// scaling = alpha / r (alpha / √r with rsLoRA). The one place they are typed, defaulted and
// checked; the trainer, the adapter files and the CLI all take this shape.

export interface LoraConfig {
  /** Rank of A [r, in] and B [out, r]. */
  r: number;
  alpha: number;
  /** Projections that get an adapter (PEFT target_modules). */
  targets: readonly Projection[];
}

/** What training uses unless told otherwise; package.json's idiom.lora.* defaults are the same. */
export const DEFAULT_LORA: LoraConfig = { r: 16, alpha: 32, targets: PROJECTIONS };

export function loraScaling(lora: { r: number; alpha: number; useRslora?: boolean }): number {
  return lora.useRslora ? lora.alpha / Math.sqrt(lora.r) : lora.alpha / lora.r;
}

export function validateLora(lora: LoraConfig): void {
  if (!Number.isSafeInteger(lora.r) || lora.r < 1) throw new Error(`LoRA r must be a positive integer, got ${lora.r}`);
  if (!Number.isFinite(lora.alpha) || lora.alpha <= 0)
    throw new Error(`LoRA alpha must be a positive number, got ${lora.alpha}`);
  if (lora.targets.length === 0) throw new Error('LoRA needs at least one target module');
  for (const target of lora.targets) {
    if (!PROJECTIONS.includes(target))
      throw new Error(`unknown LoRA target module "${target}" (known: ${PROJECTIONS.join(', ')})`);
  }
}
