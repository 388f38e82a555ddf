import { strict as assert } from 'node:assert';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { tinyConfigJson } from '../../fixtures/tiny-config';

// `idiom bench train` end to end (a real process, the engine worker, ONNX Runtime) on a small
// config: the CLI contract's JSON keys, and numbers that hang together. Speed itself is what the
// benchmark reports, not what a test asserts.

const run = promisify(execFile);
const bin = path.join(__dirname, '..', '..', '..', 'trainer', 'cli', 'bin.js');

describe('idiom bench train (CLI)', () => {
  let dir: string;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-bench-'));
    const config = tinyConfigJson({
      hidden_size: 64,
      intermediate_size: 128,
      vocab_size: 512,
      max_position_embeddings: 64,
    });
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('prints one JSON object with the contract keys', async () => {
    const { stdout } = await run(
      process.execPath,
      [
        bin,
        'bench',
        'train',
        '--model-config',
        path.join(dir, 'config.json'),
        '--batch',
        '2',
        '--seq',
        '32',
        '--steps',
        '2',
        '--warmup',
        '1',
        '--threads',
        '1',
        '--profile',
        path.join(dir, 'trace'),
        '--quiet',
      ],
      { timeout: 120_000 },
    );
    const result = JSON.parse(stdout);
    for (const key of ['tokensPerSecond', 'achievedGflops', 'peakGflops', 'mfu', 'config'])
      assert.ok(key in result, `missing ${key}`);
    assert.ok(result.tokensPerSecond > 0);
    assert.ok(Math.abs(result.mfu - result.achievedGflops / result.peakGflops) < 0.01);
    assert.equal(result.config.method, 'lora');
    assert.equal(result.config.batch, 2);
    assert.equal(result.config.model.hiddenSize, 64);
    assert.ok(result.flops.backward > 0 && result.flops.forward > 0);
    assert.ok(result.loss.last < result.loss.first + 1e-6);
    // At least the memory of this process's own trainable tensors, at most all of this machine's.
    assert.ok(result.peakRssBytes > 4 * result.config.trainableParameters && result.peakRssBytes < os.totalmem());
    // The profile's summary: every training run (warm-up and timed), its kernel time by op type.
    const { profile } = result;
    assert.equal(path.dirname(profile.file), dir);
    assert.equal(profile.runs, 3);
    const byOp = Object.values(profile.byOp) as number[];
    const total = byOp.reduce((a, b) => a + b, 0);
    assert.ok(
      Math.abs(total - profile.kernelMsPerRun) <= 0.01 * byOp.length + 0.1,
      `${total} vs ${profile.kernelMsPerRun}`,
    );
    const matmul = (profile.byOp.MatMul ?? 0) + (profile.byOp.FusedMatMul ?? 0);
    assert.ok(Math.abs(matmul / total - profile.matmulShare) < 0.01, `${matmul / total} vs ${profile.matmulShare}`);
    assert.ok(profile.matmulShare > 0 && profile.matmulShare < 1);
  });

  it('rejects a bad option with one clear line and a non-zero status', async () => {
    await assert.rejects(
      run(process.execPath, [bin, 'bench', 'train', '--method', 'adapter']),
      (error: { code: number; stderr: string }) => {
        assert.equal(error.code, 1);
        assert.match(error.stderr, /--method must be lora or full, got "adapter"/);
        return true;
      },
    );
  });
});
