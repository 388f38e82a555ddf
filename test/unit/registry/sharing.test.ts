import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { MEMORY_FILE } from '../../../trainer/data/memory/file';
import { writeAdapter } from '../../../trainer/adapters/peft';
import { Registry } from '../../../trainer/adapters/registry';
import { fetchAdapters, publishAdapter, SHARED_REF } from '../../../trainer/adapters/sharing';
import { draftManifest, randomLoraTensors, tempDir, tinyConfig } from '../adapters/helpers';

// Two clones of one bare remote: adapters published from one arrive in the other with their
// provenance, activate nothing, and arrive only when their weights match their manifest.

function git(cwd: string, ...args: string[]): string {
  return execFileSync('git', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function gzipDocuments(documents: Array<{ path: string; text: string }>): Buffer {
  return zlib.gzipSync(Buffer.from(documents.map((d) => JSON.stringify(d)).join('\n'), 'utf8'));
}

const SOURCE = 'export const total = (lines: number[]) => lines.reduce((a, b) => a + b, 0);\n';

async function addAdapter(
  registry: Registry,
  head: string,
  second: number,
  memory: Array<{ path: string; text: string }>,
): Promise<string> {
  const staging = registry.stagingPath();
  await writeAdapter(staging, {
    config: { r: 2, alpha: 4, targets: ['q_proj'] },
    tensors: randomLoraTensors(tinyConfig, 2, ['q_proj'], 300 + second),
    manifest: draftManifest({
      created: new Date(Date.UTC(2026, 0, 1, 0, 0, second)).toISOString(),
      repo: { root: registry.dir, head, dirty: false },
    }),
    baseConfig: tinyConfig,
  });
  fs.writeFileSync(path.join(staging, MEMORY_FILE), gzipDocuments(memory));
  return (await registry.add(staging)).id;
}

/** Rewrites one file of a published adapter on the shared ref, as someone with push access could. */
function tamperPublished(clone: string, id: string, file: string, bytes: Buffer): void {
  const blob = execFileSync('git', ['hash-object', '-w', '--stdin'], { cwd: clone, input: bytes }).toString().trim();
  const inner = git(clone, 'ls-tree', `${SHARED_REF}:${id}`)
    .split('\n')
    .filter((line) => line && !line.endsWith(`\t${file}`));
  inner.push(`100644 blob ${blob}\t${file}`);
  const tree = execFileSync('git', ['mktree'], { cwd: clone, input: `${inner.join('\n')}\n` })
    .toString()
    .trim();
  const root = git(clone, 'ls-tree', SHARED_REF)
    .split('\n')
    .filter((line) => line && !line.endsWith(`\t${id}`) && !line.endsWith('\tnot-an-adapter'));
  root.push(`040000 tree ${tree}\t${id}`, `040000 tree ${tree}\tnot-an-adapter`);
  const top = execFileSync('git', ['mktree'], { cwd: clone, input: `${root.join('\n')}\n` })
    .toString()
    .trim();
  const commit = git(clone, 'commit-tree', top, '-p', SHARED_REF, '-m', 'tamper').trim();
  git(clone, 'update-ref', SHARED_REF, commit);
  git(clone, 'push', '--force', 'origin', `${SHARED_REF}:${SHARED_REF}`);
}

describe('adapters shared through the git remote', () => {
  let dir: string;
  let alice: string;
  let bob: string;
  let head: string;
  beforeEach(() => {
    dir = tempDir('share');
    git(dir, 'init', '--bare', '--quiet', 'remote.git');
    alice = path.join(dir, 'alice');
    git(dir, 'clone', '--quiet', 'remote.git', 'alice');
    for (const [key, value] of [
      ['user.name', 'Alice'],
      ['user.email', 'alice@example.com'],
    ])
      git(alice, 'config', key, value);
    fs.mkdirSync(path.join(alice, 'src'));
    fs.writeFileSync(path.join(alice, 'src', 'total.ts'), SOURCE);
    git(alice, 'add', '.');
    git(alice, 'commit', '--quiet', '-m', 'total');
    git(alice, 'push', '--quiet', 'origin', 'HEAD');
    head = git(alice, 'rev-parse', 'HEAD').trim();
    bob = path.join(dir, 'bob');
    git(dir, 'clone', '--quiet', 'remote.git', 'bob');
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('publishes from one clone and fetches into the other with provenance, activating nothing', async () => {
    const registryA = await Registry.open(alice);
    const id = await addAdapter(registryA, head, 1, [{ path: 'src/total.ts', text: SOURCE }]);
    const published = await publishAdapter(alice, registryA, id);
    assert.equal(published.published, true);
    assert.ok(published.files.includes(MEMORY_FILE), 'memory equal to the commit travels');
    assert.match(git(dir, '--git-dir', 'remote.git', 'ls-tree', '--name-only', SHARED_REF), new RegExp(id));
    // The branch and the work tree are untouched.
    assert.equal(git(alice, 'rev-parse', 'HEAD').trim(), head);
    assert.equal(git(alice, 'status', '--porcelain', '--untracked-files=no'), '');

    const again = await publishAdapter(alice, registryA, id);
    assert.equal(again.published, false);

    const registryB = await Registry.open(bob);
    const fetched = await fetchAdapters(bob, registryB);
    assert.deepEqual(
      fetched.fetched.map((a) => a.id),
      [id],
    );
    assert.equal(fetched.fetched[0].publishedBy, 'Alice <alice@example.com>');
    assert.equal(fetched.fetched[0].memoryDropped, undefined);
    for (const file of fs.readdirSync(registryA.adapterPath(id)))
      assert.ok(
        fs
          .readFileSync(path.join(registryA.adapterPath(id), file))
          .equals(fs.readFileSync(path.join(registryB.adapterPath(id), file))),
        `${file} arrives byte for byte`,
      );
    assert.equal(await registryB.activeId('complete'), null, 'fetch activates nothing');
    await registryB.activate(id, 'complete');
    assert.equal(await registryB.activeId('complete'), id);

    const second = await fetchAdapters(bob, registryB);
    assert.deepEqual(second.fetched, []);
    assert.deepEqual(second.present, [id]);

    // Bob publishes too: the ref keeps both, and Alice gets his.
    git(bob, 'config', 'user.name', 'Bob');
    git(bob, 'config', 'user.email', 'bob@example.com');
    const his = await addAdapter(registryB, head, 5, [{ path: 'src/total.ts', text: SOURCE }]);
    await publishAdapter(bob, registryB, his);
    const back = await fetchAdapters(alice, registryA);
    assert.deepEqual(
      back.fetched.map((a) => [a.id, a.publishedBy]),
      [[his, 'Bob <bob@example.com>']],
    );
    assert.deepEqual(back.present, [id]);
  });

  it('keeps uncommitted text at home, and refuses tampered weights on arrival', async () => {
    const registryA = await Registry.open(alice);
    const local = await addAdapter(registryA, head, 2, [{ path: 'src/total.ts', text: `${SOURCE}// not committed\n` }]);
    const published = await publishAdapter(alice, registryA, local);
    assert.match(published.memoryLeftOut ?? '', /src\/total\.ts differs from commit/);
    assert.ok(!published.files.includes(MEMORY_FILE));

    const tampered = await addAdapter(registryA, head, 3, [{ path: 'src/total.ts', text: SOURCE }]);
    await publishAdapter(alice, registryA, tampered);
    const weights = fs.readFileSync(path.join(registryA.adapterPath(tampered), 'adapter_model.safetensors'));
    weights[weights.length - 1] ^= 0xff;
    tamperPublished(alice, tampered, 'adapter_model.safetensors', weights);
    // Memory slipped into the first adapter after publishing: not the repository's text.
    tamperPublished(alice, local, MEMORY_FILE, gzipDocuments([{ path: 'src/total.ts', text: 'eval(evil)\n' }]));

    const registryB = await Registry.open(bob);
    const fetched = await fetchAdapters(bob, registryB);
    assert.deepEqual(
      fetched.fetched.map((a) => a.id),
      [local],
    );
    assert.match(fetched.fetched[0].memoryDropped ?? '', /differs from commit/);
    assert.ok(!fs.existsSync(path.join(registryB.adapterPath(local), MEMORY_FILE)));
    const refused = new Map(fetched.refused.map((r) => [r.id, r.reason]));
    assert.match(refused.get(tampered) ?? '', /does not match manifest/);
    assert.match(refused.get('not-an-adapter') ?? '', /not an adapter folder/);
    assert.equal(await registryB.has(tampered), false);
  });

  it('says in one line that there is no remote', async () => {
    const lonely = path.join(dir, 'lonely');
    git(dir, 'init', '--quiet', 'lonely');
    const registry = await Registry.open(lonely);
    const id = await addAdapter(registry, head, 4, []);
    await assert.rejects(publishAdapter(lonely, registry, id), (error: Error) => {
      assert.match(error.message, /has no git remote/);
      assert.doesNotMatch(error.message, /\n/);
      return true;
    });
    // A remote name git would take for an option never reaches its command line.
    const marker = path.join(dir, 'ran');
    await assert.rejects(publishAdapter(alice, registry, id, `--upload-pack=touch ${marker}`), /not a git remote name/);
    assert.equal(fs.existsSync(marker), false);
  });
});
