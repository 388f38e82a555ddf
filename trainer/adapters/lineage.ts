// An adapter's lineage: itself, the adapter it was continued from (`idiom train --from`), that
// one's parent, and so on, as far as the registry still holds them.

import type { Registry } from './registry';

/** [id, parent, grandparent, …]; stops at a parent the map does not hold, and at a repeat. */
export function lineageOf(id: string, parents: ReadonlyMap<string, string | null>): string[] {
  const chain = [id];
  let next = parents.get(id) ?? null;
  while (next !== null && !chain.includes(next)) {
    chain.push(next);
    if (!parents.has(next)) break;
    next = parents.get(next) ?? null;
  }
  return chain;
}

/** "child <- parent <- grandparent". */
export function formatLineage(chain: readonly string[]): string {
  return chain.join(' <- ');
}

/** The lineage of `id` in `registry` (its entries' parents). */
export async function registryLineage(registry: Pick<Registry, 'list'>, id: string): Promise<string[]> {
  const parents = new Map((await registry.list()).map((entry) => [entry.id, entry.parent]));
  return lineageOf(id, parents);
}
