import { strict as assert } from 'node:assert';
import { Generator } from '../../../trainer/compute/engine/generate';
import { KvCacheSession } from '../../../trainer/compute/engine/inference';
import { Rng } from '../../../trainer/model/random';
import { randomTokens, tinyCheckpoint } from './fixtures';

describe('engine/generate Generator.scoreContinuation', () => {
  it("gives each continuation token the log probability the scoring pass gives it, and the greedy decode's first", async () => {
    const checkpoint = await tinyCheckpoint('llama-gqa');
    const cfg = checkpoint.config;
    const session = await KvCacheSession.create(cfg, checkpoint.weights, { threads: 1 });
    const generator = new Generator(session);
    const rng = new Rng(3);
    const prompt = randomTokens(rng, 16, cfg.vocabSize);
    const continuation = randomTokens(rng, 5, cfg.vocabSize);

    const score = await generator.scoreContinuation(prompt, continuation);
    // One pass over prompt + continuation (its own cache) predicts the same tokens.
    const nll = await session.nll([...prompt, ...continuation]);
    const expected = Array.from(nll.slice(prompt.length - 1), (x) => -x);
    assert.equal(score.logprobs.length, continuation.length);
    for (const [i, logprob] of score.logprobs.entries())
      assert.ok(Math.abs(logprob - expected[i]) < 1e-4, `token ${i}`);

    // The greedy first token is the one generate chooses, at its log probability.
    const greedy = await generator.generate(prompt, { maxTokens: 1 });
    assert.ok(Math.abs(score.greedyFirstLogprob - greedy.logprobs[0]) < 1e-5);
    // The prompt stayed cached: the generation ran only its last token again.
    assert.equal(greedy.reusedTokens, prompt.length - 1);
    const own = await generator.scoreContinuation(prompt, greedy.tokens);
    assert.ok(Math.abs(own.logprobs[0] - own.greedyFirstLogprob) < 1e-5);

    await assert.rejects(
      generator.scoreContinuation(prompt, randomTokens(rng, session.maxContext, cfg.vocabSize)),
      /exceed the model's limit/,
    );
    await session.dispose();
  });
});
