import { strict as assert } from 'node:assert';
import { defaultSnippetOptions, identifierSet, jaccard, similarSnippets } from '../../../server/context/snippets';
import { plantedSecrets } from '../../fixtures/mining/planted-secrets';

describe('server/context/snippets', () => {
  it('jaccard is shared / union of identifier sets', () => {
    const a = identifierSet('const total = price * quantity;');
    const b = identifierSet('let total = price + tax;');
    const shared = [...a].filter((x) => b.has(x)).length;
    assert.equal(jaccard(a, b), shared / new Set([...a, ...b]).size);
    assert.equal(jaccard(new Set(), new Set()), 0);
  });

  it('ranks the window that shares the cursor identifiers first and drops unrelated files', () => {
    const filler = Array.from({ length: 40 }, (_, i) => `const unrelated${i} = ${i};`).join('\n');
    const invoice = `${filler}\nexport function invoiceTotal(invoice: Invoice) {\n  return invoice.lines.reduce((sum, line) => sum + line.price * line.quantity, 0);\n}\n`;
    const weather = 'export const forecast = fetchWeather(city);\n';
    const cursor = 'function orderTotal(order: Order) {\n  return order.lines.reduce((sum, line) => sum + line.price';
    const snippets = similarSnippets(cursor, [
      { path: 'weather.ts', text: weather },
      { path: 'invoice.ts', text: invoice },
    ]);
    assert.equal(snippets.length, 1);
    assert.equal(snippets[0].path, 'invoice.ts');
    assert.match(snippets[0].text, /line\.price \* line\.quantity/);
    assert.ok(snippets[0].text.split('\n').length <= 20);
  });

  it('never takes a window that holds a credential: the model cannot copy what it is not shown', () => {
    const planted = plantedSecrets().find((secret) => secret.kind === 'assigned-api-key')!;
    const filler = Array.from({ length: 30 }, (_, i) => `const unrelated${i} = ${i};`).join('\n');
    // The same code without the key, far enough away to be another window.
    const clean = 'export function client() {\n  const apiKey = process.env.API_KEY;\n  return apiKey;\n}\n';
    const cursor = 'export function client() {\n  const apiKey = ';
    const withKey = similarSnippets(cursor, [{ path: 'src/client.ts', text: planted.content }]);
    assert.deepEqual(withKey, [], 'the only similar window holds the key');
    const mixed = similarSnippets(cursor, [{ path: 'src/both.ts', text: `${planted.content}${filler}\n${clean}` }]);
    assert.equal(mixed.length, 1);
    assert.ok(!mixed[0].text.includes(planted.canary));
    assert.match(mixed[0].text, /process\.env\.API_KEY/);
  });

  it('skips documents larger than maxSourceChars', () => {
    const source = {
      path: 'big.ts',
      text: 'export function invoiceTotal(invoice: Invoice) {\n  return invoice.total;\n}\n',
    };
    const cursor = 'function invoiceTotal(invoice: Invoice) {';
    assert.equal(similarSnippets(cursor, [source]).length, 1);
    assert.deepEqual(
      similarSnippets(cursor, [source], { ...defaultSnippetOptions, maxSourceChars: source.text.length - 1 }),
      [],
    );
  });
});
