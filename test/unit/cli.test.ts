import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

const bin = path.join(__dirname, '..', '..', 'trainer', 'cli', 'bin.js');

describe('idiom CLI', () => {
  it('prints help and exits 0', () => {
    const run = spawnSync(process.execPath, [bin, '--help'], { encoding: 'utf8' });
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /Usage: idiom/);
  });

  it('rejects an unknown command with one line and a non-zero status', () => {
    const run = spawnSync(process.execPath, [bin, 'no-such-command'], { encoding: 'utf8' });
    assert.notEqual(run.status, 0);
    assert.ok(run.stderr.trim().length > 0);
  });
});
