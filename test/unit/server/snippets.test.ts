import { strict as assert } from 'node:assert';
import { identifierSet, jaccard, similarSnippets } from '../../../server/context/snippets';

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
});
