import * as fs from 'node:fs';
import * as path from 'node:path';
import { Registry, findRepoRoot } from '../../adapters/registry';
import { DEFAULT_REMOTE, fetchAdapters, publishAdapter } from '../../adapters/sharing';

// `idiom adapters publish <id|active>` and `idiom adapters fetch`: adapters shared through the
// repository's git remote (adapters/sharing.ts). Fetch activates nothing; it says how to.

export interface ShareOptions {
  repo?: string;
  registry?: string;
  mode: string;
  remote?: string;
  json?: boolean;
}

export async function runShare(action: 'publish' | 'fetch', id: string | undefined, options: ShareOptions) {
  const start = options.repo ? path.resolve(options.repo) : process.cwd();
  if (!fs.existsSync(start) || !fs.statSync(start).isDirectory())
    throw new Error(`${start}: no such repository folder`);
  const repo = findRepoRoot(start);
  const registry = await Registry.open(repo, { location: options.registry });
  const remote = options.remote ?? DEFAULT_REMOTE;
  if (action === 'publish') {
    if (!id) throw new Error('adapters publish needs an adapter id, or "active" (see `idiom adapters list`)');
    const resolved = id === 'active' ? await registry.activeId(options.mode as never) : id;
    if (!resolved) throw new Error(`no adapter is active for ${options.mode}; name one to publish`);
    const started = performance.now();
    const result = await publishAdapter(repo, registry, resolved, remote);
    return { action, ...result, seconds: Math.round(performance.now() - started) / 1000 };
  }
  if (id) throw new Error(`adapters fetch takes no id (got "${id}"); it brings every published adapter`);
  const started = performance.now();
  const result = await fetchAdapters(repo, registry, remote);
  return { action, ...result, seconds: Math.round(performance.now() - started) / 1000 };
}

export function formatShare(result: Awaited<ReturnType<typeof runShare>>): string {
  const lines: string[] = [];
  if ('published' in result) {
    lines.push(
      result.published
        ? `published ${result.id} to ${result.remote} ${result.ref} (${result.files.join(', ')}; ${(result.bytes / 1e6).toFixed(1)} MB)`
        : `${result.id} is already published on ${result.remote} ${result.ref}`,
    );
    if (result.memoryLeftOut) lines.push(`repository memory left out: ${result.memoryLeftOut}`);
  } else {
    for (const adapter of result.fetched) {
      const m = adapter.manifest;
      lines.push(
        `fetched ${adapter.id}: ${m.training.method} for ${m.mode}, trained at ${m.repo.head?.slice(0, 7) ?? 'no commit'}` +
          `${adapter.publishedBy ? `, published by ${adapter.publishedBy}` : ''}` +
          `${m.metrics.adapter ? `, held-out loss ${m.metrics.adapter.loss.toFixed(3)}` : ''}`,
      );
      if (adapter.memoryDropped) lines.push(`  repository memory dropped: ${adapter.memoryDropped}`);
    }
    for (const refused of result.refused) lines.push(`refused ${refused.id}: ${refused.reason}`);
    if (result.present.length > 0) lines.push(`already here: ${result.present.join(', ')}`);
    if (result.fetched.length === 0 && result.refused.length === 0 && result.present.length === 0)
      lines.push(`nothing is published on ${result.remote} yet`);
    if (result.fetched.length > 0)
      lines.push(`nothing was activated; to serve one: idiom adapters activate ${result.fetched[0].id}`);
  }
  return `${lines.join('\n')}\n`;
}
