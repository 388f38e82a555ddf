import { strict as assert } from 'node:assert';
import { Rng } from '../../../trainer/model/random';

describe('Rng', () => {
  it('is deterministic per seed and differs between seeds', () => {
    const a = Array.from(
      { length: 8 },
      (
        (rng) => () =>
          rng.nextUint32()
      )(new Rng(123)),
    );
    const b = Array.from(
      { length: 8 },
      (
        (rng) => () =>
          rng.nextUint32()
      )(new Rng(123)),
    );
    const c = Array.from(
      { length: 8 },
      (
        (rng) => () =>
          rng.nextUint32()
      )(new Rng(124)),
    );
    assert.deepEqual(a, b);
    assert.notDeepEqual(a, c);
    assert.ok(a.every((x) => Number.isInteger(x) && x >= 0 && x < 2 ** 32));
    const zeroSeeded = new Rng(0);
    assert.ok(
      new Set(Array.from({ length: 8 }, () => zeroSeeded.nextUint32())).size === 8,
      'seed 0 gives a live stream',
    );
  });

  it('draws uniform and normal samples with the right moments', () => {
    const rng = new Rng(9);
    const n = 200000;
    const uniform = rng.fillUniform(new Float64Array(n));
    const normal = rng.fillNormal(new Float64Array(n), 1, 0.02);
    const mean = (xs: Float64Array): number => xs.reduce((s, x) => s + x, 0) / xs.length;
    const std = (xs: Float64Array): number => {
      const m = mean(xs);
      return Math.sqrt(xs.reduce((s, x) => s + (x - m) ** 2, 0) / xs.length);
    };
    assert.ok(uniform.every((x) => x >= 0 && x < 1));
    // Tolerances: several standard errors of the estimate for n samples.
    assert.ok(Math.abs(mean(uniform) - 0.5) < 5 * Math.sqrt(1 / 12 / n));
    assert.ok(Math.abs(std(uniform) - Math.sqrt(1 / 12)) < 0.002);
    assert.ok(Math.abs(mean(normal) - 1) < 5 * (0.02 / Math.sqrt(n)));
    assert.ok(Math.abs(std(normal) / 0.02 - 1) < 0.01);
    const counts = new Array(10).fill(0);
    for (let i = 0; i < 100000; i++) counts[rng.int(10)]++;
    assert.ok(
      counts.every((count) => Math.abs(count - 10000) < 500),
      String(counts),
    );
  });

  it('shuffles into a permutation', () => {
    const items = Array.from({ length: 50 }, (_, i) => i);
    const shuffled = new Rng(5).shuffle([...items]);
    assert.notDeepEqual(shuffled, items);
    assert.deepEqual(
      [...shuffled].sort((x, y) => x - y),
      items,
    );
  });
});
