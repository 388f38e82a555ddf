import { strict as assert } from 'node:assert';
import { InflightGenerations, remainderAfter } from '../../../server/completion/inflight';
import { CompletionCache } from '../../../server/completion/cache';

const base = { uri: 'file:///a.ts', modelKey: 'base', prefix: 'function f() {\n  ', suffix: '\n}\n' };

describe('server/completion/inflight', () => {
  it('reuses a running generation while the typed text matches what it decodes', async () => {
    const inflight = new InflightGenerations();
    const generation = inflight.start(base);
    generation.append('ret');
    const match = inflight.find({ ...base, prefix: `${base.prefix}re` });
    assert.ok(match);
    assert.equal(match.typed, 're');
    // Typed beyond what is decoded so far, still consistent: wait for the end.
    const ahead = inflight.find({ ...base, prefix: `${base.prefix}return` });
    assert.ok(ahead);
    generation.finish('return 42;');
    assert.equal(await remainderAfter(ahead.generation, ahead.typed), ' 42;');
    assert.equal(await remainderAfter(match.generation, match.typed), 'turn 42;');
  });

  it('does not reuse when the typed text departs, the suffix, the document or the model differ', () => {
    const inflight = new InflightGenerations();
    const generation = inflight.start(base);
    generation.append('return');
    assert.equal(inflight.find({ ...base, prefix: `${base.prefix}rex` }), null);
    assert.equal(inflight.find({ ...base, prefix: `${base.prefix}re`, suffix: ')\n}\n' }), null);
    assert.equal(inflight.find({ ...base, prefix: `${base.prefix}re`, uri: 'file:///b.ts' }), null);
    assert.equal(inflight.find({ ...base, prefix: `${base.prefix}re`, modelKey: 'adapter-2' }), null);
    assert.equal(inflight.find({ ...base, prefix: 'function g() {\n  ' }), null);
  });

  it('an edit that departs from the generation aborts it; one that follows it does not', async () => {
    const inflight = new InflightGenerations();
    const generation = inflight.start(base);
    generation.append('return x');
    inflight.onEdit(base.uri, `${base.prefix}ret${base.suffix}`);
    assert.equal(generation.aborted, false);
    inflight.onEdit(base.uri, `${base.prefix}retx${base.suffix}`);
    assert.equal(generation.aborted, true);
    await assert.rejects(generation.result, /document changed/);
  });

  it('a new generation aborts the previous one', () => {
    const inflight = new InflightGenerations();
    const first = inflight.start(base);
    const second = inflight.start({ ...base, prefix: 'x' });
    assert.equal(first.aborted, true);
    assert.equal(second.aborted, false);
  });

  it('with nobody waiting, a generation stops after the grace period', async () => {
    const inflight = new InflightGenerations();
    const generation = inflight.start(base);
    generation.subscribe();
    generation.unsubscribe(5);
    assert.equal(generation.aborted, false);
    await new Promise((resolve) => setTimeout(resolve, 30));
    assert.equal(generation.aborted, true);
    assert.equal(generation.abortController.signal.aborted, true);
  });
});

describe('server/completion/cache', () => {
  it('returns what was stored for the same context and evicts the least recently used', () => {
    const cache = new CompletionCache(2);
    const key = (prefix: string) => ({ modelKey: 'base', prefix, suffix: '' });
    cache.set(key('a'), 'A');
    cache.set(key('b'), 'B');
    assert.equal(cache.get(key('a')), 'A');
    cache.set(key('c'), 'C');
    assert.equal(cache.get(key('b')), undefined);
    assert.equal(cache.get(key('a')), 'A');
    assert.equal(cache.get({ modelKey: 'adapter', prefix: 'a', suffix: '' }), undefined);
  });
});
