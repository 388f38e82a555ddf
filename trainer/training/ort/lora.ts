import { loraInputName } from '../../compute/engine/llama';
import { type ModelConfig, projectionModule, projectionShape } from '../../model/config';
import { validateLora, type LoraConfig } from '../../model/lora';
import { Rng } from '../../model/random';
import { type HostTensor, elementCount } from '../../model/tensor';

// A new LoRA adapter (settings in model/lora.ts): A [r, in] random, B [out, r] zero, so it leaves
// the model unchanged until trained. Tensors are named with PEFT's safetensors keys.

/** A fresh adapter: A ~ U(±1/√in) (PEFT's kaiming_uniform with a = √5), B = 0. */
export function initLoraWeights(cfg: ModelConfig, lora: LoraConfig, seed: number): Map<string, HostTensor> {
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
      tensors.set(loraInputName(module, 'B'), {
        dtype: 'float32',
        shape: bShape,
        data: new Float32Array(elementCount(bShape)),
      });
    }
  }
  return tensors;
}
