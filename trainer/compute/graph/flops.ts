import type { Graph, Node } from './graph';

// Matrix-product FLOPs of a graph from its static shapes: 2·M·N·K per product (a multiply and an
// add), times the broadcast batch. Elementwise work is not counted. This is the convention of
// `idiom bench train`: it counts what the graph computes, so frozen weights, whose gradients
// autodiff never builds, contribute only their forward and input-gradient products.

export function matmulFlops(node: Node): number {
  if (node.op !== 'MatMul' && node.op !== 'FusedMatMul') return 0;
  const [a] = node.inputs;
  const out = node.outputs[0];
  if (!a) return 0;
  const transA = node.op === 'FusedMatMul' && node.attrs.transA === 1;
  const k = Number(a.shape[a.rank - (transA ? 2 : 1)]);
  let outputs = 1;
  for (const d of out.shape) {
    if (typeof d !== 'number') throw new Error(`matmulFlops: ${out.name} has a symbolic dimension`);
    outputs *= d;
  }
  return 2 * outputs * k;
}

/** Total product FLOPs, and the share of nodes whose name starts with each given scope. */
export function graphMatmulFlops(
  graph: Graph,
  scopes: readonly string[] = [],
): { total: number; byScope: Record<string, number> } {
  let total = 0;
  const byScope: Record<string, number> = Object.fromEntries(scopes.map((s) => [s, 0]));
  for (const node of graph.nodes) {
    const flops = matmulFlops(node);
    total += flops;
    for (const s of scopes) if (node.name.startsWith(`${s}/`)) byScope[s] += flops;
  }
  return { total, byScope };
}
