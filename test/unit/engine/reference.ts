// An independent plain-loop Llama/Qwen2/Qwen3 forward in float64 (no ONNX), written from the HF
// modeling code's definitions (rope_scaling from HF's rope init functions), so the graph
// builders have something to be checked against.

import { type ModelConfig, projectionModule, type Projection } from '../../../trainer/model/config';
import type { HostTensor } from '../../../trainer/model/tensor';

export interface ReferenceAdapter {
  scaling: number;
  /** module path → A [r, in], B [out, r] */
  modules: ReadonlyMap<string, { a: HostTensor; b: HostTensor }>;
}

type Weights = ReadonlyMap<string, HostTensor>;

function w(weights: Weights, name: string): ArrayLike<number> {
  const t = weights.get(name);
  if (!t) throw new Error(`reference: missing ${name}`);
  return t.data as Float32Array;
}

/** y[out] = W[out, in] · x[in] (+ b) */
function linear(x: Float64Array, W: ArrayLike<number>, outFeatures: number, bias?: ArrayLike<number>): Float64Array {
  const inFeatures = x.length;
  const y = new Float64Array(outFeatures);
  for (let o = 0; o < outFeatures; o++) {
    let acc = bias ? bias[o] : 0;
    for (let i = 0; i < inFeatures; i++) acc += W[o * inFeatures + i] * x[i];
    y[o] = acc;
  }
  return y;
}

function rmsNorm(x: Float64Array, weight: ArrayLike<number>, eps: number): Float64Array {
  let ms = 0;
  for (const v of x) ms += v * v;
  ms /= x.length;
  const inv = 1 / Math.sqrt(ms + eps);
  return x.map((v, i) => v * inv * weight[i]);
}

/** HF's inv_freq: default, linear (÷ factor) or llama3 (per-band: kept, ÷ factor, or blended). */
function inverseFrequency(cfg: ModelConfig, i: number): number {
  const hd = cfg.headDim;
  const plain = Math.fround(1 / Math.pow(cfg.ropeTheta, (2 * i) / hd));
  const scaling = cfg.ropeScaling;
  if (!scaling) return plain;
  if (scaling.type === 'linear') return Math.fround(plain / scaling.factor);
  const lowFreqWavelen = scaling.originalMaxPositionEmbeddings / scaling.lowFreqFactor;
  const highFreqWavelen = scaling.originalMaxPositionEmbeddings / scaling.highFreqFactor;
  const wavelen = (2 * Math.PI) / plain;
  const llama = wavelen > lowFreqWavelen ? plain / scaling.factor : plain;
  const smoothFactor =
    (scaling.originalMaxPositionEmbeddings / wavelen - scaling.lowFreqFactor) /
    (scaling.highFreqFactor - scaling.lowFreqFactor);
  const smoothed = ((1 - smoothFactor) * llama) / scaling.factor + smoothFactor * llama;
  const isMedium = !(wavelen < highFreqWavelen) && !(wavelen > lowFreqWavelen);
  return Math.fround(isMedium ? smoothed : llama);
}

/** qwen3: RMSNorm of each head's hd values, in place. */
function headNorm(vec: Float64Array, heads: number, hd: number, weight: ArrayLike<number>, eps: number): void {
  for (let h = 0; h < heads; h++) vec.set(rmsNorm(vec.subarray(h * hd, (h + 1) * hd), weight, eps), h * hd);
}

function rope(vec: Float64Array, heads: number, cfg: ModelConfig, position: number): void {
  const hd = cfg.headDim;
  const half = hd / 2;
  for (let h = 0; h < heads; h++) {
    const base = h * hd;
    for (let i = 0; i < half; i++) {
      const angle = position * inverseFrequency(cfg, i);
      const c = Math.cos(angle);
      const s = Math.sin(angle);
      const x1 = vec[base + i];
      const x2 = vec[base + half + i];
      vec[base + i] = x1 * c - x2 * s;
      vec[base + half + i] = x2 * c + x1 * s;
    }
  }
}

/** Logits [T, V] for one sequence, positions 0..T-1. */
export function referenceLogits(
  cfg: ModelConfig,
  weights: Weights,
  tokens: number[],
  adapter?: ReferenceAdapter,
): Float64Array[] {
  const D = cfg.hiddenSize;
  const H = cfg.numHeads;
  const KV = cfg.numKvHeads;
  const hd = cfg.headDim;
  const F = cfg.intermediateSize;
  const V = cfg.vocabSize;
  const T = tokens.length;
  const embed = w(weights, 'model.embed_tokens.weight');

  const project = (x: Float64Array, layer: number, projection: Projection, outFeatures: number): Float64Array => {
    const module = projectionModule(layer, projection);
    const hasBias = cfg.attentionBias && ['q_proj', 'k_proj', 'v_proj'].includes(projection);
    const y = linear(
      x,
      w(weights, `${module}.weight`),
      outFeatures,
      hasBias ? w(weights, `${module}.bias`) : undefined,
    );
    const lora = adapter?.modules.get(module);
    if (lora) {
      const r = lora.a.shape[0];
      const down = linear(x, lora.a.data as Float32Array, r);
      const up = linear(down, lora.b.data as Float32Array, outFeatures);
      for (let o = 0; o < outFeatures; o++) y[o] += adapter!.scaling * up[o];
    }
    return y;
  };

  let xs: Float64Array[] = tokens.map((tok) => Float64Array.from({ length: D }, (_, i) => embed[tok * D + i]));
  for (let layer = 0; layer < cfg.numLayers; layer++) {
    const prefix = `model.layers.${layer}`;
    const qs: Float64Array[] = [];
    const ks: Float64Array[] = [];
    const vs: Float64Array[] = [];
    for (let t = 0; t < T; t++) {
      const n = rmsNorm(xs[t], w(weights, `${prefix}.input_layernorm.weight`), cfg.rmsNormEps);
      const q = project(n, layer, 'q_proj', H * hd);
      const k = project(n, layer, 'k_proj', KV * hd);
      if (cfg.qkNorm) {
        headNorm(q, H, hd, w(weights, `${prefix}.self_attn.q_norm.weight`), cfg.rmsNormEps);
        headNorm(k, KV, hd, w(weights, `${prefix}.self_attn.k_norm.weight`), cfg.rmsNormEps);
      }
      rope(q, H, cfg, t);
      rope(k, KV, cfg, t);
      qs.push(q);
      ks.push(k);
      vs.push(project(n, layer, 'v_proj', KV * hd));
    }
    const next: Float64Array[] = [];
    for (let t = 0; t < T; t++) {
      const context = new Float64Array(H * hd);
      for (let h = 0; h < H; h++) {
        const kvHead = Math.floor(h / (H / KV)); // HF repeat_kv
        const scores = new Float64Array(t + 1);
        let maxScore = -Infinity;
        for (let s = 0; s <= t; s++) {
          let dot = 0;
          for (let i = 0; i < hd; i++) dot += qs[t][h * hd + i] * ks[s][kvHead * hd + i];
          scores[s] = dot / Math.sqrt(hd);
          maxScore = Math.max(maxScore, scores[s]);
        }
        let total = 0;
        for (let s = 0; s <= t; s++) total += scores[s] = Math.exp(scores[s] - maxScore);
        for (let s = 0; s <= t; s++) {
          for (let i = 0; i < hd; i++) context[h * hd + i] += (scores[s] / total) * vs[s][kvHead * hd + i];
        }
      }
      const attended = project(context, layer, 'o_proj', D).map((v, i) => v + xs[t][i]);
      const n2 = rmsNorm(attended, w(weights, `${prefix}.post_attention_layernorm.weight`), cfg.rmsNormEps);
      const gate = project(n2, layer, 'gate_proj', F);
      const up = project(n2, layer, 'up_proj', F);
      const act = gate.map((g, i) => (g / (1 + Math.exp(-g))) * up[i]);
      next.push(project(act, layer, 'down_proj', D).map((v, i) => v + attended[i]));
    }
    xs = next;
  }
  const head = w(weights, cfg.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight');
  return xs.map((x) => linear(rmsNorm(x, w(weights, 'model.norm.weight'), cfg.rmsNormEps), head, V));
}
