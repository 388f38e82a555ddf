import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { completeManifest, parseManifest, type AdapterManifest } from '../../../trainer/adapters/manifest';
import { decidePromotion } from '../../../trainer/adapters/registry';
import { scanSecrets, secretSpans } from '../../../trainer/data/mining/secrets';
import { Rng } from '../../../trainer/model/random';
import { Tokenizer } from '../../../trainer/model/tokenizer/tokenizer';
import {
  CANARY_REPEATS,
  canaryExamples,
  estimatedExposure,
  exposure,
  extractionCuts,
  makeCanaries,
  runCanaries,
} from '../../../trainer/training/eval/memorisation';
import { draftManifest, tempDir } from '../adapters/helpers';

// The memorisation check's parts that need no model: canaries, exposure, where extraction
// prompts are cut, the manifest field and the promotion rule.

describe('memorisation check: canaries, exposure, extraction prompts, promotion', () => {
  it('makes fresh canaries of two shapes; the secret scanner flags the credential ones only', () => {
    const first = makeCanaries();
    const second = makeCanaries();
    assert.deepEqual(
      first.map((c) => c.kind),
      ['credential', 'credential', 'credential', 'code', 'code', 'code'],
    );
    assert.equal(new Set(first.map((c) => c.context)).size, first.length, 'one answer per context');
    for (const canary of first) {
      assert.ok([...canary.secret].every((ch) => canary.alphabet.includes(ch)));
      const hits = scanSecrets(canary.context + canary.secret + canary.suffix);
      assert.equal(hits.length > 0, canary.kind === 'credential', `${canary.kind}: ${JSON.stringify(hits)}`);
    }
    const secrets = new Set(first.map((c) => c.secret));
    assert.ok(
      second.every((c) => !secrets.has(c.secret)),
      'fresh every run',
    );
  });

  it('keeps the canaries of a run in its run folder for --resume, and never plants into a run that trained without', () => {
    const dir = tempDir('canaries');
    try {
      const planted = runCanaries(path.join(dir), true, () => false);
      assert.equal(planted.length, 6);
      const file = fs.readdirSync(dir).map((n) => path.join(dir, n));
      assert.equal(file.length, 1);
      assert.equal(fs.statSync(file[0]).mode & 0o077, 0, 'readable by the owner only');
      assert.deepEqual(
        runCanaries(dir, true, () => true),
        planted,
        'a resumed run trains on the same canaries',
      );
      assert.deepEqual(
        runCanaries(dir, false, () => true),
        planted,
      );
      fs.rmSync(file[0]);
      assert.deepEqual(
        runCanaries(dir, true, () => true),
        [],
        'it trained without canaries: it goes on without',
      );
      fs.rmSync(file[0]);
      assert.deepEqual(
        runCanaries(dir, false, () => false),
        [],
      );
      assert.deepEqual(
        runCanaries(dir, true, () => false),
        [],
        'the choice made when the run began holds',
      );
      fs.writeFileSync(file[0], '{"canaries": [{"kind": "credential"');
      assert.throws(
        () => runCanaries(dir, true, () => false),
        (error: Error) =>
          /unreadable canaries; this run cannot be resumed/.test(error.message) && !error.message.includes('\n'),
      );
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('plants each canary as whole training examples, repeated', async () => {
    const tokenizer = await Tokenizer.load(path.join(__dirname, '..', '..', '..', 'models'));
    const canaries = makeCanaries();
    const examples = canaryExamples(canaries, tokenizer);
    assert.equal(examples.length, canaries.length * CANARY_REPEATS);
    examples.forEach((example, i) => {
      const canary = canaries[Math.floor(i / CANARY_REPEATS)];
      assert.equal(tokenizer.decode([...example.tokens]), canary.context + canary.secret + canary.suffix);
      assert.equal(example.lossStart, 0);
    });
  });

  it('exposure is log2 of the candidates plus one less log2 of the rank (ties do not count against it)', () => {
    const rng = new Rng(5);
    const candidates = Array.from({ length: 999 }, () => rng.next() * 10);
    const sorted = [...candidates].sort((a, b) => a - b);
    const bound = Math.log2(candidates.length + 1);
    assert.equal(exposure(-1, candidates), bound, 'most likely of all: the full bound');
    assert.equal(exposure(11, candidates), 0, 'least likely of all: no exposure');
    for (const k of [0, 1, 9, 99, 500, 998]) {
      const rank = k + 2; // k + 1 candidates are more likely than a value just above the k-th
      const nll = sorted[k] + 1e-9;
      assert.ok(Math.abs(exposure(nll, candidates) - (bound - Math.log2(rank))) < 1e-12);
    }
    assert.equal(exposure(sorted[0], candidates), bound, 'a tie does not lower the rank');
  });

  it('extrapolated exposure agrees with the rank among many normal candidates, and goes past the bound', () => {
    const rng = new Rng(11);
    const normal = () => Math.sqrt(-2 * Math.log(1 - rng.next())) * Math.cos(2 * Math.PI * rng.next());
    const many = Array.from({ length: 200_000 }, () => 50 + 4 * normal());
    const sorted = [...many].sort((a, b) => a - b);
    const few = many.slice(0, 1000);
    for (const k of [20, 200, 2000, 20_000, 100_000]) {
      const secret = (sorted[k - 1] + sorted[k]) / 2; // k candidates of the 200 000 are more likely
      const byRank = exposure(secret, many);
      const fitted = estimatedExposure(secret, few);
      // A fit of 1000 candidates, checked against the rank among 200 times as many: 10% in the tail.
      assert.ok(Math.abs(fitted - byRank) < 0.2 + 0.1 * byRank, `k ${k}: fitted ${fitted} vs rank ${byRank}`);
    }
    // Far below every candidate: the rank saturates at the bound, the fit keeps counting.
    const far = sorted[0] - 20;
    assert.equal(exposure(far, few), Math.log2(few.length + 1));
    assert.ok(estimatedExposure(far, few) > 3 * Math.log2(few.length + 1));
    assert.ok(Number.isFinite(estimatedExposure(far - 1000, few)));
    assert.ok(estimatedExposure(sorted[sorted.length - 1] + 20, few) < 1e-6, 'less likely than all: about 0');
  });

  it('cuts extraction prompts before flagged text and after credential-like assignments', () => {
    const text = [
      'const label = "hello";',
      'const apiToken = "";',
      '  "x-api-key": \'\',',
      `const aws = "${'AKIA'}IOSFODNN7EXAMPLQ";`,
      '',
    ].join('\n');
    const cuts = extractionCuts(text);
    const assigned = text.indexOf('apiToken =') + 'apiToken ='.length;
    assert.ok(cuts.includes(assigned), `${cuts} includes ${assigned}`);
    const header = text.indexOf('key":') + 5;
    assert.ok(cuts.includes(header), `${cuts} includes ${header}`);
    for (const span of secretSpans(text)) assert.ok(cuts.includes(span.start));
    assert.ok(!cuts.some((at) => at <= text.indexOf('\n')), 'nothing in a line without a credential-like name');
    assert.deepEqual(extractionCuts('const label = "hello";\n'), []);
  });

  const weights = { files: ['adapter_model.safetensors'], sha256: 'e'.repeat(64), bytes: 1 };
  const withCheck = (reproduced: number, extractionHits: number): AdapterManifest => {
    const exposures = [9.97, 2.5, 0.3, 1.1, 0.8, 4.2];
    return completeManifest(
      {
        ...draftManifest({ created: new Date(Date.UTC(2026, 0, 2)).toISOString(), baseLoss: 2.0, adapterLoss: 1.4 }),
        metrics: {
          ...draftManifest({ baseLoss: 2.0, adapterLoss: 1.4 }).metrics,
          memorisation: {
            canaries: exposures.length,
            repeats: CANARY_REPEATS,
            candidates: 1000,
            exposures,
            maxExposure: Math.max(...exposures),
            estimatedExposures: exposures.map((e) => e * 2),
            reproduced,
            extractionPrompts: 4,
            extractionHits,
          },
        },
      },
      weights,
    );
  };

  it('promotion refuses an adapter that wrote a canary or a credential; force says so', () => {
    const cases: Array<[number, number, boolean]> = [
      [0, 0, true],
      [1, 0, false],
      [0, 1, false],
      [6, 4, false],
    ];
    for (const [reproduced, hits, expected] of cases) {
      const candidate = withCheck(reproduced, hits);
      const decision = decidePromotion({ candidate, activeId: null, active: null, force: false });
      assert.equal(decision.activated, expected, decision.reason);
      assert.match(decision.reason, expected ? /memorisation check passed/ : /memorised training text/);
      const forced = decidePromotion({ candidate, activeId: null, active: null, force: true });
      assert.equal(forced.activated, true);
      if (!expected) assert.match(forced.reason, /forced although it memorised/);
    }
    // A loss that does not beat the base is refused on the loss, and the memorisation is named too.
    const worse = withCheck(1, 0);
    worse.metrics.adapter!.loss = 3;
    const decision = decidePromotion({ candidate: worse, activeId: null, active: null, force: false });
    assert.equal(decision.activated, false);
    assert.match(decision.reason, /does not beat the base.*; also it memorised/);
  });

  it('the manifest field round-trips and a bad one fails in one line naming the field', () => {
    const manifest = withCheck(1, 0);
    assert.deepEqual(parseManifest(JSON.parse(JSON.stringify(manifest))), manifest);
    const { memorisation: _m, ...metrics } = manifest.metrics;
    assert.equal(parseManifest(JSON.parse(JSON.stringify({ ...manifest, metrics }))).metrics.memorisation, undefined);
    const m = manifest.metrics.memorisation!;
    const bad: Array<[Record<string, unknown>, RegExp]> = [
      [{ exposures: m.exposures.slice(1) }, /metrics\.memorisation\.exposures" holds 5 values for 6 canaries/],
      [{ exposures: [...m.exposures.slice(1), -1] }, /exposures\[5\]" must not be negative/],
      [{ reproduced: 7 }, /reproduced" is 7, more than the 6 canaries/],
      [{ extractionHits: 5 }, /extractionHits" is 5, more than the 4 prompts/],
      [{ maxExposure: 'high' }, /maxExposure" must be a finite number/],
      [{ estimatedExposures: [1] }, /estimatedExposures" holds 1 values for 6 canaries/],
    ];
    for (const [change, message] of bad) {
      const json = JSON.parse(JSON.stringify(manifest));
      Object.assign(json.metrics.memorisation, change);
      assert.throws(
        () => parseManifest(json),
        (error: Error) => message.test(error.message) && !error.message.includes('\n'),
      );
    }
  });
});
