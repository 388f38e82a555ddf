import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { StatusRequest } from '../../../server/protocol';
import { makePrintableModel } from '../../fixtures/e2e-model/printable-model';
import { bin, type Session, startServer, stopServer, waitFor, waitForModel } from './session';

// The weights a load stages in the temp folder for ONNX Runtime to map: removed once the session
// is open and gone from the process's mappings once the model is replaced; a folder left by a
// server killed mid-load is removed by the next one; a temp folder without room for the weights
// costs one line and the model serving keeps serving.

const STAGING = /^idiom-session-(\d+)-/;

/** Staging folders in `tempDir` that process `pid` made. */
function stagingFolders(tempDir: string, pid: number): string[] {
  return fs.readdirSync(tempDir).filter((name) => STAGING.exec(name)?.[1] === String(pid));
}

/** Staging folders whose files process `pid` still maps (Linux), e.g. weights ORT has not packed. */
function mappedStagingFolders(tempDir: string, pid: number): Set<string> {
  const maps = fs.readFileSync(`/proc/${pid}/maps`, 'utf8');
  const folders = new Set<string>();
  for (const line of maps.split('\n')) {
    const at = line.indexOf(`${tempDir}${path.sep}idiom-session-`);
    if (at >= 0) folders.add(path.relative(tempDir, line.slice(at)).split(path.sep)[0]);
  }
  return folders;
}

describe('language server: the weights staged in the temp folder', function () {
  this.timeout(120_000);
  let dir: string;
  let small: string;
  let large: string;
  let tempDir: string;
  const savedTmp = process.env.TMPDIR;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-staging-'));
    small = (await makePrintableModel(path.join(dir, 'small'), { seed: 3 })).dir;
    large = (await makePrintableModel(path.join(dir, 'large'), { seed: 4, hidden: 512, layers: 4 })).dir;
  });
  beforeEach(() => {
    // The server inherits TMPDIR: its staging folders land where the test looks.
    tempDir = fs.mkdtempSync(path.join(dir, 'tmp-'));
    process.env.TMPDIR = tempDir;
  });
  afterEach(() => {
    if (savedTmp === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = savedTmp;
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  const switchTo = (session: Session, modelDir: string) =>
    session.connection.sendNotification('workspace/didChangeConfiguration', {
      settings: { idiom: { baseModelPath: modelDir } },
    });

  it('leaves no folder after a load, maps none of the replaced model, and the next start removes what a killed server left', async () => {
    // A server killed while it stages its weights leaves its folder behind.
    const killed = await startServer(dir, { settings: { baseModelPath: large } });
    const pid = killed.child.pid!;
    const exited = new Promise((resolve) => killed.child.once('exit', resolve));
    await waitFor('the killed server to stage its weights', () => stagingFolders(tempDir, pid)[0], 60_000);
    killed.child.kill('SIGKILL');
    await exited;
    killed.connection.dispose();
    const left = stagingFolders(tempDir, pid);
    assert.equal(left.length, 1, 'the folder outlives the killed server');
    // A folder of a live process (this one) is another load in progress: it stays.
    const live = fs.mkdtempSync(path.join(tempDir, `idiom-session-${process.pid}-`));

    const session = await startServer(dir, { settings: { baseModelPath: small } });
    try {
      assert.equal((await waitForModel(session)).state, 'ready');
      const server = session.child.pid!;
      assert.ok(!fs.existsSync(path.join(tempDir, left[0])), 'the killed server’s folder is removed');
      assert.ok(fs.existsSync(live), 'a live process’s folder stays');
      assert.deepEqual(stagingFolders(tempDir, server), [], 'the folder goes once the session is open');
      const before = mappedStagingFolders(tempDir, server);

      await switchTo(session, large);
      await waitFor('the large model', () =>
        session.statuses.find((s) => s.state === 'ready' && s.model?.path === large),
      );
      assert.deepEqual(stagingFolders(tempDir, server), []);
      const after = mappedStagingFolders(tempDir, server);
      for (const folder of before) assert.ok(!after.has(folder), `${folder}: the replaced model's files are unmapped`);
    } finally {
      await stopServer(session);
    }
    assert.deepEqual(
      fs.readdirSync(tempDir).filter((name) => STAGING.test(name)),
      [path.basename(live)],
    );
  });

  it('a temp folder without room for the weights costs one line; the model serving keeps serving', async function () {
    // A 4 MB temp disk of each server's own (a tmpfs in a user and mount namespace): the small
    // model fits, the large one (about 20 MB of float32 weights) does not.
    const probe = spawnSync('unshare', ['--user', '--map-root-user', '--mount', 'true']);
    // Where the kernel or a sandbox refuses unprivileged namespaces there is no small disk to fill.
    if (probe.status !== 0) this.skip();
    const wrapper = [
      '--user',
      '--map-root-user',
      '--mount',
      'sh',
      '-c',
      'mount -t tmpfs -o size=4m tmpfs "$0" && exec "$@"',
      tempDir,
      process.execPath,
      bin,
      'lsp',
      '--stdio',
    ];
    const session = await startServer(dir, { settings: { baseModelPath: small } }, {}, wrapper, 'unshare');
    try {
      assert.equal((await waitForModel(session)).state, 'ready');
      const logged = session.logs.length;
      await switchTo(session, large);
      const line = await waitFor('the refusal', () =>
        session.logs.slice(logged).find((entry) => entry.startsWith('not loading the base model:')),
      );
      assert.match(
        line,
        /^not loading the base model: no space in .* to stage the model's weights at float32 \(about \d+ MB needed, \d+ MB free\); free space there or set TMPDIR to a folder on a larger disk$/,
      );
      const status = await session.connection.sendRequest(StatusRequest, {});
      assert.equal(status.state, 'ready');
      assert.equal(status.model?.path, small, 'the small model still serves');
    } finally {
      await stopServer(session);
    }

    // With nothing serving yet, the load itself meets the full disk: one line.
    const first = await startServer(dir, { settings: { baseModelPath: large } }, {}, wrapper, 'unshare');
    try {
      const failed = await waitForModel(first);
      assert.equal(failed.state, 'error');
      assert.match(
        failed.message,
        /^cannot load the base model: no space left in .* to stage the model's weights for ONNX Runtime \(disk full after \d+ MB\); free space there or set TMPDIR to a folder on a larger disk$/,
      );
    } finally {
      await stopServer(first);
    }
  });
});
