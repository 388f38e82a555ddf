import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadPolicy, trainingPathFilter } from '../../../trainer/modes/compliance/policy';
import { collectExamples } from '../../../trainer/data/mining/mine';
import { trainRepository } from '../../../trainer/training/pipeline/train-repository';
import { Registry } from '../../../trainer/adapters/registry';
import { commitFiles } from '../../fixtures/mining/git-repo';
import { buildIdiomRepo } from '../../fixtures/pipeline/idiom-repo';
import { makeTinyModel } from '../../fixtures/pipeline/tiny-model';

// `idiom train --mode compliance`: the adapter learns only from the paths the repository's policy
// allows for training; a file outside them never reaches an example.

const CANARY = 'restricted_canary_4f1d0e';

describe('idiom train --mode compliance', function () {
  this.timeout(180_000);
  let base: string;
  before(() => (base = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-compliance-train-'))));
  after(() => fs.rmSync(base, { recursive: true, force: true }));

  it('refuses without a policy, and with one trains only on allowed paths', async () => {
    const model = await makeTinyModel(path.join(base, 'model'));
    const repo = buildIdiomRepo(base);
    await assert.rejects(
      trainRepository({ repo: repo.root, base: model.dir, mode: 'compliance', budget: { tokens: 4000 }, threads: 1 }),
      /compliance mode needs a policy file \(idiom-policy\.json/,
    );

    const policyText = JSON.stringify({ version: 1, paths: { training: ['src/**'] } });
    commitFiles(repo.root, '2020-01-01T00:00:00Z', 'policy and a restricted module', {
      'idiom-policy.json': policyText,
      'restricted/legacy.ts': `export function legacy(): string {\n  return '${CANARY}';\n}\n`.repeat(4),
    });

    const policy = loadPolicy(repo.root)!;
    const mined = await collectExamples(repo.root, { pathFilter: trainingPathFilter(policy) });
    assert.ok((mined.summary.files.excluded.policy ?? 0) >= 1, JSON.stringify(mined.summary.files.excluded));
    assert.ok(mined.files.every((f) => f.path.startsWith('src/')));
    assert.ok(!JSON.stringify(mined.examples).includes(CANARY));

    const result = await trainRepository({
      repo: repo.root,
      base: model.dir,
      mode: 'compliance',
      budget: { tokens: 12_000 },
      threads: 1,
      force: true,
    });
    const manifest = JSON.parse(fs.readFileSync(path.join(result.adapter.path, 'manifest.json'), 'utf8'));
    assert.equal(manifest.mode, 'compliance');
    assert.ok((manifest.dataset.excluded.policy ?? 0) >= 1, JSON.stringify(manifest.dataset.excluded));
    assert.match(manifest.purpose, new RegExp(`policy sha256 ${policy.sha256}`));
    const registry = await Registry.open(repo.root);
    assert.equal(await registry.activeId('compliance'), result.adapter.id);
  });
});
