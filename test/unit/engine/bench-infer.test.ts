import { strict as assert } from 'node:assert';
import { benchInfer } from '../../../trainer/bench/infer';
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
    for (const key of ['prefillMs', 'decodeMsPerToken', 'weightMatmulMsPerToken', 'completionP50Ms', 'completionP95Ms', 'completionColdP50Ms']) {
      assert.ok(typeof result[key] === 'number' && (result[key] as number) > 0, `${key} = ${result[key]}`);
    }
    const ratio = (result.decodeMsPerToken as number) / (result.weightMatmulMsPerToken as number);
    assert.ok(Math.abs((result.ratio as number) - ratio) < 0.01 * ratio + 0.002);
    assert.equal(result.precision, 'float32');
    const int8 = (result.others as Record<string, Record<string, number>>).int8;
    assert.ok(int8.decodeMsPerToken > 0 && int8.ratio > 0);
    const completion = result.completion as Record<string, number>;
    assert.equal(completion.warmRequests, 3);
    // Typing reuses the cached prompt: only the changed prefix tail, the suffix and <fim_middle> run again.
    assert.ok(completion.meanPromptTokensRun < 60 / 2, `warm requests re-ran ${completion.meanPromptTokensRun} of 60 prompt tokens`);
    assert.ok(completion.meanTokensGenerated >= 1 && completion.meanTokensGenerated <= 5);
  });
});
