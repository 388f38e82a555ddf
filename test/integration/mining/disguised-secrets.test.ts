import { strict as assert } from 'node:assert';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DatasetReader } from '../../../trainer/data/dataset/reader';
import { languageForPath } from '../../../trainer/data/mining/languages';
import { trainByteLevelBpe } from '../../../trainer/model/tokenizer/bpe-trainer';
import { Tokenizer } from '../../../trainer/model/tokenizer/tokenizer';
import { commitFiles, initRepo, removeDir, tempDir } from '../../fixtures/mining/git-repo';
import {
  DISGUISE_LOOKALIKES,
  disguisedSecrets,
  plantedSecrets,
  SECRET_LOOKALIKES,
} from '../../fixtures/mining/planted-secrets';
import { tsModule } from '../../fixtures/mining/sample-repo';

const checkout = path.join(__dirname, '..', '..', '..');
const bin = path.join(checkout, 'trainer', 'cli', 'bin.js');

// Credentials split across `+`, base64-encoded, or named only by their context (a connection
// string, a command line, a call argument) sit in ordinary source files of a real git
// repository beside this repository's own sources. `idiom mine --out` must drop every file that
// holds one, keep every other file, and no piece of any credential may be in the dataset.
describe('idiom mine: disguised credentials never reach the dataset', function () {
  this.timeout(300_000);
  let base: string;
  let root: string;
  let tokenizerFile: string;
  const disguised = disguisedSecrets();
  const planted = plantedSecrets().filter((secret) => secret.expected === 'secret');
  const ownSources: Record<string, string> = {};

  before(() => {
    base = tempDir('disguised');
    root = initRepo(path.join(base, 'repo'));
    // This repository's own sources: ordinary code that talks about tokens, keys and passwords.
    const tracked = execFileSync('git', ['ls-files', 'trainer', 'server', 'extension', 'test'], {
      cwd: checkout,
      encoding: 'utf8',
    });
    for (const file of tracked.split('\n')) {
      if (!file || !languageForPath(file) || !fs.existsSync(path.join(checkout, file))) continue;
      ownSources[`own/${file}`] = fs.readFileSync(path.join(checkout, file), 'utf8');
    }
    const files: Record<string, string> = { ...ownSources, ...SECRET_LOOKALIKES, ...DISGUISE_LOOKALIKES };
    for (const secret of [...disguised, ...planted]) files[secret.path] = secret.content;
    commitFiles(root, '2024-01-01T10:00:00Z', 'initial', files);
    tokenizerFile = path.join(base, 'tokenizer.json');
    fs.writeFileSync(tokenizerFile, JSON.stringify(trainByteLevelBpe([tsModule('disguised', 20)], { vocabSize: 400 })));
  });
  after(() => removeDir(base));

  it('drops every file with a credential, keeps the rest, and leaks no piece of any credential', async () => {
    assert.ok(disguised.length >= 16 && Object.keys(ownSources).length >= 100);
    const out = path.join(base, 'data.idiomds');
    const run = spawnSync(process.execPath, [bin, 'mine', root, '--json', '--tokenizer', tokenizerFile, '--out', out], {
      encoding: 'utf8',
      maxBuffer: 1 << 26,
    });
    assert.equal(run.status, 0, run.stderr);
    const result = JSON.parse(run.stdout) as { files: { excluded: Record<string, number> }; secretsExcluded: number };

    // Files of a mined language are excluded as secrets; the others are not mined at all.
    const mined = [...disguised, ...planted].filter((secret) => languageForPath(secret.path));
    const missed = mined.length - (result.files.excluded.secret ?? 0);
    assert.equal(missed, 0, `${missed} of ${mined.length} files with a credential were mined`);
    // No ordinary file is dropped as a secret: the count is exactly the planted ones.
    assert.equal(result.files.excluded.secret, mined.length);

    const tokenizer = await Tokenizer.load(tokenizerFile);
    const reader = DatasetReader.open(out);
    let decoded = '';
    try {
      for (const { tokens } of reader.examples()) decoded += `${tokenizer.decode(Array.from(tokens))}\n`;
    } finally {
      reader.close();
    }
    const bytes = fs.readFileSync(out);
    const canaries = [...disguised.flatMap((secret) => secret.canaries), ...planted.map((secret) => secret.canary)];
    const leaked = canaries.filter((canary) => decoded.includes(canary) || bytes.includes(Buffer.from(canary)));
    assert.deepEqual(
      leaked.map((canary) => `${canary.slice(0, 4)}…`),
      [],
      `${leaked.length} of ${canaries.length} credential pieces reached the dataset`,
    );
    for (const canary of canaries) assert.ok(!run.stdout.includes(canary) && !run.stderr.includes(canary));
    // The lookalikes did reach it (they were mined, not dropped for another reason).
    assert.ok(decoded.includes('Basic authentication sends the user and password'));
  });
});
