// Several LoRA adapters served as one. Adapters of ranks r1 … rn are exactly one adapter of rank
// Σ r_i: A is the A_i stacked along the rank axis, B the B_i side by side, each scaled by
// weight_i × scaling_i (alpha_i / r_i, or alpha_i / √r_i with rsLoRA), so the sum has scaling 1:
//   B·A = Σ weight_i · scaling_i · B_i·A_i
// A module only some adapters target gets zero blocks for the others, so every module has rank Σ r_i.

import { PROJECTIONS, type Projection } from '../model/config';
import type { HostTensor } from '../model/tensor';
import type { TrainingMethod } from './manifest';
import type { AdapterConfig, LoadedAdapter, LoraModule } from './peft';

/** One adapter of a combination and its weight. */
export interface AdapterWeight {
  id: string;
  weight: number;
}

/** What can be checked before any weights are read: the kind and the base of each adapter. */
export interface CombineCandidate extends AdapterWeight {
  kind: TrainingMethod | null;
  /** The base it was trained on (its manifest), null when unknown. */
  base: { name: string; sha256: string } | null;
}

/** `team×1 + mine×0.5`: how a person reads a combination. */
export function combinationLabel(parts: readonly AdapterWeight[]): string {
  return parts.map((part) => `${part.id}×${part.weight}`).join(' + ');
}

/** `ID` or `ID:WEIGHT` (weight 1 when left out), as the CLI takes them. */
export function parseAdapterWeight(text: string): AdapterWeight {
  const colon = text.lastIndexOf(':');
  const id = colon < 0 ? text : text.slice(0, colon);
  const weightText = colon < 0 ? '1' : text.slice(colon + 1);
  const weight = weightText.trim() === '' ? Number.NaN : Number(weightText);
  if (id === '') throw new Error(`"${text}": expected ID or ID:WEIGHT (e.g. 20261128-130501-ab12cd:0.5)`);
  if (!Number.isFinite(weight)) throw new Error(`"${text}": the weight "${weightText}" is not a finite number`);
  return { id, weight };
}

/**
 * Refuses, in one line, a list that cannot be combined: empty, an id listed twice, a weight that
 * is not a finite number, a full fine-tune, or adapters trained on different bases (naming both).
 */
export function checkCombinable(candidates: readonly CombineCandidate[]): void {
  if (candidates.length === 0) throw new Error('no adapters to combine (give at least one id)');
  const seen = new Set<string>();
  for (const candidate of candidates) {
    if (seen.has(candidate.id)) throw new Error(`adapter ${candidate.id} is listed twice; give it one weight`);
    seen.add(candidate.id);
    if (typeof candidate.weight !== 'number' || !Number.isFinite(candidate.weight))
      throw new Error(`adapter ${candidate.id}: weight ${String(candidate.weight)} is not a finite number`);
    if (candidate.kind === 'full')
      throw new Error(
        `adapter ${candidate.id} is a full fine-tune; only LoRA adapters can be combined (serve it alone instead)`,
      );
  }
  const first = candidates.find((candidate) => candidate.base !== null);
  for (const other of candidates) {
    if (!first?.base || !other.base || other.base.sha256 === first.base.sha256) continue;
    throw new Error(
      `cannot combine adapters ${first.id} and ${other.id}: different bases (${first.id} was trained on ` +
        `"${first.base.name}" sha256 ${first.base.sha256.slice(0, 12)}…, ${other.id} on ` +
        `"${other.base.name}" sha256 ${other.base.sha256.slice(0, 12)}…)`,
    );
  }
}

export interface CombinePart extends AdapterWeight {
  adapter: LoadedAdapter;
}

/** The combination as one adapter of rank Σ r_i and scaling 1, and its label. */
export interface CombinedAdapter {
  label: string;
  parts: AdapterWeight[];
  adapter: LoadedAdapter;
}

/**
 * Combines loaded LoRA adapters into one (see the top of this file). Refuses, naming both ids,
 * adapters of different bases (their manifests) or architectures (a module's shape differs).
 */
export function combineAdapters(parts: readonly CombinePart[]): CombinedAdapter {
  checkCombinable(
    parts.map((part) => ({
      id: part.id,
      weight: part.weight,
      kind: part.adapter.manifest?.training.method ?? 'lora',
      base: part.adapter.manifest?.base ?? null,
    })),
  );
  checkArchitectures(parts);
  const rank = parts.reduce((sum, part) => sum + part.adapter.config.r, 0);
  const names = new Map<string, LoraModule>();
  for (const part of parts) for (const [name, module] of part.adapter.modules) names.set(name, module);
  const ordered = [...names.entries()].sort(
    ([, x], [, y]) => x.layer - y.layer || PROJECTIONS.indexOf(x.target) - PROJECTIONS.indexOf(y.target),
  );

  const modules = new Map<string, LoraModule>();
  for (const [name, shapeOf] of ordered) {
    const inFeatures = shapeOf.a.shape[1];
    const outFeatures = shapeOf.b.shape[0];
    const a = new Float32Array(rank * inFeatures);
    const b = new Float32Array(outFeatures * rank);
    let column = 0;
    for (const part of parts) {
      const r = part.adapter.config.r;
      const module = part.adapter.modules.get(name);
      if (module) {
        a.set(module.a.data as Float32Array, column * inFeatures);
        const factor = part.weight * part.adapter.config.scaling;
        const source = module.b.data as Float32Array;
        for (let row = 0; row < outFeatures; row++) {
          for (let k = 0; k < r; k++) b[row * rank + column + k] = factor * source[row * r + k];
        }
      }
      column += r;
    }
    const tensor = (shape: number[], data: Float32Array): HostTensor => ({ dtype: 'float32', shape, data });
    modules.set(name, {
      layer: shapeOf.layer,
      target: shapeOf.target,
      a: tensor([rank, inFeatures], a),
      b: tensor([outFeatures, rank], b),
    });
  }

  const targets: Projection[] = PROJECTIONS.filter((p) => ordered.some(([, m]) => m.target === p));
  const config: AdapterConfig = {
    r: rank,
    alpha: rank,
    scaling: 1,
    useRslora: false,
    targets,
    layers: [...new Set(ordered.map(([, m]) => m.layer))],
    modules: ordered.map(([name]) => name),
    dropout: 0,
    baseModelNameOrPath: parts[0].adapter.config.baseModelNameOrPath,
  };
  const weights = parts.map((part) => ({ id: part.id, weight: part.weight }));
  const label = combinationLabel(weights);
  return {
    label,
    parts: weights,
    adapter: {
      dir: '',
      config,
      modules,
      manifest: null,
      weightsSha256: parts.map((part) => `${part.adapter.weightsSha256}×${part.weight}`).join('+'),
    },
  };
}

/** Every module two adapters share, and every projection, must have one [out, in] shape. */
function checkArchitectures(parts: readonly CombinePart[]): void {
  const seen = new Map<string, { id: string; shape: string }>();
  for (const part of parts) {
    for (const [name, module] of part.adapter.modules) {
      const shape = `[${module.b.shape[0]}, ${module.a.shape[1]}]`;
      for (const key of [name, module.target]) {
        const earlier = seen.get(key);
        if (earlier === undefined) seen.set(key, { id: part.id, shape });
        else if (earlier.shape !== shape)
          throw new Error(
            `cannot combine adapters ${earlier.id} and ${part.id}: different architectures ` +
              `(${key} is ${earlier.shape} in ${earlier.id}, ${shape} in ${part.id})`,
          );
      }
    }
  }
}
