import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeAdapter } from '../../../trainer/adapters/peft';
import { Registry } from '../../../trainer/adapters/registry';
import { SHARED_REF } from '../../../trainer/adapters/sharing';
import { loadCheckpoint } from '../../../trainer/model/checkpoint';
import { packageRoot } from '../../../trainer/model/base-model';
import { FetchAdaptersRequest, IdiomErrorCodes, PublishAdapterRequest } from '../../../server/protocol';
import { draftManifest, randomLoraTensors, tempDir } from '../../unit/adapters/helpers';
import { startServer, stopServer, waitForModel } from './session';

// Publish from the editor in one clone, fetch from the editor in another: the real server over
// stdio, a bare remote on disk. Fetching activates nothing; an untrusted workspace shares nothing.

function git(cwd: string, ...args: string[]): string {
  return execFileSync('git', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

describe('language server: adapters shared through the git remote', function () {
  this.timeout(90_000);
  let dir: string;

  before(() => {
    dir = tempDir('lsp-share');
    git(dir, 'init', '--bare', '--quiet', 'remote.git');
    git(dir, 'clone', '--quiet', 'remote.git', 'alice');
    const alice = path.join(dir, 'alice');
    git(alice, 'config', 'user.name', 'Alice');
    git(alice, 'config', 'user.email', 'alice@example.com');
    fs.writeFileSync(path.join(alice, 'a.ts'), 'export const a = 1;\n');
    git(alice, 'add', '.');
    git(alice, 'commit', '--quiet', '-m', 'a');
    git(alice, 'push', '--quiet', 'origin', 'HEAD');
    git(dir, 'clone', '--quiet', 'remote.git', 'bob');
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('publishes the active adapter from one clone and fetches it, inactive, into another', async () => {
    const alice = path.join(dir, 'alice');
    const base = await loadCheckpoint(path.join(packageRoot()!, 'models'));
    const registry = await Registry.open(alice);
    const staging = registry.stagingPath();
    await writeAdapter(staging, {
      config: { r: 2, alpha: 4, targets: ['q_proj'] },
      tensors: randomLoraTensors(base.config, 2, ['q_proj'], 7),
      manifest: draftManifest({
        base: { name: 'idiom-tiny', sha256: base.sha256 },
        repo: { root: alice, head: git(alice, 'rev-parse', 'HEAD').trim(), dirty: false },
      }),
      baseConfig: base.config,
    });
    const { id } = await registry.add(staging);
    await registry.activate(id, 'complete');

    const untrusted = await startServer(alice, { trusted: false });
    try {
      await assert.rejects(untrusted.connection.sendRequest(PublishAdapterRequest, {}), (error: { code: number }) => {
        assert.equal(error.code, IdiomErrorCodes.untrusted);
        return true;
      });
    } finally {
      await stopServer(untrusted);
    }

    const sender = await startServer(alice, {});
    try {
      await waitForModel(sender);
      const published = await sender.connection.sendRequest(PublishAdapterRequest, {});
      assert.equal(published.id, id);
      assert.equal(published.published, true);
    } finally {
      await stopServer(sender);
    }
    assert.match(git(dir, '--git-dir', 'remote.git', 'ls-tree', '--name-only', SHARED_REF), new RegExp(id));

    const receiver = await startServer(path.join(dir, 'bob'), {});
    try {
      const ready = await waitForModel(receiver);
      const fetched = await receiver.connection.sendRequest(FetchAdaptersRequest, {});
      assert.deepEqual(
        fetched.fetched.map((adapter) => [adapter.id, adapter.publishedBy]),
        [[id, 'Alice <alice@example.com>']],
      );
      const listed = fetched.adapters.find((adapter) => adapter.id === id);
      assert.ok(listed, 'the fetched adapter is in the registry');
      assert.equal(listed.active, false, 'fetching activates nothing');
      assert.equal(receiver.statuses.at(-1)?.adapter ?? null, ready.adapter ?? null, 'what serves is unchanged');
    } finally {
      await stopServer(receiver);
    }
  });
});
