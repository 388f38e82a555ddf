import { strict as assert } from 'node:assert';
import { Sampler, argmax, nucleus } from '../../../trainer/compute/engine/sampling';
import { Rng } from '../../../trainer/model/random';

function softmax(logits: number[], temperature: number): number[] {
  const max = Math.max(...logits);
  const e = logits.map((l) => Math.exp((l - max) / temperature));
  const total = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / total);
}

describe('engine/sampling', () => {
  it('greedy (temperature 0) picks the argmax', () => {
    const logits = Float32Array.from([0.1, 2.5, -1, 2.4]);
    assert.equal(argmax(logits), 1);
    assert.equal(new Sampler().next(logits), 1);
  });

  it('the nucleus is the smallest most-probable set reaching top-p, renormalized', () => {
    const rng = new Rng(3);
    for (const [V, temperature, topP] of [
      [50, 1, 0.9],
      [1000, 0.7, 0.5],
      [300, 1.3, 0.99],
      [20, 1, 1],
    ] as const) {
      const logits = Array.from({ length: V }, () => 3 * rng.normal());
      const probs = softmax(logits, temperature);
      const order = probs.map((p, i) => [p, i] as const).sort((a, b) => b[0] - a[0]);
      let mass = 0;
      const expected: number[] = [];
      for (const [p, i] of order) {
        expected.push(i);
        mass += p;
        if (mass >= topP) break;
      }
      const got = nucleus(Float32Array.from(logits), temperature, topP);
      assert.deepEqual(got.tokens, expected, `V ${V}, T ${temperature}, p ${topP}`);
      const kept = got.tokens.reduce((sum, id) => sum + probs[id], 0);
      assert.ok(kept >= topP - 1e-12 && kept - probs[got.tokens[got.tokens.length - 1]] < topP);
      got.probs.forEach((p, k) => assert.ok(Math.abs(p - probs[got.tokens[k]] / kept) < 1e-6));
    }
  });

  it('top-p sampling never leaves the nucleus and follows its probabilities', () => {
    const logits = Float32Array.from([2, 1.5, 1, 0.5, 0, -0.5, -1, -3]);
    const topP = 0.8;
    const { tokens, probs } = nucleus(logits, 1, topP);
    const sampler = new Sampler({ temperature: 1, topP, seed: 42 });
    const counts = new Map<number, number>();
    const draws = 20000;
    for (let i = 0; i < draws; i++) {
      const id = sampler.next(logits);
      counts.set(id, (counts.get(id) ?? 0) + 1);
    }
    for (const id of counts.keys()) assert.ok(tokens.includes(id), `sampled ${id} outside the nucleus [${tokens}]`);
    tokens.forEach((id, k) => {
      const frequency = (counts.get(id) ?? 0) / draws;
      assert.ok(Math.abs(frequency - probs[k]) < 0.015, `token ${id}: frequency ${frequency}, probability ${probs[k]}`);
    });
  });

  it('is deterministic for a seed', () => {
    const rng = new Rng(8);
    const logits = Float32Array.from({ length: 200 }, () => rng.normal());
    const draw = (seed: number) => {
      const sampler = new Sampler({ temperature: 0.9, topP: 0.95, seed });
      return Array.from({ length: 50 }, () => sampler.next(logits));
    };
    assert.deepEqual(draw(7), draw(7));
    assert.notDeepEqual(draw(7), draw(8));
  });

  it('rejects invalid options in one line', () => {
    assert.throws(() => new Sampler({ topP: 0 }), /topP must be in \(0, 1\]/);
    assert.throws(() => new Sampler({ temperature: -1 }), /temperature must be a finite number >= 0/);
  });
});
