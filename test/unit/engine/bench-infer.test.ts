import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { benchInfer } from '../../../trainer/tools/bench/infer';
import { tinyConfig } from './fixtures';

// The bench's JSON contract on a tiny model (speed itself is measured by `idiom bench infer`, not here).

describe('bench/infer benchInfer', () => {
  it('reports prefill, decode, same-run weight MatMuls, their ratio and completion latency', async () => {
    const result = await benchInfer({
      config: tinyConfig('llama-gqa'),
      threads: 1,
      precisions: ['float32', 'int8'],
      promptTokens: 20,
      decodeTokens: 6,
      prefillRepeats: 1,
      completion: { coldRequests: 1, warmRequests: 3, promptTokens: 60, maxTokens: 5 },
    });
    for (const key of [
      'prefillMs',
      'decodeMsPerToken',
      'weightMatmulMsPerToken',
      'completionP50Ms',
      'completionP95Ms',
      'completionColdP50Ms',
    ]) {
      assert.ok(typeof result[key] === 'number' && (result[key] as number) > 0, `${key} = ${result[key]}`);
    }
    // The reported times are rounded to 0.001 ms, so on a tiny model their quotient is only close
    // to the ratio of the unrounded means: allow that rounding's relative error and the ratio's own.
    const decode = result.decodeMsPerToken as number;
    const matmul = result.weightMatmulMsPerToken as number;
    const ratio = decode / matmul;
    const roundingError = ratio * (0.0005 / decode + 0.0005 / matmul) + 0.0005;
    assert.ok(
      Math.abs((result.ratio as number) - ratio) <= roundingError,
      `ratio ${result.ratio} vs ${decode}/${matmul}`,
    );
    assert.equal(result.precision, 'float32');
    const int8 = (result.others as Record<string, Record<string, number>>).int8;
    assert.ok(int8.decodeMsPerToken > 0 && int8.ratio > 0);
    const completion = result.completion as Record<string, number>;
    assert.equal(completion.warmRequests, 3);
    // Typing reuses the cached prompt: only the changed prefix tail, the suffix and <fim_middle> run again.
    assert.ok(
      completion.meanPromptTokensRun < 60 / 2,
      `warm requests re-ran ${completion.meanPromptTokensRun} of 60 prompt tokens`,
    );
    assert.ok(completion.meanTokensGenerated >= 1 && completion.meanTokensGenerated <= 5);
  });

  it('--profile --no-completion: a decode step split into kernels by op type, ORT and the rest, from the profile ORT wrote', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-bench-profile-'));
    try {
      const result = await benchInfer({
        config: tinyConfig('qwen2-tied'),
        threads: 1,
        precisions: ['int8'],
        promptTokens: 12,
        decodeTokens: 5,
        prefillRepeats: 1,
        completion: false,
        profilePrefix: path.join(dir, 'decode'),
      });
      assert.equal(result.completionP50Ms, undefined, 'completion: false skips the completion latency');
      const profile = result.profile as {
        file: string;
        steps: number;
        wallMsPerStep: number;
        modelRunMsPerStep: number;
        kernelMsPerStep: number;
        matmulKernelShare: number;
        nodesPerStep: number;
        byOp: Record<string, { ms: number; nodes: number }>;
      };
      assert.ok(fs.existsSync(profile.file), 'the profile file stays for reading');
      assert.equal(profile.steps, 5);
      // Nested: the kernels run inside model_run, which runs inside append().
      assert.ok(profile.kernelMsPerStep > 0 && profile.kernelMsPerStep <= profile.modelRunMsPerStep + 0.001);
      assert.ok(profile.modelRunMsPerStep <= profile.wallMsPerStep + 0.001);
      // Per step: one int8 MatMul per projection group and layer, and the head (tied, int8).
      const layers = tinyConfig('qwen2-tied').numLayers;
      assert.equal(profile.byOp.MatMulNBits.nodes, 4 * layers + 1);
      const summed = Object.values(profile.byOp).reduce((a, b) => a + b.ms, 0);
      assert.ok(Math.abs(summed - profile.kernelMsPerStep) < 0.01 + 0.001 * Object.keys(profile.byOp).length);
      assert.ok(profile.matmulKernelShare > 0 && profile.matmulKernelShare < 1);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
