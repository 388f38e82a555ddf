import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  checkCombinable,
  combinationLabel,
  combineAdapters,
  parseAdapterWeight,
  type CombinePart,
} from '../../../trainer/adapters/combine';
import { loadAdapter, loraAdapterOf, peftKey, writeAdapter, type LoadedAdapter } from '../../../trainer/adapters/peft';
import { KvCacheSession } from '../../../trainer/compute/engine/inference';
import { mergeLora } from '../../../trainer/compute/engine/weights';
import { randomCheckpointWeights } from '../../../trainer/model/checkpoint';
import { sha256Hex } from '../../../trainer/adapters/manifest';

type Base = { config: ModelConfig; weights: Map<string, HostTensor>; sha256: string };
import {
  projectionShape,
  projectionWeightName,
  type ModelConfig,
  type Projection,
} from '../../../trainer/model/config';
import { Rng } from '../../../trainer/model/random';
import type { HostTensor } from '../../../trainer/model/tensor';
import { maxAbsDiff, randomTokens, tinyConfig as engineConfig, type TinyKind } from '../engine/fixtures';
import { draftManifest, tempDir } from './helpers';

/** PEFT-keyed A [r, in] and B [out, r], both random and nonzero. */
function loraTensors(cfg: ModelConfig, r: number, targets: readonly Projection[], seed: number) {
  const rng = new Rng(seed);
  const tensors = new Map<string, HostTensor>();
  for (let layer = 0; layer < cfg.numLayers; layer++) {
    for (const projection of targets) {
      const [outFeatures, inFeatures] = projectionShape(cfg, projection);
      const matrix = (shape: [number, number]): HostTensor => ({
        dtype: 'float32',
        shape,
        data: rng.fillNormal(new Float32Array(shape[0] * shape[1]), 0, 0.2),
      });
      tensors.set(peftKey(layer, projection, 'A'), matrix([r, inFeatures]));
      tensors.set(peftKey(layer, projection, 'B'), matrix([outFeatures, r]));
    }
  }
  return tensors;
}

interface AdapterSpec {
  r: number;
  alpha: number;
  targets: Projection[];
  seed: number;
  useRslora?: boolean;
  baseSha256?: string;
  method?: 'lora' | 'full';
}

async function makeAdapter(root: string, name: string, checkpoint: Base, spec: AdapterSpec) {
  const dir = path.join(root, name);
  const manifest = draftManifest({ base: { name: 'tiny', sha256: spec.baseSha256 ?? checkpoint.sha256 } });
  await writeAdapter(dir, {
    config: { r: spec.r, alpha: spec.alpha, targets: spec.targets, useRslora: spec.useRslora },
    tensors: loraTensors(checkpoint.config, spec.r, spec.targets, spec.seed),
    manifest,
    baseConfig: checkpoint.config,
  });
  return loadAdapter(dir, checkpoint.config);
}

/**
 * A random base in memory (its sha256 only tells bases apart). Weights of std 0.1 keep the logits
 * near 1, where float32 rounding leaves the two computations far closer than 1e-5.
 */
function tinyBase(kind: TinyKind, seed: number): Base {
  const config = engineConfig(kind);
  return { config, weights: randomCheckpointWeights(config, seed, { std: 0.1 }), sha256: sha256Hex(`${kind}:${seed}`) };
}

/** The base's weights with W + Σ weight·scaling·B·A folded into each adapted projection. */
function mergedWeights(checkpoint: Base, parts: readonly CombinePart[]): Map<string, HostTensor> {
  const weights = new Map(checkpoint.weights);
  for (const part of parts) {
    for (const module of part.adapter.modules.values()) {
      const name = projectionWeightName(module.layer, module.target);
      weights.set(name, mergeLora(weights.get(name)!, module, part.weight * part.adapter.config.scaling));
    }
  }
  return weights;
}

/** Logits after the prompt and after each of `steps` fed tokens, concatenated. */
async function logitsOf(session: KvCacheSession, prompt: number[], steps: number[]): Promise<Float32Array> {
  const rows = [Float32Array.from(await session.append(prompt))];
  for (const token of steps) rows.push(Float32Array.from(await session.append([token])));
  session.truncate(0);
  const all = new Float32Array(rows.reduce((n, row) => n + row.length, 0));
  let at = 0;
  for (const row of rows) {
    all.set(row, at);
    at += row.length;
  }
  return all;
}

describe('adapters/combine', function () {
  this.timeout(60_000);
  let root: string;
  let checkpoint: Base;
  let team: LoadedAdapter;
  let mine: LoadedAdapter;

  before(async () => {
    root = tempDir('combine');
    checkpoint = tinyBase('llama-gqa', 7);
    // Different ranks, alphas, scaling rules and targets: q_proj and down_proj are shared, the rest not.
    team = await makeAdapter(root, 'team', checkpoint, {
      r: 2,
      alpha: 4,
      targets: ['q_proj', 'v_proj', 'down_proj'],
      seed: 11,
    });
    mine = await makeAdapter(root, 'mine', checkpoint, {
      r: 3,
      alpha: 5,
      targets: ['q_proj', 'k_proj', 'o_proj', 'up_proj', 'down_proj'],
      seed: 12,
      useRslora: true,
    });
  });
  after(() => fs.rmSync(root, { recursive: true, force: true }));

  it('combined logits equal the base with W + Σ weight·(alpha/r)·B·A merged in, within 1e-5', async () => {
    const parts: CombinePart[] = [
      { id: 'team', weight: 1, adapter: team },
      { id: 'mine', weight: 0.5, adapter: mine },
    ];
    const combined = combineAdapters(parts);
    assert.equal(combined.label, 'team×1 + mine×0.5');
    const rank = team.config.r + mine.config.r;
    assert.equal(combined.adapter.config.r, rank);
    assert.equal(combined.adapter.config.scaling, 1);
    const union = new Set([...team.modules.keys(), ...mine.modules.keys()]);
    assert.deepEqual(new Set(combined.adapter.modules.keys()), union);
    for (const module of combined.adapter.modules.values()) {
      assert.equal(module.a.shape[0], rank);
      assert.equal(module.b.shape[1], rank);
    }

    const cfg = checkpoint.config;
    const rng = new Rng(7);
    const prompt = randomTokens(rng, 12, cfg.vocabSize);
    const steps = randomTokens(rng, 4, cfg.vocabSize);
    const feeds = await KvCacheSession.create(cfg, checkpoint.weights, { threads: 1, loraInputs: true });
    const merged = await KvCacheSession.create(cfg, mergedWeights(checkpoint, parts), { threads: 1 });
    try {
      const base = await logitsOf(feeds, prompt, steps);
      feeds.setAdapter(loraAdapterOf(combined.adapter));
      const viaFeeds = await logitsOf(feeds, prompt, steps);
      const viaMerged = await logitsOf(merged, prompt, steps);
      const diff = maxAbsDiff(viaFeeds, viaMerged);
      assert.ok(diff < 1e-5, `combined feeds differ from the merged weights by ${diff}`);
      // Each adapter moves the logits, so equality above tests both halves and their weights.
      feeds.setAdapter(loraAdapterOf(team));
      const teamOnly = await logitsOf(feeds, prompt, steps);
      for (const [what, other] of [
        ['the base', base],
        ['team alone', teamOnly],
      ] as const) {
        const apart = maxAbsDiff(viaFeeds, other);
        assert.ok(apart > 1e-2, `the combination is within ${apart} of ${what}`);
      }
      // Weight 0 leaves the other adapter alone.
      feeds.setAdapter(
        loraAdapterOf(
          combineAdapters([
            { id: 'team', weight: 1, adapter: team },
            { id: 'mine', weight: 0, adapter: mine },
          ]).adapter,
        ),
      );
      const zeroed = maxAbsDiff(await logitsOf(feeds, prompt, steps), teamOnly);
      assert.ok(zeroed < 1e-5, `team×1 + mine×0 differs from team alone by ${zeroed}`);
    } finally {
      await Promise.all([feeds.dispose(), merged.dispose()]);
    }
  });

  it('refuses adapters of different bases, naming both', async () => {
    const other = await makeAdapter(root, 'other-base', checkpoint, {
      r: 2,
      alpha: 4,
      targets: ['q_proj'],
      seed: 13,
      baseSha256: 'c'.repeat(64),
    });
    assert.throws(
      () =>
        combineAdapters([
          { id: 'team', weight: 1, adapter: team },
          { id: 'other', weight: 1, adapter: other },
        ]),
      (error: Error) => {
        assert.match(error.message, /cannot combine adapters team and other: different bases/);
        assert.match(error.message, /cccccccccccc/);
        assert.doesNotMatch(error.message, /\n/);
        return true;
      },
    );
  });

  it('refuses adapters of different architectures, naming both and the module', async () => {
    const wide = tinyBase('llama-bias', 8);
    const wideAdapter = await makeAdapter(root, 'wide', wide, {
      r: 2,
      alpha: 4,
      targets: ['q_proj'],
      seed: 14,
      baseSha256: checkpoint.sha256,
    });
    assert.throws(
      () =>
        combineAdapters([
          { id: 'team', weight: 1, adapter: team },
          { id: 'wide', weight: 1, adapter: wideAdapter },
        ]),
      /^Error: cannot combine adapters team and wide: different architectures \(model\.layers\.0\.self_attn\.q_proj is \[64, 32\] in team, \[32, 24\] in wide\)$/,
    );
  });

  it('refuses a full fine-tune, an id listed twice, a non-finite weight and an empty list, in one line each', () => {
    const base = { name: 'tiny', sha256: 'a'.repeat(64) };
    const refusals: Array<[Parameters<typeof checkCombinable>[0], RegExp]> = [
      [
        [
          { id: 'lora', weight: 1, kind: 'lora', base },
          { id: 'ft', weight: 1, kind: 'full', base },
        ],
        /^adapter ft is a full fine-tune; only LoRA adapters can be combined/,
      ],
      [
        [
          { id: 'x', weight: 1, kind: 'lora', base },
          { id: 'x', weight: 2, kind: 'lora', base },
        ],
        /^adapter x is listed twice/,
      ],
      [[{ id: 'x', weight: Number.NaN, kind: 'lora', base }], /^adapter x: weight NaN is not a finite number$/],
      [[], /^no adapters to combine/],
    ];
    for (const [candidates, expected] of refusals) {
      assert.throws(
        () => checkCombinable(candidates),
        (error: Error) => expected.test(error.message) && !error.message.includes('\n'),
      );
    }
  });

  it('parses ID and ID:WEIGHT and labels a combination', () => {
    assert.deepEqual(parseAdapterWeight('20261128-130501-ab12cd'), { id: '20261128-130501-ab12cd', weight: 1 });
    assert.deepEqual(parseAdapterWeight('20261128-130501-ab12cd:0.5'), { id: '20261128-130501-ab12cd', weight: 0.5 });
    assert.throws(() => parseAdapterWeight('x:'), /^Error: "x:": the weight "" is not a finite number$/);
    assert.throws(() => parseAdapterWeight('x:abc'), /the weight "abc" is not a finite number/);
    assert.throws(() => parseAdapterWeight(':2'), /expected ID or ID:WEIGHT/);
    assert.equal(
      combinationLabel([
        { id: 'team', weight: 1 },
        { id: 'mine', weight: 0.5 },
      ]),
      'team×1 + mine×0.5',
    );
  });
});
