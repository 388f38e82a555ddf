import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Registry } from '../../../trainer/adapters/registry';
import { trainRepository, type TrainRepositoryResult } from '../../../trainer/training/pipeline/train-repository';
import { commitFiles, tempDir } from '../../fixtures/mining/git-repo';
import { buildIdiomRepo, entityModule, type IdiomRepo } from '../../fixtures/pipeline/idiom-repo';
import { makeTinyModel, type TinyModel } from '../../fixtures/pipeline/tiny-model';

// `idiom train --from`: a tiny adapter trained on the idiom fixture is continued after new
// commits. The child records its parent, starts from the parent's weights (its first step's loss
// is the parent's, not a fresh adapter's), trains on the changed files plus a replay sample, and
// the lineage shows in `idiom adapters`. Bad parents fail in one line and change nothing.

const bin = path.join(__dirname, '..', '..', '..', 'trainer', 'cli', 'bin.js');

function cli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const out = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8' });
  return { status: out.status, stdout: out.stdout, stderr: out.stderr };
}

describe('incremental retrain: idiom train --from', function () {
  this.timeout(180_000);
  let base: string;
  let model: TinyModel;
  let repo: IdiomRepo;
  let parent: TrainRepositoryResult;
  const logs: string[] = [];

  const train = (extra: Partial<Parameters<typeof trainRepository>[0]> = {}) =>
    trainRepository({
      repo: repo.root,
      base: model.dir,
      budget: { tokens: 12_000 },
      learningRate: 1e-2,
      threads: 1,
      seed: 1,
      heldOut: { maxLines: 4 },
      quality: false,
      report: false,
      ...extra,
    });

  before(async () => {
    base = tempDir('incremental');
    model = await makeTinyModel(path.join(base, 'model'));
    repo = buildIdiomRepo(base, 10);
    parent = await train({ force: true });
    // Four new modules in the same idiom, one commit each: the newest are held out, the older ones
    // are what changed for training.
    ['ledger', 'budget', 'station', 'route'].forEach((name, i) =>
      commitFiles(repo.root, `2024-0${i + 3}-01T10:00:00Z`, `add ${name}`, { [`src/${name}.ts`]: entityModule(name) }),
    );
  });
  after(() => fs.rmSync(base, { recursive: true, force: true }));

  it('continues the active adapter: parent recorded, its weights first, changed files plus replay', async () => {
    const child = await train({
      from: 'active',
      report: true,
      onProgress: (e) => e.type === 'log' && logs.push(e.message),
    });
    assert.equal(child.manifest.parent, parent.adapter.id);
    assert.ok(fs.readFileSync(child.report!, 'utf8').includes(`Continued from <code>${parent.adapter.id}</code>`));
    const line = logs.find((l) => l.startsWith(`continuing ${parent.adapter.id}:`));
    assert.ok(line, logs.join('\n'));
    const files = Number(/: (\d+) files changed/.exec(line)?.[1]);
    assert.ok(files >= 1, line);

    // Same data, same seed, from scratch: the first step of the child is already lower (it starts
    // where the parent ended), and the parent's recorded final losses are about where it starts.
    const scratch = await train({ from: undefined, force: false });
    assert.equal(scratch.manifest.parent, null);
    const first = (r: TrainRepositoryResult) => r.losses[0].loss;
    assert.ok(first(child) < first(scratch), `continued ${first(child)} vs fresh ${first(scratch)}`);

    const listed = cli(['adapters', '--repo', repo.root, '--json']);
    assert.equal(listed.status, 0, listed.stderr);
    const adapters = (
      JSON.parse(listed.stdout) as { adapters: { id: string; parent: string | null; lineage?: string[] }[] }
    ).adapters;
    const entry = adapters.find((a) => a.id === child.adapter.id)!;
    assert.equal(entry.parent, parent.adapter.id);
    assert.deepEqual(entry.lineage, [child.adapter.id, parent.adapter.id]);
    const human = cli(['adapters', '--repo', repo.root]);
    assert.ok(human.stdout.includes(`${child.adapter.id} <- ${parent.adapter.id}`), human.stdout);
  });

  it('fails in one line for a missing or mismatched parent, and changes nothing', async () => {
    const registry = await Registry.open(repo.root, { readOnly: true });
    const before = JSON.stringify(await registry.readState());
    const ids = (await registry.ids()).length;
    const common = ['train', repo.root, '--base', model.dir, '--tokens', '2000', '--threads', '1', '--backend', 'ort'];
    const cases: [string[], RegExp][] = [
      [['--from', '20990101-000000-abcdef'], /^idiom: --from 20990101-000000-abcdef: no such adapter/],
      [['--from', 'active', '--mode', 'review'], /^idiom: --from active: no adapter is active for review/],
      [
        ['--from', parent.adapter.id, '--r', '4'],
        /^idiom: --from \S+: LoRA settings differ from the parent's \(rank 4 vs 16\)/,
      ],
      [['--from', parent.adapter.id, '--method', 'full'], /^idiom: --from \S+: continuing needs LoRA on both sides/],
    ];
    for (const [args, expected] of cases) {
      const out = cli([...common, ...args]);
      assert.equal(out.status, 1, `${args.join(' ')}: ${out.stderr}`);
      const lines = out.stderr.trim().split('\n');
      assert.equal(lines.length, 1, out.stderr);
      assert.match(lines[0], expected);
    }
    assert.equal(JSON.stringify(await registry.readState()), before);
    assert.equal((await registry.ids()).length, ids);
  });
});
