import { Rng } from '../../model/random';

// Next-token choice from logits: greedy (temperature 0), or temperature + top-p (nucleus) with a
// seeded generator so a completion can be reproduced.

export interface SamplingOptions {
  /** 0 (default) = greedy. */
  temperature?: number;
  /** Nucleus mass in (0, 1]; 1 = the whole distribution. Default 1. */
  topP?: number;
  /** Seed of the sampler's generator. Default 0. */
  seed?: number;
}

export function argmax(logits: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

export interface Nucleus {
  /** Token ids, most probable first. */
  tokens: number[];
  /** Their probabilities renormalized over the nucleus (sum 1), same order. */
  probs: number[];
}

/**
 * The smallest set of most probable tokens whose mass under softmax(logits / temperature) reaches
 * topP, renormalized. Only tokens above a probability threshold are sorted: the threshold is halved
 * until the tokens above it hold at least topP, so the nucleus is always a prefix of them.
 */
export function nucleus(logits: ArrayLike<number>, temperature: number, topP: number): Nucleus {
  if (!(temperature > 0)) throw new Error(`temperature must be > 0 for sampling, got ${temperature}`);
  if (!(topP > 0 && topP <= 1)) throw new Error(`topP must be in (0, 1], got ${topP}`);
  const V = logits.length;
  let maxLogit = -Infinity;
  for (let i = 0; i < V; i++) if (logits[i] > maxLogit) maxLogit = logits[i];
  const probs = new Float64Array(V);
  let total = 0;
  for (let i = 0; i < V; i++) total += probs[i] = Math.exp((logits[i] - maxLogit) / temperature);
  for (let i = 0; i < V; i++) probs[i] /= total;

  let candidates: number[] = [];
  for (let threshold = 1 / 2; ; threshold /= 2) {
    candidates = [];
    let mass = 0;
    for (let i = 0; i < V; i++) {
      if (probs[i] >= threshold) {
        candidates.push(i);
        mass += probs[i];
      }
    }
    // Summation error can leave the full set a hair under topP = 1: stop once nothing is left out.
    if (mass >= topP || candidates.length === V || threshold < Number.MIN_VALUE) break;
  }
  candidates.sort((a, b) => probs[b] - probs[a] || a - b);
  const tokens: number[] = [];
  let mass = 0;
  for (const id of candidates) {
    tokens.push(id);
    mass += probs[id];
    if (mass >= topP) break;
  }
  return { tokens, probs: tokens.map((id) => probs[id] / mass) };
}

export class Sampler {
  private readonly rng: Rng;
  readonly temperature: number;
  readonly topP: number;

  constructor(options: SamplingOptions = {}) {
    this.temperature = options.temperature ?? 0;
    this.topP = options.topP ?? 1;
    if (!(this.temperature >= 0) || !Number.isFinite(this.temperature)) {
      throw new Error(`temperature must be a finite number >= 0, got ${options.temperature}`);
    }
    if (!(this.topP > 0 && this.topP <= 1)) throw new Error(`topP must be in (0, 1], got ${options.topP}`);
    this.rng = new Rng(options.seed ?? 0);
  }

  next(logits: ArrayLike<number>): number {
    if (this.temperature === 0) return argmax(logits);
    const { tokens, probs } = nucleus(logits, this.temperature, this.topP);
    let u = this.rng.next();
    for (let i = 0; i < tokens.length; i++) {
      u -= probs[i];
      if (u < 0) return tokens[i];
    }
    return tokens[tokens.length - 1];
  }
}
