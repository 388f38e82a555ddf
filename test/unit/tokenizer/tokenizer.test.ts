import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Rng } from '../../../trainer/model/random';
import { trainByteLevelBpe } from '../../../trainer/model/tokenizer/bpe-trainer';
import { Tokenizer } from '../../../trainer/model/tokenizer/tokenizer';
import { heldOutText, trainingTexts, trickyCode } from './corpus';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-tokenizer-'));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

const texts = trainingTexts();
const qwenStyle = trainByteLevelBpe(texts, { vocabSize: 800 });

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

function assertClearError(run: () => unknown, pattern: RegExp): void {
  assert.throws(run, (error: Error) => {
    assert.match(error.message, pattern);
    assert.ok(!error.message.includes('\n'), 'one line');
    return true;
  });
}

describe('Tokenizer', () => {
  it('loads tokenizer.json from a folder or a file path', async () => {
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(qwenStyle));
    const fromDir = await Tokenizer.load(dir);
    const fromFile = await Tokenizer.load(path.join(dir, 'tokenizer.json'));
    assert.equal(fromDir.vocabSize, Object.keys(qwenStyle.model.vocab).length);
    assert.deepEqual(fromDir.encode(trickyCode), fromFile.encode(trickyCode));
    assert.equal(fromDir.source, path.join(dir, 'tokenizer.json'));
  });

  it('finds FIM, end-of-text and file-separator tokens by name, Qwen or StarCoder style', () => {
    const qwen = Tokenizer.fromJson(qwenStyle);
    assert.ok(qwen.fim);
    assert.equal(qwen.idToToken(qwen.fim.prefix), '<|fim_prefix|>');
    assert.equal(qwen.idToToken(qwen.fim.suffix), '<|fim_suffix|>');
    assert.equal(qwen.idToToken(qwen.fim.middle), '<|fim_middle|>');
    assert.equal(qwen.idToToken(qwen.eos!), '<|endoftext|>');
    assert.equal(qwen.idToToken(qwen.fileSeparator!), '<|file_sep|>');
    assert.ok(qwen.specialIds.has(qwen.fim.middle));

    const starcoderSpecials = [
      '<|endoftext|>',
      '<fim_prefix>',
      '<fim_middle>',
      '<fim_suffix>',
      '<fim_pad>',
      '<file_sep>',
    ];
    const starcoder = Tokenizer.fromJson(
      trainByteLevelBpe(
        texts.map((t) => t.slice(0, 5000)),
        { vocabSize: 400, specialTokens: starcoderSpecials },
      ),
    );
    assert.deepEqual(starcoder.fim, {
      family: 'starcoder',
      bos: null,
      end: null,
      prefix: starcoderSpecials.indexOf('<fim_prefix>'),
      suffix: starcoderSpecials.indexOf('<fim_suffix>'),
      middle: starcoderSpecials.indexOf('<fim_middle>'),
    });
    assert.equal(starcoder.fileSeparator, starcoderSpecials.indexOf('<file_sep>'));

    const plain = Tokenizer.fromJson(trainByteLevelBpe(['hello world'], { vocabSize: 270, specialTokens: ['</s>'] }));
    assert.equal(plain.fim, null);
    assert.equal(plain.fileSeparator, null);
    assert.equal(plain.eos, 0);
    assert.equal(plain.tokenId('<|fim_prefix|>'), undefined);
  });

  it('decodes partial UTF-8 without throwing, and tokenBytes gives back the exact bytes', () => {
    const tokenizer = Tokenizer.fromJson(trainByteLevelBpe(['plain ascii only'], { vocabSize: 270 }));
    const text = '😀 ü 日本';
    const ids = tokenizer.encode(text);
    assert.ok(ids.length > 4, 'emoji and CJK split into byte tokens');
    for (let end = 1; end <= ids.length; end++) {
      const partial = tokenizer.decode(ids.slice(0, end)); // must not throw
      assert.equal(typeof partial, 'string');
    }
    assert.equal(tokenizer.decode(ids.slice(0, 1)), '\uFFFD', 'a lone lead byte decodes to U+FFFD');
    assert.deepEqual(concat(ids.map((id) => tokenizer.tokenBytes(id))), new TextEncoder().encode(text));
    const qwen = Tokenizer.fromJson(qwenStyle);
    const codeIds = qwen.encode(trickyCode);
    assert.deepEqual(concat(codeIds.map((id) => qwen.tokenBytes(id))), new TextEncoder().encode(trickyCode));
    assert.deepEqual(qwen.tokenBytes(qwen.eos!), new TextEncoder().encode('<|endoftext|>'));
  });

  it('encodes exactly as the library does (cached path), with and without an NFC normalizer', () => {
    const rng = new Rng(12);
    const samples = [
      trickyCode,
      heldOutText().slice(0, 30000),
      'x<|endoftext|><|fim_prefix|>y<|fim_suffix|>',
      '<|file_sep|>',
      '',
    ];
    for (let i = 0; i < 300; i++) {
      let text = '';
      for (let n = rng.int(40); n >= 0; n--)
        text += String.fromCodePoint([rng.int(128), 0xe9, 0x65, 0x301, 0x1f600, 0x3000, 0x4e2d][rng.int(7)]);
      samples.push(text);
    }
    for (const json of [qwenStyle, { ...qwenStyle, normalizer: { type: 'NFC' } }]) {
      const tokenizer = Tokenizer.fromJson(json);
      for (const text of samples) {
        assert.deepEqual(tokenizer.encode(text), tokenizer.encodeWithLibrary(text), JSON.stringify(text.slice(0, 40)));
        assert.deepEqual(tokenizer.encode(text), tokenizer.encode(text), 'cached ids stay the same');
      }
    }
  });

  it('decodes [] to "" and rejects ids outside the vocabulary with a clear error', () => {
    const tokenizer = Tokenizer.fromJson(qwenStyle);
    assert.equal(tokenizer.decode([]), '');
    assertClearError(
      () => tokenizer.decode([1, tokenizer.vocabSize]),
      /token id 800 is not in the vocabulary \(size 800\)/,
    );
    assertClearError(() => tokenizer.decode([-1]), /token id -1 is not in the vocabulary/);
    assertClearError(() => tokenizer.decode([1.5]), /token id 1.5 is not in the vocabulary/);
  });

  it('can encode special-token text found in files as plain text', () => {
    const tokenizer = Tokenizer.fromJson(qwenStyle);
    const source = 'const stop = "<|endoftext|>"; // and <|fim_prefix|>\n';
    const asSpecial = tokenizer.encode(source);
    const asText = tokenizer.encode(source, { specialsAsText: true });
    assert.ok(asSpecial.includes(tokenizer.eos!));
    assert.ok(!asText.some((id) => tokenizer.specialIds.has(id)));
    assert.equal(tokenizer.decode(asText), source);
    assert.deepEqual(tokenizer.encode(trickyCode, { specialsAsText: true }), tokenizer.encode(trickyCode));
  });

  it('rejects a garbage tokenizer.json with one clear error', async () => {
    const cases: Array<[string | object, RegExp]> = [
      ['{"model": {"type": "BPE", "vocab": {', /bad\.json: invalid tokenizer\.json: not JSON/],
      ['[1, 2, 3]', /must be a JSON object/],
      [{}, /missing "model" object/],
      [{ model: { type: 'BPE', merges: [] } }, /missing "model\.vocab"/],
      [{ model: { type: 'BPE', vocab: { a: 0 } } }, /BPE model needs a "merges" list/],
      [{ model: { type: 'BPE', vocab: { a: 0 }, merges: [] }, added_tokens: 'x' }, /"added_tokens" must be a list/],
      [
        { ...qwenStyle, pre_tokenizer: { type: 'NoSuchPreTokenizer' } },
        /invalid tokenizer\.json: Unknown PreTokenizer type: NoSuchPreTokenizer/,
      ],
      [{ ...qwenStyle, decoder: { type: 'Nope' } }, /invalid tokenizer\.json: .*Nope/],
    ];
    for (const [json, pattern] of cases) assertClearError(() => Tokenizer.fromJson(json, 'bad.json'), pattern);

    // Random bytes written as a file.
    const rng = new Rng(4);
    const garbage = Buffer.from(Array.from({ length: 512 }, () => rng.int(256)));
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), garbage);
    await assert.rejects(Tokenizer.load(dir), (error: Error) => {
      assert.match(error.message, /tokenizer\.json: invalid tokenizer\.json/);
      assert.ok(!error.message.includes('\n'));
      return true;
    });
    await assert.rejects(Tokenizer.load(path.join(dir, 'missing')), /missing: cannot read tokenizer \(ENOENT\)/);
    fs.rmSync(path.join(dir, 'tokenizer.json'));
    await assert.rejects(Tokenizer.load(dir), /tokenizer\.json: cannot read tokenizer \(ENOENT\)/);
  });
});
