import { strict as assert } from 'node:assert';
import { Generator } from '../../../trainer/compute/engine/generate';
import { KvCacheSession } from '../../../trainer/compute/engine/inference';
import { argmax } from '../../../trainer/compute/engine/sampling';
import { Rng } from '../../../trainer/model/random';
import { randomTokens, tinyCheckpoint } from './fixtures';

const decode = (ids: readonly number[]) => ids.map((id) => String.fromCharCode(97 + (id % 26))).join('');

describe('engine/generate Generator', () => {
  it('stops on max tokens, eos and stop text; reuses a cached prompt prefix without changing the result', async () => {
    const checkpoint = await tinyCheckpoint('llama-gqa');
    const cfg = checkpoint.config;
    const session = await KvCacheSession.create(cfg, checkpoint.weights, { threads: 1 });
    const generator = new Generator(session);
    const prompt = randomTokens(new Rng(2), 16, cfg.vocabSize);

    const greedy = await generator.generate(prompt, { maxTokens: 12 });
    assert.equal(greedy.stopReason, 'length');
    assert.equal(greedy.tokens.length, 12);
    // The first token is the argmax of a fresh prefill.
    const fresh = await KvCacheSession.create(cfg, checkpoint.weights, { threads: 1 });
    assert.equal(greedy.tokens[0], argmax(await fresh.append(prompt)));

    const eos = greedy.tokens[5];
    const stopped = await generator.generate(prompt, { maxTokens: 12, eosTokenIds: [eos] });
    assert.equal(stopped.stopReason, 'eos');
    assert.deepEqual(stopped.tokens, greedy.tokens.slice(0, greedy.tokens.indexOf(eos)));
    assert.equal(stopped.reusedTokens, prompt.length - 1);

    const stopText = decode(greedy.tokens.slice(3, 5));
    const cut = await generator.generate(prompt, { maxTokens: 12, stop: [stopText], decode });
    assert.equal(cut.stopReason, 'stop');
    assert.equal(cut.text, decode(greedy.tokens).slice(0, decode(greedy.tokens).indexOf(stopText)));

    // The next keystroke accepts two generated tokens: their keys/values are cached already.
    const longer = [...prompt, ...greedy.tokens.slice(0, 2)];
    const reused = await generator.generate(longer, { maxTokens: 6 });
    assert.equal(reused.reusedTokens, longer.length - 1);
    // A prompt that diverges after 10 tokens reuses exactly those.
    const diverged = [...prompt.slice(0, 10), (prompt[10] + 1) % cfg.vocabSize, ...prompt.slice(11)];
    assert.equal((await generator.generate(diverged, { maxTokens: 1 })).reusedTokens, 10);
    const again = await new Generator(fresh).generate(longer, { maxTokens: 6 });
    assert.equal(again.reusedTokens, 0);
    assert.deepEqual(reused.tokens, again.tokens);

    let polls = 0;
    const cancelled = await generator.generate(prompt, { maxTokens: 12, cancelled: () => ++polls > 3 });
    assert.equal(cancelled.stopReason, 'cancelled');
    assert.equal(cancelled.tokens.length, 3);

    const sampledA = await generator.generate(prompt, {
      maxTokens: 10,
      sampling: { temperature: 1, topP: 0.9, seed: 5 },
    });
    const sampledB = await generator.generate(prompt, {
      maxTokens: 10,
      sampling: { temperature: 1, topP: 0.9, seed: 5 },
    });
    assert.deepEqual(sampledA.tokens, sampledB.tokens);
    await session.dispose();
    await fresh.dispose();
  });

  it('vocabSize: ids at or above it are never chosen, greedy or sampled', async () => {
    const checkpoint = await tinyCheckpoint('qwen2-tied');
    const generator = new Generator(await KvCacheSession.create(checkpoint.config, checkpoint.weights, { threads: 1 }));
    const prompt = randomTokens(new Rng(3), 12, checkpoint.config.vocabSize);
    const free = await generator.generate(prompt, { maxTokens: 16 });
    const limit = Math.max(...free.tokens); // the largest id chosen without a limit
    assert.ok(limit > 0);
    const limited = await generator.generate(prompt, { maxTokens: 16, vocabSize: limit });
    assert.ok(
      limited.tokens.every((t) => t < limit),
      `tokens ${limited.tokens} must stay below ${limit}`,
    );
    assert.notDeepEqual(limited.tokens, free.tokens);
    for (let seed = 0; seed < 4; seed++) {
      const sampled = await generator.generate(prompt, {
        maxTokens: 16,
        vocabSize: limit,
        sampling: { temperature: 2, seed },
      });
      assert.ok(sampled.tokens.every((t) => t < limit));
    }
    await assert.rejects(
      generator.generate(prompt, { maxTokens: 1, vocabSize: 0 }),
      /vocabSize must be a positive integer/,
    );
    await generator.session.dispose();
  });

  it("logprobs are each chosen token's log softmax; minFirstLineLogprob stops a line that got too unlikely", async () => {
    const checkpoint = await tinyCheckpoint('llama-gqa');
    const session = await KvCacheSession.create(checkpoint.config, checkpoint.weights, { threads: 1 });
    const generator = new Generator(session);
    const prompt = randomTokens(new Rng(4), 16, checkpoint.config.vocabSize);
    // decode never writes a newline here, so the whole output is one line.
    const full = await generator.generate(prompt, { maxTokens: 10, decode });
    assert.equal(full.logprobs.length, full.tokens.length);
    const reference = await KvCacheSession.create(checkpoint.config, checkpoint.weights, { threads: 1 });
    const logits = Float64Array.from(await reference.append(prompt));
    const max = Math.max(...logits);
    const logSum = Math.log(logits.reduce((sum, x) => sum + Math.exp(x - max), 0)) + max;
    assert.ok(Math.abs(full.logprobs[0] - (logits[full.tokens[0]] - logSum)) < 1e-5);
    // A threshold between the running sums after tokens 3 and 4 stops right after token 4.
    const running = full.logprobs.map((_, i) => full.logprobs.slice(0, i + 1).reduce((a, b) => a + b, 0));
    const threshold = (running[2] + running[3]) / 2;
    const stopped = await generator.generate(prompt, { maxTokens: 10, decode, minFirstLineLogprob: threshold });
    assert.equal(stopped.stopReason, 'unlikely');
    assert.deepEqual(stopped.tokens, full.tokens.slice(0, 4));
    await session.dispose();
    await reference.dispose();
  });
});
