import { strict as assert } from 'node:assert';
import { DuplicateIndex, estimatedJaccard, minhashSignature } from '../../../trainer/data/mining/dedup';

// A deterministic, varied source file of `lines` functions.
function source(lines: number, salt: string): string {
  return Array.from(
    { length: lines },
    (_, i) => `export function ${salt}Handler${i}(input: number) {\n  return input * ${i + 3} + ${salt.length};\n}\n`,
  ).join('\n');
}

describe('mining/dedup', () => {
  it('finds exact duplicates', () => {
    const index = new DuplicateIndex();
    assert.deepEqual(index.check('a.ts', source(20, 'alpha')), { kind: 'unique' });
    assert.deepEqual(index.check('b.ts', source(20, 'alpha')), { kind: 'duplicate', of: 'a.ts' });
  });

  it('finds near-duplicates (a small edit, reindentation) but keeps different files', () => {
    const index = new DuplicateIndex();
    const original = source(60, 'alpha');
    assert.equal(index.check('a.ts', original).kind, 'unique');
    const edited = original.replace('Handler7(', 'Handler7b(');
    const verdict = index.check('b.ts', edited);
    assert.equal(verdict.kind, 'near-duplicate');
    assert.equal(verdict.kind === 'near-duplicate' && verdict.of, 'a.ts');
    const reindented = original.replace(/\n {2}/g, '\n\t');
    assert.equal(index.check('c.ts', reindented).kind, 'near-duplicate');
    assert.equal(index.check('d.ts', source(60, 'beta')).kind, 'unique');
    const half = original.split('\n').slice(0, 120).join('\n') + source(30, 'gamma');
    assert.equal(index.check('e.ts', half).kind, 'unique');
  });

  it('estimates Jaccard similarity close to the true value', () => {
    const a = minhashSignature(source(100, 'x'));
    assert.equal(estimatedJaccard(a, a), 1);
    const b = minhashSignature(source(100, 'y'));
    assert.ok(estimatedJaccard(a, b) < 0.5);
  });

  it('keeps thousands of small files that share boilerplate, and still finds a copy among them', () => {
    const index = new DuplicateIndex();
    const small = (i: number) => `export function value${i}(x: number): number {\n  return x * ${i + 7} + 1;\n}\n`;
    for (let i = 0; i < 5000; i++) assert.equal(index.check(`m${i}.ts`, small(i)).kind, 'unique', `m${i}.ts`);
    const big = source(40, 'omega');
    assert.equal(index.check('big.ts', big).kind, 'unique');
    for (let i = 5000; i < 6000; i++) index.check(`m${i}.ts`, small(i));
    assert.equal(index.check('copy.ts', big.replace('omegaHandler3(', 'omegaHandler3x(')).kind, 'near-duplicate');
  });
});
