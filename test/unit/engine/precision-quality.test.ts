import { strict as assert } from 'node:assert';
import * as path from 'node:path';
import { KvCacheSession } from '../../../trainer/compute/engine/inference';
import type { LoraAdapter, LoraModuleWeights, Precision } from '../../../trainer/compute/engine/weights';
import { projectionModule, projectionShape } from '../../../trainer/model/config';
import { type LazyCheckpoint, openCheckpoint } from '../../../trainer/model/lazy-weights';
import { Rng } from '../../../trainer/model/random';
import { Tokenizer } from '../../../trainer/model/tokenizer/tokenizer';

// The quality cost of serving quantized weights, measured as a user's model meets it: the
// embedded (trained) model read from its folder as the server reads it, a LoRA adapter on top as
// a float32 feed, and the mean NLL of a fixed piece of code at float32, int8 and int4.

const MODEL = path.join(__dirname, '..', '..', '..', 'models');

const TEXT = `import * as fs from 'node:fs';

export interface Invoice {
  id: string;
  lines: { description: string; cents: number; quantity: number }[];
}

/** The invoice's total in cents. */
export function total(invoice: Invoice): number {
  let sum = 0;
  for (const line of invoice.lines) sum += line.cents * line.quantity;
  return sum;
}

export function readInvoices(file: string): Invoice[] {
  const text = fs.readFileSync(file, 'utf8');
  return text
    .split('\\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as Invoice);
}
`;

/** A rank-8 adapter on q_proj and v_proj of every layer, large enough to move the loss. */
function randomAdapter(checkpoint: LazyCheckpoint): LoraAdapter {
  const rng = new Rng(11);
  const r = 8;
  const modules = new Map<string, LoraModuleWeights>();
  for (let layer = 0; layer < checkpoint.config.numLayers; layer++) {
    for (const projection of ['q_proj', 'v_proj'] as const) {
      const [out, inFeatures] = projectionShape(checkpoint.config, projection);
      modules.set(projectionModule(layer, projection), {
        a: {
          dtype: 'float32',
          shape: [r, inFeatures],
          data: rng.fillNormal(new Float32Array(r * inFeatures), 0, 0.05),
        },
        b: { dtype: 'float32', shape: [out, r], data: rng.fillNormal(new Float32Array(out * r), 0, 0.15) },
      });
    }
  }
  return { scaling: 2, modules };
}

const mean = (values: Float32Array) => values.reduce((a, b) => a + b, 0) / values.length;

describe('serving precision: quality cost with an adapter', function () {
  this.timeout(60_000);

  it('int8 and int4 stay close to float32 in mean NLL, and the adapter moves them as it moves float32', async () => {
    const checkpoint = await openCheckpoint(MODEL);
    const tokenizer = await Tokenizer.load(MODEL);
    const tokens = tokenizer.encode(TEXT);
    assert.ok(tokens.length > 100, `the text is ${tokens.length} tokens`);
    const adapter = randomAdapter(checkpoint);
    const nll: Record<Precision, { base: number; adapter: number }> = {} as never;
    for (const precision of ['float32', 'int8', 'int4'] as const) {
      const session = await KvCacheSession.create(checkpoint.config, checkpoint.weights, {
        precision,
        loraInputs: true,
        threads: 1,
        maxContext: checkpoint.config.maxPositionEmbeddings,
      });
      try {
        const base = mean(await session.nll(tokens));
        session.setAdapter(adapter);
        nll[precision] = { base, adapter: mean(await session.nll(tokens)) };
      } finally {
        await session.dispose();
      }
    }
    const effect = (p: Precision) => nll[p].adapter - nll[p].base;
    const gap = (p: Precision) => Math.abs(nll[p].adapter - nll.float32.adapter) / nll.float32.adapter;

    // The adapter matters here: its effect is well above the int8 gap.
    assert.ok(Math.abs(effect('float32')) > 0.05, `adapter effect ${effect('float32')} nats`);
    assert.ok(gap('int8') < 0.01, `int8 changes the mean NLL by ${(100 * gap('int8')).toFixed(2)}%`);
    assert.ok(gap('int4') < 0.1, `int4 changes the mean NLL by ${(100 * gap('int4')).toFixed(2)}%`);
    assert.ok(gap('int4') > gap('int8'), 'int4 costs more than int8');
    // LoRA as a float feed applies on top of the quantized base as it does on float32.
    for (const p of ['int8', 'int4'] as const) {
      const relative = Math.abs(effect(p) - effect('float32')) / Math.abs(effect('float32'));
      assert.ok(relative < 0.25, `${p}: adapter effect ${effect(p)} vs ${effect('float32')} at float32`);
    }
  });
});
