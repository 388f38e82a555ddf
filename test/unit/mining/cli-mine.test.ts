import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { defaultTokenizerPath } from '../../../trainer/cli/commands/mine';
import { DatasetReader } from '../../../trainer/data/dataset/reader';
import { trainByteLevelBpe } from '../../../trainer/model/tokenizer/bpe-trainer';
import { removeDir, tempDir } from '../../fixtures/mining/git-repo';
import { buildSampleRepo, tsModule, type SampleRepo } from '../../fixtures/mining/sample-repo';

const bin = path.join(__dirname, '..', '..', '..', 'trainer', 'cli', 'bin.js');

function idiom(args: string[]) {
  return spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', maxBuffer: 1 << 26 });
}

describe('idiom mine (CLI)', () => {
  let sample: SampleRepo;
  let tokenizerFile: string;

  before(() => {
    sample = buildSampleRepo();
    tokenizerFile = path.join(sample.base, 'tokenizer.json');
    fs.writeFileSync(tokenizerFile, JSON.stringify(trainByteLevelBpe([tsModule('cli', 20)], { vocabSize: 500 })));
  });
  after(() => removeDir(sample.base));

  it('prints the summary as one JSON object and writes identical datasets on two runs', () => {
    const outA = path.join(sample.base, 'a.idiomds');
    const outB = path.join(sample.base, 'b.idiomds');
    const runA = idiom([
      'mine',
      sample.root,
      '--json',
      '--tokenizer',
      tokenizerFile,
      '--out',
      outA,
      '--max-tokens',
      '512',
    ]);
    assert.equal(runA.status, 0, runA.stderr);
    const runB = idiom([
      'mine',
      sample.root,
      '--json',
      '--tokenizer',
      tokenizerFile,
      '--out',
      outB,
      '--max-tokens',
      '512',
    ]);
    assert.equal(runB.status, 0, runB.stderr);
    assert.ok(fs.readFileSync(outA).equals(fs.readFileSync(outB)), 'datasets differ between runs');

    assert.equal(runA.stdout.trim().split('\n').length, 1);
    const result = JSON.parse(runA.stdout);
    assert.equal(result.files.kept, sample.kept.length);
    assert.equal(result.files.excluded.secret + result.files.excluded['secret-file'], sample.secrets.length);
    assert.equal(result.secretsExcluded, sample.secrets.length);
    assert.equal(typeof result.examples, 'number');
    assert.ok(result.examples > 0);
    assert.equal(
      Object.values(result.languages as Record<string, number>).reduce((a, b) => a + b, 0),
      result.files.kept,
    );
    const reader = DatasetReader.open(outA);
    try {
      assert.equal(result.tokens, reader.header.counts.tokens);
      assert.equal(result.dataset.sha256.length, 64);
      assert.deepEqual(result.split.heldOutCommits, reader.header.split.heldOutCommits);
    } finally {
      reader.close();
    }
    for (const canary of [...sample.secrets.map((s) => s.canary), sample.historyCanary, sample.outsideCanary]) {
      assert.ok(!runA.stdout.includes(canary) && !runA.stderr.includes(canary));
    }
  });

  it('prints a human summary and throughput stats', () => {
    const run = idiom(['mine', sample.root, '--tokenizer', tokenizerFile, '--stats']);
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /files kept\s+\d+ of \d+ tracked/);
    assert.match(run.stdout, /secret-file\s+\d+/);
    assert.match(run.stdout, /throughput\s+[\d.]+ MB\/s, peak RSS \d+ MB/);
    const json = JSON.parse(idiom(['mine', sample.root, '--json', '--stats']).stdout);
    assert.ok(json.stats.mbPerSecond > 0 && json.stats.peakRssMb > 0);
  });

  it('reports tokens as null with a note on stderr when there is no tokenizer', function () {
    if (defaultTokenizerPath()) this.skip(); // a default model is installed: tokens are counted with it
    const run = idiom(['mine', sample.root, '--json']);
    assert.equal(run.status, 0, run.stderr);
    assert.equal(JSON.parse(run.stdout).tokens, null);
    assert.match(run.stderr, /no tokenizer/);
  });

  it('fails with one line for a folder outside git and for bad options', () => {
    const plain = tempDir('cli-plain');
    try {
      const run = idiom(['mine', plain, '--json']);
      assert.equal(run.status, 1);
      assert.equal(run.stdout, '');
      assert.match(run.stderr.trim(), /^idiom: not a git repository: /);
      assert.equal(run.stderr.trim().split('\n').length, 1);
      const bad = idiom(['mine', sample.root, '--fim-rate', '2']);
      assert.notEqual(bad.status, 0);
      assert.match(bad.stderr, /--fim-rate must be a number in \[0, 1\]/);
    } finally {
      removeDir(plain);
    }
  });
});
