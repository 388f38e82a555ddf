// idiom/publishAdapter and idiom/fetchAdapters: the registry's adapters shared through the
// repository's git remote (trainer/adapters/sharing.ts), from the editor. Both write (a ref, the
// registry) and run git against the remote, so an untrusted workspace may do neither.

import { ResponseError, type Connection } from 'vscode-languageserver/node';
import { fetchAdapters, publishAdapter } from '../../trainer/adapters/sharing';
import type { Mode } from '../../trainer/adapters/mode';
import {
  FetchAdaptersRequest,
  IdiomErrorCodes,
  PublishAdapterRequest,
  type FetchAdaptersParams,
  type PublishAdapterParams,
} from '../protocol';
import { requireParams } from '../params';
import type { RepositoryAdapters } from './adapters';

export interface SharingHost {
  trusted(): boolean;
  mode(): Mode;
  adapters(): RepositoryAdapters;
}

function failed(error: unknown): ResponseError<void> {
  return new ResponseError(IdiomErrorCodes.sharingFailed, error instanceof Error ? error.message : String(error));
}

export function registerSharingRequests(connection: Connection, host: SharingHost): void {
  const refuseUntrusted = () => {
    if (!host.trusted())
      throw new ResponseError(IdiomErrorCodes.untrusted, 'adapters are not shared from an untrusted workspace');
  };
  connection.onRequest(PublishAdapterRequest, async (params) => {
    requireParams<PublishAdapterParams | null>('idiom/publishAdapter', params);
    refuseUntrusted();
    const adapters = host.adapters();
    const registry = await adapters.registry(true);
    if (!registry) throw failed('no adapter registry in this repository: train one first');
    const id = params?.id ?? (await registry.activeId(host.mode()));
    if (!id) throw failed(`no adapter is active for ${host.mode()}: name one to publish`);
    try {
      const result = await publishAdapter(adapters.repoRoot, registry, id, params?.remote);
      return {
        id: result.id,
        remote: result.remote,
        published: result.published,
        bytes: result.bytes,
        ...(result.memoryLeftOut ? { memoryLeftOut: result.memoryLeftOut } : {}),
      };
    } catch (error) {
      throw failed(error);
    }
  });
  connection.onRequest(FetchAdaptersRequest, async (params) => {
    requireParams<FetchAdaptersParams | null>('idiom/fetchAdapters', params);
    refuseUntrusted();
    const adapters = host.adapters();
    const registry = await adapters.registry(true);
    if (!registry) throw failed('no adapter registry in this repository');
    try {
      const result = await fetchAdapters(adapters.repoRoot, registry, params?.remote);
      return {
        remote: result.remote,
        fetched: result.fetched.map((adapter) => ({
          id: adapter.id,
          publishedBy: adapter.publishedBy,
          ...(adapter.memoryDropped ? { memoryDropped: adapter.memoryDropped } : {}),
        })),
        present: result.present,
        refused: result.refused,
        adapters: await adapters.list(),
      };
    } catch (error) {
      throw failed(error);
    }
  });
}
