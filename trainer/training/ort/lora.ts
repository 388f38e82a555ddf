import { loraInputName } from '../../compute/engine/llama';
import { ModelConfig, Projection, PROJECTIONS, projectionModule, projectionShape } from '../../model/config';
import { Rng } from '../../model/random';
import { HostTensor, elementCount } from '../../model/tensor';

// LoRA with PEFT semantics: W x + (alpha / r) · B A x, A [r, in] random, B [out, r] zero, so a
// fresh adapter leaves the model unchanged. Tensors are named with PEFT's safetensors keys.

export interface LoraOptions {
  /** Projections that get an adapter (PEFT target_modules). */
  targets: readonly Projection[];
  r: number;
  alpha: number;
}

export const DEFAULT_LORA: LoraOptions = { targets: ['q_proj', 'v_proj'], r: 16, alpha: 32 };

export function loraScaling(lora: LoraOptions): number {
  return lora.alpha / lora.r;
}

export function validateLora(lora: LoraOptions): void {
  if (!Number.isInteger(lora.r) || lora.r < 1) throw new Error(`LoRA r must be a positive integer, got ${lora.r}`);
  if (!Number.isFinite(lora.alpha) || lora.alpha <= 0) throw new Error(`LoRA alpha must be a positive number, got ${lora.alpha}`);
  if (lora.targets.length === 0) throw new Error('LoRA needs at least one target module');
  for (const t of lora.targets) {
    if (!PROJECTIONS.includes(t)) throw new Error(`unknown LoRA target ${t} (expected one of ${PROJECTIONS.join(', ')})`);
  }
}

/** A fresh adapter: A ~ U(±1/√in) (PEFT's kaiming_uniform with a = √5), B = 0. */
export function initLoraWeights(cfg: ModelConfig, lora: LoraOptions, seed: number): Map<string, HostTensor> {
  validateLora(lora);
  const rng = new Rng(seed);
  const tensors = new Map<string, HostTensor>();
  for (let layer = 0; layer < cfg.numLayers; layer++) {
    for (const projection of lora.targets) {
      const module = projectionModule(layer, projection);
      const [outFeatures, inFeatures] = projectionShape(cfg, projection);
      const bound = 1 / Math.sqrt(inFeatures);
      const a = rng.fillUniform(new Float32Array(lora.r * inFeatures), -bound, bound);
      tensors.set(loraInputName(module, 'A'), { dtype: 'float32', shape: [lora.r, inFeatures], data: a });
      const bShape = [outFeatures, lora.r];
      tensors.set(loraInputName(module, 'B'), { dtype: 'float32', shape: bShape, data: new Float32Array(elementCount(bShape)) });
    }
  }
  return tensors;
}
