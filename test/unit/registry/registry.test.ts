import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeAdapter } from '../../../trainer/adapters/peft';
import { completeManifest, type AdapterManifest, type ManifestDraft } from '../../../trainer/adapters/manifest';
import type { Mode } from '../../../trainer/adapters/mode';
import { randomCheckpointWeights } from '../../../trainer/model/checkpoint';
import { writeFullModel } from '../../../trainer/adapters/full';
import { Registry, decidePromotion, loadActive, parseRegistryState } from '../../../trainer/adapters/registry';
import { BASE_SHA, draftManifest, metrics, randomLoraTensors, tempDir, tinyConfig } from '../adapters/helpers';

/** Writes a real adapter into staging and adds it; `second` orders creation times. */
async function addAdapter(
  registry: Registry,
  second: number,
  draft: Partial<ManifestDraft> & { adapterLoss?: number | null; baseLoss?: number | null } = {},
): Promise<AdapterManifest> {
  const staging = registry.stagingPath();
  await writeAdapter(staging, {
    config: { r: 2, alpha: 4, targets: ['q_proj'] },
    tensors: randomLoraTensors(tinyConfig, 2, ['q_proj'], 100 + second),
    manifest: draftManifest({ created: new Date(Date.UTC(2026, 0, 1, 0, 0, second)).toISOString(), ...draft }),
    baseConfig: tinyConfig,
  });
  const manifest = await registry.add(staging);
  assert.ok(!fs.existsSync(staging), 'add moves the folder');
  return manifest;
}

function folderDigest(dir: string): string {
  const hash = createHash('sha256');
  for (const name of fs.readdirSync(dir).sort()) hash.update(name).update(fs.readFileSync(path.join(dir, name)));
  return hash.digest('hex');
}

describe('adapter registry', () => {
  let repo: string;
  let registry: Registry;
  beforeEach(async () => {
    repo = tempDir('registry');
    registry = await Registry.open(repo);
  });
  afterEach(() => fs.rmSync(repo, { recursive: true, force: true }));

  it('adds adapters and lists them oldest first with metrics and active modes', async () => {
    assert.deepEqual(await registry.list(), []);
    const a = await addAdapter(registry, 1, { adapterLoss: 1.8 });
    const b = await addAdapter(registry, 2, { adapterLoss: 1.6, mode: 'review' });
    await registry.activate(b.id, 'review');
    const list = await registry.list();
    assert.deepEqual(
      list.map((e) => e.id),
      [a.id, b.id],
    );
    assert.equal(list[0].metrics!.adapter!.loss, 1.8);
    assert.equal(list[1].mode, 'review');
    assert.equal(list[1].active, true);
    assert.deepEqual(list[1].activeModes, ['review']);
    assert.equal(list[0].active, false);
    assert.equal(list[0].kind, 'lora');
    assert.equal(list[0].path, path.join(repo, '.idiom', 'adapters', a.id));
    await assert.rejects(registry.add(registry.adapterPath(a.id), { move: false }), /already in the registry/);
  });

  it('refuses to add a folder whose weights changed after the manifest was written', async () => {
    const staging = registry.stagingPath();
    await writeAdapter(staging, {
      config: { r: 2, alpha: 4, targets: ['q_proj'] },
      tensors: randomLoraTensors(tinyConfig, 2, ['q_proj'], 9),
      manifest: draftManifest(),
      baseConfig: tinyConfig,
    });
    const file = path.join(staging, 'adapter_model.safetensors');
    const bytes = fs.readFileSync(file);
    bytes[bytes.length - 1] ^= 4;
    fs.writeFileSync(file, bytes);
    await assert.rejects(registry.add(staging), /does not match manifest\.json/);
    assert.deepEqual(await registry.ids(), []);
  });

  it('rolls back through earlier activations, per mode, down to the base model, then refuses', async () => {
    const a = await addAdapter(registry, 1);
    const b = await addAdapter(registry, 2);
    const c = await addAdapter(registry, 3);
    await assert.rejects(registry.rollback('complete'), /nothing to roll back to for mode complete/);
    await registry.activate(a.id, 'complete');
    await registry.activate(b.id, 'complete');
    await registry.activate(c.id, 'complete');
    await registry.activate(a.id, 'review');
    assert.deepEqual(await registry.activate(c.id, 'complete'), {
      mode: 'complete',
      from: c.id,
      to: c.id,
      changed: false,
    });

    assert.deepEqual(await registry.rollback('complete'), { mode: 'complete', from: c.id, to: b.id, changed: true });
    assert.equal(await registry.activeId('complete'), b.id);
    assert.equal(await registry.activeId('review'), a.id, 'other modes are untouched');
    assert.deepEqual(await registry.rollback('complete'), { mode: 'complete', from: b.id, to: a.id, changed: true });
    assert.deepEqual(await registry.rollback('complete'), { mode: 'complete', from: a.id, to: null, changed: true });
    assert.equal(await registry.activeId('complete'), null);
    assert.equal(await registry.activePath('complete'), null);
    await assert.rejects(registry.rollback('complete'), /nothing to roll back to for mode complete/);

    const state = await registry.readState();
    const complete = state.history.filter((e) => e.mode === 'complete').map((e) => [e.action, e.from, e.to]);
    assert.deepEqual(complete, [
      ['activate', null, a.id],
      ['activate', a.id, b.id],
      ['activate', b.id, c.id],
      ['rollback', c.id, b.id],
      ['rollback', b.id, a.id],
      ['rollback', a.id, null],
    ]);
    // What is on disk is what readState returns, and it validates.
    assert.deepEqual(parseRegistryState(fs.readFileSync(path.join(repo, '.idiom', 'registry.json'), 'utf8')), state);
  });

  it('removes an adapter without touching the others, refuses an active one unless forced', async () => {
    const a = await addAdapter(registry, 1);
    const b = await addAdapter(registry, 2);
    const c = await addAdapter(registry, 3);
    await registry.activate(a.id, 'complete');
    await registry.activate(b.id, 'complete');
    const digests = new Map([a, c].map((m) => [m.id, folderDigest(registry.adapterPath(m.id))]));

    await assert.rejects(registry.remove(b.id), /adapter .* is active for complete/);
    await registry.remove(c.id);
    assert.deepEqual(await registry.ids(), [a.id, b.id]);
    await assert.rejects(registry.remove(c.id), /no adapter/);
    await assert.rejects(registry.remove('../../etc'), /is not an adapter id/);

    const removed = await registry.remove(b.id, { force: true });
    assert.deepEqual(removed.deactivated, [{ mode: 'complete', from: b.id, to: a.id, changed: true }]);
    assert.equal(await registry.activeId('complete'), a.id);
    assert.deepEqual(await registry.ids(), [a.id]);
    assert.equal(folderDigest(registry.adapterPath(a.id)), digests.get(a.id));
    assert.deepEqual(fs.readdirSync(path.join(repo, '.idiom', 'trash')), []);
    // The removed adapter is no longer a rollback target: the next one down is the base model.
    assert.deepEqual(await registry.rollback('complete'), { mode: 'complete', from: a.id, to: null, changed: true });
  });

  it('loads what is active for a mode: a LoRA adapter, a full fine-tune, or the base alone', async () => {
    const lora = await addAdapter(registry, 1);
    const staging = registry.stagingPath();
    const draft = draftManifest({ created: new Date(Date.UTC(2026, 0, 1, 0, 0, 2)).toISOString() });
    const full = await writeFullModel(staging, {
      config: tinyConfig,
      weights: randomCheckpointWeights(tinyConfig, 5),
      manifest: { ...draft, training: { ...draft.training, method: 'full' } },
    });
    await registry.add(staging);
    const base = { config: tinyConfig, sha256: BASE_SHA };

    assert.equal(await loadActive(registry, 'complete', base), null);
    await registry.activate(lora.id, 'complete');
    await registry.activate(full.id, 'review');
    const complete = await loadActive(registry, 'complete', base);
    assert.equal(complete?.kind, 'lora');
    assert.equal(complete?.kind === 'lora' && complete.adapter.manifest?.id, lora.id);
    const review = await loadActive(registry, 'review', base);
    assert.equal(review?.kind === 'full' && review.model.manifest.id, full.id);
    assert.deepEqual(
      (await registry.list()).map((entry) => entry.kind),
      ['lora', 'full'],
    );
    await assert.rejects(
      loadActive(registry, 'complete', { config: tinyConfig, sha256: '0'.repeat(64) }),
      /wrong base model/,
    );
  });

  it('clears temp folders of dead writers from staging, and keeps those of live ones', async () => {
    const deadPid = spawnSync(process.execPath, ['-e', '0']).pid!;
    const staging = path.join(repo, '.idiom', 'staging');
    const dead = path.join(staging, `.run-1.tmp-${deadPid}-0a0b`);
    const live = path.join(staging, `.run-2.tmp-${process.pid}-0c0d`);
    const finished = path.join(staging, 'run-3');
    for (const dir of [dead, live, finished]) fs.mkdirSync(dir, { recursive: true });
    await Registry.open(repo);
    assert.ok(fs.existsSync(dead), 'opening tidies nothing');
    await addAdapter(registry, 1); // a change does
    assert.deepEqual([fs.existsSync(dead), fs.existsSync(live), fs.existsSync(finished)], [false, true, true]);
  });

  it('serves compliance only from adapters trained for compliance', async () => {
    const plain = await addAdapter(registry, 1);
    const audited = await addAdapter(registry, 2, { mode: 'compliance' });
    await assert.rejects(registry.activate(plain.id, 'compliance'), /only an adapter trained for compliance/);
    await registry.activate(audited.id, 'compliance');
    await assert.rejects(registry.activate(plain.id, 'everything' as Mode), /unknown mode "everything"/);
  });

  describe('promotion', () => {
    it('activates only a candidate that beats the base and the active adapter (losses from manifests)', async () => {
      const first = await addAdapter(registry, 1, { baseLoss: 2.0, adapterLoss: 1.5 });
      const worseThanBase = await addAdapter(registry, 2, { baseLoss: 2.0, adapterLoss: 2.1 });
      const worseThanActive = await addAdapter(registry, 3, { baseLoss: 2.0, adapterLoss: 1.7 });
      const better = await addAdapter(registry, 4, { baseLoss: 2.0, adapterLoss: 1.4 });

      const r1 = await registry.promote(first.id, 'complete');
      assert.equal(r1.activated, true, r1.reason);
      assert.match(r1.reason, /beats the base model's 2\.0000; no adapter was active/);

      const r2 = await registry.promote(worseThanBase.id, 'complete');
      assert.deepEqual(
        [r2.activated, r2.candidateLoss, r2.baseLoss],
        [false, worseThanBase.metrics.adapter!.loss, worseThanBase.metrics.base!.loss],
      );
      assert.match(r2.reason, /does not beat the base model's/);

      const r3 = await registry.promote(worseThanActive.id, 'complete');
      assert.deepEqual([r3.activated, r3.activeId, r3.activeLoss], [false, first.id, first.metrics.adapter!.loss]);
      assert.match(r3.reason, /does not beat active adapter .* \(from its own manifest\)/);
      assert.equal(await registry.activeId('complete'), first.id);

      const r4 = await registry.promote(better.id, 'complete');
      assert.equal(r4.activated, true, r4.reason);
      assert.equal(await registry.activeId('complete'), better.id);

      const forced = await registry.promote(worseThanBase.id, 'complete', { force: true });
      assert.equal(forced.activated, true);
      assert.match(forced.reason, /^forced: /);
      assert.equal(await registry.activeId('complete'), worseThanBase.id);
      const history = (await registry.readState()).history.map((e) => [e.action, e.to]);
      assert.deepEqual(history, [
        ['promote', first.id],
        ['promote', better.id],
        ['promote', worseThanBase.id],
      ]);
    });

    it('prefers the candidate’s own evaluation of the active adapter on the same split', async () => {
      const active = await addAdapter(registry, 1, { baseLoss: 2.0, adapterLoss: 1.0 });
      await registry.activate(active.id, 'complete');
      // On its own (older) split the active adapter looked better, but on the candidate's split it is worse.
      const candidate = await addAdapter(registry, 2, {
        baseLoss: 1.9,
        adapterLoss: 1.2,
        metrics: { base: metrics(1.9), adapter: metrics(1.2), others: { [active.id]: metrics(1.3) } },
      });
      const result = await registry.promote(candidate.id, 'complete');
      assert.equal(result.activated, true, result.reason);
      assert.equal(result.activeLoss, candidate.metrics.others![active.id].loss);
      assert.match(result.reason, /on the same held-out split/);
    });

    it('is a pure function of the manifests', () => {
      const weights = { files: ['adapter_model.safetensors'], sha256: 'e'.repeat(64), bytes: 1 };
      const make = (second: number, base: number | null, adapter: number | null) =>
        completeManifest(
          draftManifest({
            created: new Date(Date.UTC(2026, 0, 1, 0, 0, second)).toISOString(),
            baseLoss: base,
            adapterLoss: adapter,
          }),
          weights,
        );
      const active = make(1, 2.0, 1.5);
      const cases: Array<[AdapterManifest, boolean]> = [
        [make(2, 2.0, 1.4), true],
        [make(3, 2.0, 1.5), false], // a tie does not beat
        [make(4, 1.4, 1.45), false], // beats the active one but not its own base
        [make(5, 2.0, null), false], // no metrics
        [make(6, null, 1.0), false], // no base loss to compare with
      ];
      for (const [candidate, expected] of cases) {
        const decision = decidePromotion({ candidate, activeId: active.id, active, force: false });
        const beatsBoth =
          candidate.metrics.adapter !== null &&
          candidate.metrics.base !== null &&
          candidate.metrics.adapter.loss < candidate.metrics.base.loss &&
          candidate.metrics.adapter.loss < active.metrics.adapter!.loss;
        assert.equal(decision.activated, beatsBoth, decision.reason);
        assert.equal(decision.activated, expected, decision.reason);
        assert.equal(decidePromotion({ candidate, activeId: active.id, active, force: true }).activated, true);
      }
    });

    it('also needs the candidate not to lose on the replayed held-out lines', () => {
      const weights = { files: ['adapter_model.safetensors'], sha256: 'e'.repeat(64), bytes: 1 };
      const active = completeManifest(
        draftManifest({ created: new Date(Date.UTC(2026, 0, 1)).toISOString(), baseLoss: 2.0, adapterLoss: 1.5 }),
        weights,
      );
      const score = (exactMatch: number, acceptedCharShare: number) => ({
        shown: 0.5,
        exactMatch,
        acceptedCharShare,
        precision: exactMatch / 0.5,
      });
      const withReplay = (
        second: number,
        candidate: ReturnType<typeof score>,
        reference: ReturnType<typeof score>,
      ): AdapterManifest => {
        const manifest = completeManifest(
          draftManifest({
            created: new Date(Date.UTC(2026, 0, 1, 0, 0, second)).toISOString(),
            baseLoss: 2.0,
            adapterLoss: 1.4,
          }),
          weights,
        );
        return {
          ...manifest,
          metrics: {
            ...manifest.metrics,
            quality: { lines: 10, points: 20, seed: 1, candidate, reference: { name: active.id, score: reference } },
          },
        };
      };
      const cases: Array<[AdapterManifest, boolean]> = [
        [withReplay(2, score(0.3, 0.2), score(0.2, 0.3)), true], // more exact lines
        [withReplay(3, score(0.2, 0.3), score(0.2, 0.2)), true], // as many, more accepted characters
        [withReplay(4, score(0.2, 0.2), score(0.2, 0.2)), true], // a tie does not lose
        [withReplay(5, score(0.1, 0.4), score(0.2, 0.1)), false], // fewer exact lines
        [withReplay(6, score(0.2, 0.1), score(0.2, 0.2)), false], // as many, fewer accepted characters
      ];
      for (const [candidate, expected] of cases) {
        const decision = decidePromotion({ candidate, activeId: active.id, active, force: false });
        assert.equal(decision.activated, expected, decision.reason);
        assert.match(decision.reason, /replayed held-out lines/);
        const forced = decidePromotion({ candidate, activeId: active.id, active, force: true });
        assert.equal(forced.activated, true);
        if (!expected) assert.match(forced.reason, /^forced: .*loses on replayed/);
      }
    });
  });
});
