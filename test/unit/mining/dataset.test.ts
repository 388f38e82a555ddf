import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { buildDataset, type DatasetSummary } from '../../../trainer/data/dataset/build';
import { DatasetReader } from '../../../trainer/data/dataset/reader';
import { tokenizeExample } from '../../../trainer/data/dataset/tokenize';
import { trainByteLevelBpe } from '../../../trainer/model/tokenizer/bpe-trainer';
import { Tokenizer } from '../../../trainer/model/tokenizer/tokenizer';
import { removeDir } from '../../fixtures/mining/git-repo';
import { buildSampleRepo, tsModule, type SampleRepo } from '../../fixtures/mining/sample-repo';

const pythonReader = path.join(__dirname, '..', '..', '..', 'trainer', 'data', 'dataset', 'idiom_dataset.py');

function smallTokenizer(): { tokenizer: Tokenizer; sha256: string } {
  const json = trainByteLevelBpe([tsModule('train', 30), 'def f(x):\n    return x\n'], { vocabSize: 600 });
  const text = JSON.stringify(json);
  return { tokenizer: Tokenizer.fromJson(text), sha256: createHash('sha256').update(text).digest('hex') };
}

describe('dataset: tokenised examples, file writer and readers', () => {
  const { tokenizer, sha256 } = smallTokenizer();
  const fim = tokenizer.fim!;
  const eos = tokenizer.eos!;

  describe('tokenizeExample', () => {
    const base = { path: 'a.ts', language: 'typescript', split: 'train' as const };

    it('lays out FIM in PSM order with the loss on middle + eos', () => {
      const [piece] = tokenizeExample(
        { ...base, kind: 'fim-line-rest', prefix: 'const a = ', middle: 'compute(1);', suffix: '\nexport { a };\n' },
        tokenizer,
        256,
      );
      const ids = Array.from(piece.tokens);
      assert.equal(ids[0], fim.prefix);
      const suffixAt = ids.indexOf(fim.suffix);
      const middleAt = ids.indexOf(fim.middle);
      assert.equal(tokenizer.decode(ids.slice(1, suffixAt)), 'const a = ');
      assert.equal(tokenizer.decode(ids.slice(suffixAt + 1, middleAt)), '\nexport { a };\n');
      assert.equal(piece.lossStart, middleAt + 1);
      assert.equal(tokenizer.decode(ids.slice(piece.lossStart, -1)), 'compute(1);');
      assert.equal(ids[ids.length - 1], eos);
    });

    it('trims FIM context to maxTokens, keeping the middle whole and the context nearest to it', () => {
      const prefix = `${'x'.repeat(10)}\n${tsModule('far', 4)}`;
      const suffix = tsModule('after', 4);
      const [piece] = tokenizeExample(
        { ...base, kind: 'fim-block', prefix, middle: '  return 42;\n', suffix },
        tokenizer,
        64,
      );
      assert.equal(piece.tokens.length, 64);
      const ids = Array.from(piece.tokens);
      const middleText = tokenizer.decode(ids.slice(piece.lossStart, -1));
      assert.equal(middleText, '  return 42;\n');
      const prefixText = tokenizer.decode(ids.slice(1, ids.indexOf(fim.suffix)));
      assert.ok(prefix.endsWith(prefixText) && prefixText.length > 0);
      const suffixText = tokenizer.decode(ids.slice(ids.indexOf(fim.suffix) + 1, ids.indexOf(fim.middle)));
      assert.ok(suffix.startsWith(suffixText) && suffixText.length > 0);
    });

    it('drops a FIM example whose middle cannot fit, and splits long plain windows', () => {
      assert.deepEqual(
        tokenizeExample(
          { ...base, kind: 'fim-block', prefix: '', middle: tsModule('m', 3), suffix: '' },
          tokenizer,
          32,
        ),
        [],
      );
      const text = tsModule('long', 6);
      const pieces = tokenizeExample({ ...base, kind: 'plain', text, endsFile: true }, tokenizer, 50);
      assert.ok(pieces.length > 2);
      assert.ok(pieces.every((piece) => piece.tokens.length <= 50 && piece.lossStart === 0));
      const ids = pieces.flatMap((piece) => Array.from(piece.tokens));
      assert.equal(ids[ids.length - 1], eos);
      assert.equal(tokenizer.decode(ids.slice(0, -1)), text);
      assert.deepEqual(
        pieces.map((piece) => piece.flags),
        pieces.map((_, i) => (i > 0 ? 2 : 0) | (i === pieces.length - 1 ? 1 : 0)),
      );
    });

    it('encodes special-token text in a source file as text', () => {
      const [piece] = tokenizeExample(
        { ...base, kind: 'plain', text: 'const s = "<|endoftext|><|fim_prefix|>";\n', endsFile: false },
        tokenizer,
        256,
      );
      assert.ok(!piece.tokens.includes(eos) && !piece.tokens.includes(fim.prefix));
    });
  });

  describe('on a real repository', () => {
    let sample: SampleRepo;
    let first: DatasetSummary;
    let fileA: string;
    let fileB: string;

    before(async () => {
      sample = buildSampleRepo();
      fileA = path.join(sample.base, 'out', 'a.idiomds');
      fileB = path.join(sample.base, 'out', 'b.idiomds');
      first = await buildDataset(sample.root, { tokenizer, tokenizerSha256: sha256, output: fileA, maxTokens: 256 });
      await buildDataset(sample.root, { tokenizer, tokenizerSha256: sha256, output: fileB, maxTokens: 256 });
    });
    after(() => removeDir(sample.base));

    it('writes byte-identical datasets on two runs', () => {
      assert.ok(fs.readFileSync(fileA).equals(fs.readFileSync(fileB)));
      assert.equal(first.dataset?.sha256, createHash('sha256').update(fs.readFileSync(fileA)).digest('hex'));
      assert.deepEqual(fs.readdirSync(path.dirname(fileA)).sort(), ['a.idiomds', 'b.idiomds'], 'no temp files left');
    });

    it('reads back every example with its split, kind and loss mask', () => {
      const reader = DatasetReader.open(fileA);
      try {
        const { header } = reader;
        assert.equal(header.tokenizer.sha256, sha256);
        assert.deepEqual(header.split.heldOutCommits, [sample.commits[sample.commits.length - 1].id]);
        assert.equal(reader.count, first.examples);
        let tokens = 0;
        let heldOut = 0;
        const texts: string[] = [];
        for (const { record, tokens: ids } of reader.examples()) {
          tokens += ids.length;
          assert.ok(ids.length <= 256);
          const file = header.files[record.file];
          assert.equal(record.split, file.split);
          if (record.split === 'heldout') {
            heldOut++;
            assert.equal(file.path, 'src/feature.ts');
          }
          if (record.kind === 'plain') assert.equal(record.lossStart, 0);
          else {
            assert.equal(ids[record.lossStart - 1], fim.middle);
            assert.equal(ids[ids.length - 1], eos);
          }
          texts.push(tokenizer.decode(Array.from(ids)));
        }
        assert.equal(tokens, header.counts.tokens);
        assert.equal(tokens, first.tokens);
        assert.equal(heldOut, header.counts.heldout.examples);
        assert.ok(heldOut > 0);
        const heldOutFile = header.files.find((file) => file.split === 'heldout')!;
        assert.deepEqual(heldOutFile.changedLines, [
          [sample.heldOutLines[0], sample.heldOutLines[sample.heldOutLines.length - 1]],
        ]);
        const all = texts.join('\n');
        assert.ok(all.includes('export function util0('));
        for (const line of sample.heldOutText.filter((l) => l.length > 3)) {
          const inTrain = [...reader.examples('train')].some(({ tokens: ids }) =>
            tokenizer.decode(Array.from(ids)).includes(line),
          );
          assert.ok(!inTrain, 'held-out line in a training example');
        }
        assert.equal(reader.tokens(0).length, reader.record(0).length);
      } finally {
        reader.close();
      }
    });

    it('lets no planted canary reach any output file, as bytes or as decoded tokens', () => {
      const bytes = fs.readFileSync(fileA);
      const reader = DatasetReader.open(fileA);
      let decoded = '';
      try {
        for (const { tokens: ids } of reader.examples()) decoded += `${tokenizer.decode(Array.from(ids))}\n`;
      } finally {
        reader.close();
      }
      const canaries = [...sample.secrets.map((secret) => secret.canary), sample.historyCanary, sample.outsideCanary];
      assert.ok(canaries.length >= 22);
      for (const canary of canaries) {
        assert.ok(!decoded.includes(canary), `canary in decoded tokens: ${canary.slice(0, 6)}…`);
        assert.equal(bytes.indexOf(Buffer.from(canary)), -1);
        assert.ok(!JSON.stringify(first).includes(canary));
      }
    });

    it('is readable from Python with the same tokens', function () {
      const probe = spawnSync('python3', ['--version'], { encoding: 'utf8' });
      if (probe.status !== 0) this.skip();
      const run = spawnSync('python3', [pythonReader, fileA], { encoding: 'utf8' });
      assert.equal(run.status, 0, run.stderr);
      const fromPython = JSON.parse(run.stdout) as {
        examples: number;
        tokens: number;
        checksum: number;
        targets: number;
        heldOutCommits: string[];
      };
      const reader = DatasetReader.open(fileA);
      let checksum = 0n;
      let targets = 0;
      try {
        for (const { tokens: ids, record } of reader.examples()) {
          ids.forEach((token, position) => {
            checksum = (checksum * 31n + BigInt(token) + BigInt(position)) % 1000000007n;
          });
          targets += ids.length - Math.max(1, record.lossStart);
        }
        assert.deepEqual(fromPython, {
          examples: reader.count,
          tokens: reader.header.counts.tokens,
          checksum: Number(checksum),
          targets,
          heldOutCommits: reader.header.split.heldOutCommits,
        });
      } finally {
        reader.close();
      }
    });

    it('rejects truncated or corrupt files with one line', () => {
      const bytes = fs.readFileSync(fileA);
      const broken = path.join(sample.base, 'broken.idiomds');
      const cases: [Buffer, RegExp][] = [
        [bytes.subarray(0, bytes.length - 10), /header offset\/length/],
        [Buffer.concat([Buffer.from('NOTADATA'), bytes.subarray(8)]), /wrong magic/],
        [bytes.subarray(0, 12), /too short/],
      ];
      const badJson = Buffer.from(bytes);
      badJson[bytes.readUInt32LE(8) + 1] = 0x7b; // '{' inside the header: no longer JSON
      cases.push([badJson, /not JSON/]);
      for (const [content, message] of cases) {
        fs.writeFileSync(broken, content);
        assert.throws(
          () => DatasetReader.open(broken),
          (error: Error) => message.test(error.message) && !error.message.includes('\n'),
        );
      }
      // An index record pointing outside the tokens.
      const badIndex = Buffer.from(bytes);
      const reader = DatasetReader.open(fileA);
      const indexOffset = reader.header.sections.index.offset;
      reader.close();
      badIndex.writeUInt32LE(0xfffffff, indexOffset + 8);
      fs.writeFileSync(broken, badIndex);
      const corrupt = DatasetReader.open(broken);
      try {
        assert.throws(() => corrupt.record(0), /outside the token section/);
      } finally {
        corrupt.close();
      }
      assert.throws(() => DatasetReader.open(path.join(sample.base, 'missing.idiomds')), /cannot open dataset/);
    });
  });
});
