import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readCombinations } from '../../../trainer/adapters/combinations';
import { writeFullModel } from '../../../trainer/adapters/full';
import { writeAdapter } from '../../../trainer/adapters/peft';
import { Registry } from '../../../trainer/adapters/registry';
import { formatCombine, runCombineCommand } from '../../../trainer/cli/commands/combine';
import { randomCheckpointWeights } from '../../../trainer/model/checkpoint';
import { draftManifest, randomLoraTensors, tempDir, tinyConfig } from '../adapters/helpers';

const bin = path.join(__dirname, '..', '..', '..', 'trainer', 'cli', 'bin.js');

function idiom(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const run = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8' });
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

describe('idiom adapters combine (CLI)', function () {
  this.timeout(60_000);
  let repo: string;
  let registry: Registry;
  const ids: Record<'team' | 'mine' | 'other' | 'full', string> = { team: '', mine: '', other: '', full: '' };
  const ranks = { team: 2, mine: 3, other: 2 };

  before(async () => {
    repo = tempDir('cli-combine');
    fs.mkdirSync(path.join(repo, '.git'));
    registry = await Registry.open(repo);
    let second = 0;
    for (const name of ['team', 'mine', 'other'] as const) {
      const staging = registry.stagingPath();
      const r = ranks[name];
      const draft = draftManifest({
        created: new Date(Date.UTC(2026, 0, 1, 0, 0, ++second)).toISOString(),
        ...(name === 'other' ? { base: { name: 'another-base', sha256: 'c'.repeat(64) } } : {}),
      });
      await writeAdapter(staging, {
        config: { r, alpha: 2 * r, targets: ['q_proj'] },
        tensors: randomLoraTensors(tinyConfig, r, ['q_proj'], second),
        manifest: { ...draft, training: { ...draft.training, hyperparameters: { r, alpha: 2 * r } } },
        baseConfig: tinyConfig,
      });
      ids[name] = (await registry.add(staging)).id;
    }
    const staging = registry.stagingPath();
    const draft = draftManifest({ created: new Date(Date.UTC(2026, 0, 1, 0, 0, ++second)).toISOString() });
    await writeFullModel(staging, {
      config: tinyConfig,
      weights: randomCheckpointWeights(tinyConfig, 3),
      manifest: { ...draft, training: { ...draft.training, method: 'full' } },
    });
    ids.full = (await registry.add(staging)).id;
  });
  after(() => fs.rmSync(repo, { recursive: true, force: true }));

  const run = (specs: string[], options: { mode?: string; clear?: boolean } = {}) =>
    runCombineCommand(specs, { repo, mode: 'complete', ...options });

  it('sets, prints and clears the combination a mode serves', async () => {
    const set = idiom('adapters', 'combine', ids.team, `${ids.mine}:0.5`, '--repo', repo, '--json');
    assert.equal(set.status, 0, set.stderr);
    const parts = [
      { id: ids.team, weight: 1 },
      { id: ids.mine, weight: 0.5 },
    ];
    assert.deepEqual(JSON.parse(set.stdout), {
      mode: 'complete',
      combination: { adapters: parts, label: `${ids.team}×1 + ${ids.mine}×0.5`, rank: ranks.team + ranks.mine },
      changed: true,
    });
    assert.deepEqual(readCombinations(registry.dir), { complete: parts });

    const shown = idiom('adapters', 'combine', '--repo', repo);
    assert.equal(shown.status, 0, shown.stderr);
    assert.equal(
      shown.stdout,
      `complete: ${ids.team}×1 + ${ids.mine}×0.5 (one LoRA of rank ${ranks.team + ranks.mine})\n`,
    );
    assert.equal((await run([], { mode: 'review' })).combination, null);
    const cleared = await run([], { clear: true });
    assert.equal(cleared.combination, null);
    assert.equal(formatCombine(cleared), 'complete: no combination; the active adapter serves\n');
    assert.deepEqual(readCombinations(registry.dir), {});
  });

  it('refuses in one line, changing nothing: other bases (naming both), a full fine-tune, a bad weight, an unknown id', async () => {
    await run([ids.team, ids.mine]);
    const before = fs.readFileSync(path.join(registry.dir, 'combinations.json'), 'utf8');
    const refusals: Array<[string[], RegExp]> = [
      [[ids.team, ids.other], new RegExp(`cannot combine adapters ${ids.team} and ${ids.other}: different bases`)],
      [[ids.team, ids.full], new RegExp(`adapter ${ids.full} is a full fine-tune`)],
      [[`${ids.team}:half`], /the weight "half" is not a finite number/],
      [['20260101-000000-abcdef'], /no adapter 20260101-000000-abcdef in /],
      [[ids.team, ids.team], /is listed twice/],
    ];
    for (const [specs, expected] of refusals) {
      await assert.rejects(run(specs), (error: Error) => expected.test(error.message) && !error.message.includes('\n'));
    }
    // On the command line: a non-zero exit and the one line on stderr.
    const cli = idiom('adapters', 'combine', ids.team, ids.other, '--repo', repo);
    assert.notEqual(cli.status, 0);
    assert.match(cli.stderr, refusals[0][1]);
    assert.equal(cli.stderr.trim().split('\n').length, 1, `one line: ${cli.stderr}`);
    assert.equal(fs.readFileSync(path.join(registry.dir, 'combinations.json'), 'utf8'), before);
  });
});
