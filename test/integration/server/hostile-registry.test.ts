import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { AdaptersRequest, StatusRequest } from '../../../server/protocol';
import { git, initRepo } from '../../fixtures/mining/git-repo';
import { startServer, stopServer } from './session';

// The language server's Show adapters (idiom/adapters) on a cloned repository that commits
// .idiom/trash as a symlink to a folder of the user's: nothing is deleted, trusted or not, the
// request fails in one line, and the server keeps answering.

describe('language server on a repository whose .idiom/ it did not write', function () {
  this.timeout(30_000);
  let base: string;
  let victim: string;
  let clone: string;

  beforeEach(() => {
    base = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-hostile-lsp-'));
    victim = path.join(base, 'victim');
    fs.mkdirSync(victim);
    fs.writeFileSync(path.join(victim, 'keep.txt'), 'precious\n');
    const mal = initRepo(path.join(base, 'mal'));
    fs.writeFileSync(path.join(mal, 'a.ts'), 'export const x = 1;\n');
    fs.mkdirSync(path.join(mal, '.idiom'));
    fs.symlinkSync(victim, path.join(mal, '.idiom', 'trash'));
    fs.writeFileSync(
      path.join(mal, '.idiom', 'registry.json'),
      '{"version":1,"active":{},"previous":{},"history":[]}\n',
    );
    git(mal, ['add', '-f', '.']);
    git(mal, ['commit', '-qm', 'x']);
    clone = path.join(base, 'clone');
    git(base, ['clone', '-q', mal, clone]);
  });
  afterEach(() => fs.rmSync(base, { recursive: true, force: true }));

  for (const trusted of [false, true]) {
    it(`idiom/adapters deletes nothing through the link (${trusted ? 'trusted' : 'untrusted'} workspace)`, async () => {
      const session = await startServer(clone, { trusted, defaultModelPath: '' });
      try {
        await assert.rejects(session.connection.sendRequest(AdaptersRequest, {}), (error: Error) => {
          assert.match(error.message, /trash is a symbolic link/);
          assert.doesNotMatch(error.message, /\n/);
          return true;
        });
        assert.equal(fs.readFileSync(path.join(victim, 'keep.txt'), 'utf8'), 'precious\n');
        const status = await session.connection.sendRequest(StatusRequest, {});
        assert.equal(status.trusted, trusted);
        assert.deepEqual(
          fs.readdirSync(path.join(clone, '.idiom')).sort(),
          ['registry.json', 'trash'],
          'nothing created in the registry',
        );
      } finally {
        await stopServer(session);
      }
    });
  }
});
