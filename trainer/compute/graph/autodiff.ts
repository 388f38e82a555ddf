import type { HostTensor } from '../../model/tensor';
import { type Graph, type Node, type Value, isFloat, sameShape } from './graph';
import { GRADIENT_RULES, type GradientContext } from './gradients';
import * as op from './ops';

// Reverse-mode autodiff over the graph IR. Nodes are appended in topological order, so walking
// graph.nodes backwards from the loss visits every consumer before its producer. Only nodes on a
// path from a `wrt` value to the loss are differentiated, and a rule is asked only for the input
// gradients that lead back to `wrt`: frozen weights cost no gradient work (what makes LoRA cheap).

export interface GradientOptions {
  /** d(output)/d(loss) seed; defaults to ones shaped like the loss (which must have one element). */
  seed?: Value;
}

/**
 * Appends the gradient of `loss` with respect to each of `wrt` to the loss's graph.
 * A `wrt` value the loss does not depend on gets a zero gradient.
 */
export function gradients(
  graph: Graph,
  loss: Value,
  wrt: readonly Value[],
  options: GradientOptions = {},
): Map<Value, Value> {
  if (loss.graph !== graph) throw new Error(`gradients: loss ${loss.name} belongs to another graph`);
  if (!isFloat(loss.dtype)) throw new Error(`gradients: loss ${loss} must be a float tensor`);
  return gradientsFromSeeds(graph, [{ value: loss, seed: options.seed ?? onesLike(graph, loss) }], wrt);
}

/**
 * Vector-Jacobian products from several starting points at once: Σ over `seeds` of
 * seed · d(value)/d(w), for each w of `wrt` (e.g. a loss computed in chunks, each chunk with its
 * own analytic gradient).
 */
export function gradientsFromSeeds(
  graph: Graph,
  seeds: readonly { value: Value; seed: Value }[],
  wrt: readonly Value[],
): Map<Value, Value> {
  for (const { value } of seeds) {
    if (value.graph !== graph) throw new Error(`gradients: ${value.name} belongs to another graph`);
  }
  for (const w of wrt) {
    if (w.graph !== graph) throw new Error(`gradients: ${w.name} belongs to another graph`);
    if (!isFloat(w.dtype)) throw new Error(`gradients: cannot differentiate with respect to ${w} (not a float tensor)`);
  }

  const forwardNodes = graph.nodes.slice(); // gradient nodes appended below are not walked
  const dependsOnWrt = valuesDependingOn(forwardNodes, wrt);

  const contributions = new Map<Value, Value[]>();
  const contribute = (value: Value, grad: Value) => {
    if (grad.dtype !== value.dtype || !sameShape(grad.shape, value.shape)) {
      throw new Error(
        `gradients: gradient ${grad} does not match ${value} (rule for ${value.producer?.op ?? 'input'})`,
      );
    }
    const list = contributions.get(value);
    if (list) list.push(grad);
    else contributions.set(value, [grad]);
  };
  /** Fan-in: every use of a value contributed a gradient; they add up. */
  const gradientOf = (value: Value): Value | null => {
    const list = contributions.get(value);
    if (!list) return null;
    if (list.length > 1) {
      const total = graph.scope('grad', () => op.sum(list));
      contributions.set(value, [total]);
      return total;
    }
    return list[0];
  };

  for (const { value, seed } of seeds) contribute(value, seed);
  const seeded = new Set(seeds.map((s) => s.value));
  const readers = new Map<Value, Node[]>();
  for (const node of forwardNodes) {
    for (const input of new Set(node.inputs)) {
      if (!input) continue;
      const list = readers.get(input);
      if (list) list.push(node);
      else readers.set(input, [node]);
    }
  }
  const consumers = (value: Value) => ({ nodes: readers.get(value) ?? [], seeded: seeded.has(value) });

  for (let i = forwardNodes.length - 1; i >= 0; i--) {
    const node = forwardNodes[i];
    const outputGrads = node.outputs.map((o) => (dependsOnWrt.has(o) ? gradientOf(o) : null));
    if (outputGrads.every((g) => g === null)) continue;
    const needs = node.inputs.map((v) => v !== null && dependsOnWrt.has(v));
    if (!needs.some(Boolean)) continue;
    const rule = GRADIENT_RULES[ruleKey(node)];
    if (!rule) {
      const value = node.outputs[0];
      throw new Error(`gradients: no gradient rule for op ${ruleKey(node)} (node ${node.name}, computing ${value})`);
    }
    const context: GradientContext = { graph, node, outputGrads, needs, consumers, gradientOf };
    const inputGrads = graph.scope(`grad_${node.name}`, () => rule(context));
    node.inputs.forEach((input, k) => {
      if (!input || !needs[k]) return;
      const grad = inputGrads[k];
      if (!grad) throw new Error(`gradients: rule for ${ruleKey(node)} gave no gradient for input ${k} (${input})`);
      contribute(input, grad);
    });
  }

  const result = new Map<Value, Value>();
  for (const w of wrt) result.set(w, gradientOf(w) ?? graph.scope('grad', () => op.fillLike(w, 0)));
  return result;
}

export function ruleKey(node: Node): string {
  return node.domain && node.domain !== 'ai.onnx' ? `${node.domain}.${node.op}` : node.op;
}

/** Float values computed (transitively) from any of `sources`, sources included. */
function valuesDependingOn(nodes: readonly Node[], sources: readonly Value[]): Set<Value> {
  const reached = new Set<Value>(sources);
  for (const node of nodes) {
    if (!node.inputs.some((v) => v !== null && reached.has(v))) continue;
    for (const out of node.outputs) if (isFloat(out.dtype)) reached.add(out);
  }
  return reached;
}

function onesLike(graph: Graph, loss: Value): Value {
  const shape = loss.staticShape();
  if (shape.some((d) => d !== 1)) throw new Error(`gradients: loss ${loss} must have one element, or pass a seed`);
  const tensor: HostTensor = op.tensorOf(loss.dtype, shape, [1]);
  return graph.constant(tensor, 'grad_seed');
}
