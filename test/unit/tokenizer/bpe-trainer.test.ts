import { strict as assert } from 'node:assert';
import { Rng } from '../../../trainer/model/random';
import {
  DEFAULT_SPECIAL_TOKENS,
  trainByteLevelBpe,
  trainByteLevelBpeWithStats,
} from '../../../trainer/model/tokenizer/bpe-trainer';
import { Tokenizer } from '../../../trainer/model/tokenizer/tokenizer';
import { heldOutText, trainingTexts, trickyCode } from './corpus';

/** Random strings over a mix of scripts, astral characters, controls and whitespace. */
function randomTexts(seed: number, count: number): string[] {
  const rng = new Rng(seed);
  const ranges: Array<[number, number]> = [
    [0x00, 0x7f],
    [0xa0, 0x24f],
    [0x370, 0x3ff],
    [0x4e00, 0x4e80],
    [0x1f300, 0x1f64f],
    [0x2000, 0x206f],
  ];
  const texts: string[] = [];
  for (let t = 0; t < count; t++) {
    let text = '';
    for (let i = rng.int(60); i >= 0; i--) {
      const [low, high] = ranges[rng.int(ranges.length)];
      text += String.fromCodePoint(low + rng.int(high - low + 1));
    }
    texts.push(text);
  }
  return texts;
}

describe('byte-level BPE trainer', () => {
  const texts = trainingTexts();
  const trained = trainByteLevelBpeWithStats(texts, { vocabSize: 2000 });
  const tokenizer = Tokenizer.fromJson(trained.tokenizer);

  it('produces a tokenizer.json the library loads, with contiguous ids and consistent merges', () => {
    const json = trained.tokenizer;
    assert.equal(trained.stats.vocabSize, 2000);
    assert.equal(tokenizer.vocabSize, 2000);
    const ids = Object.values(json.model.vocab).sort((a, b) => a - b);
    assert.deepEqual(
      ids,
      Array.from({ length: ids.length }, (_, i) => i),
    );
    assert.equal(json.model.merges.length, trained.stats.merges);
    for (const merge of json.model.merges) {
      const [left, right, extra] = merge.split(' ');
      assert.equal(extra, undefined, `merge "${merge}" has two parts`);
      assert.ok(left in json.model.vocab && right in json.model.vocab && left + right in json.model.vocab, merge);
    }
    // Round trip through JSON text, as it is stored on disk.
    assert.equal(Tokenizer.fromJson(JSON.stringify(json)).vocabSize, 2000);
  });

  it('segments the training corpus exactly as the library encodes it', () => {
    const libraryTokens = texts.reduce((sum, text) => sum + tokenizer.encode(text).length, 0);
    assert.equal(trained.stats.corpusTokens, libraryTokens);
  });

  it('round-trips code with unicode, emoji, CRLF and tabs exactly', () => {
    for (const text of [trickyCode, heldOutText().slice(0, 20000), ...randomTexts(3, 200), '', ' ', '\r\n', '\t\t']) {
      const ids = tokenizer.encode(text);
      assert.ok(ids.every((id) => Number.isInteger(id) && id >= 0 && id < tokenizer.vocabSize));
      assert.equal(tokenizer.decode(ids), text, JSON.stringify(text.slice(0, 40)));
    }
  });

  it('encodes every special token to its single id', () => {
    assert.deepEqual(tokenizer.fim, {
      family: 'qwen',
      bos: null,
      end: null,
      prefix: tokenizer.tokenId('<|fim_prefix|>'),
      suffix: tokenizer.tokenId('<|fim_suffix|>'),
      middle: tokenizer.tokenId('<|fim_middle|>'),
    });
    assert.equal(tokenizer.eos, tokenizer.tokenId('<|endoftext|>'));
    assert.equal(tokenizer.fileSeparator, tokenizer.tokenId('<|file_sep|>'));
    for (const [index, special] of DEFAULT_SPECIAL_TOKENS.entries()) {
      assert.deepEqual(tokenizer.encode(special), [index]);
      const ids = tokenizer.encode(`x = 1;${special}y = 2;`);
      assert.equal(ids.filter((id) => id === index).length, 1);
      assert.equal(tokenizer.decode(ids), `x = 1;${special}y = 2;`);
    }
    // Specials inside the training text are not learned as ordinary pieces.
    const withSpecials = trainByteLevelBpe(['a<|endoftext|>b '.repeat(50)], { vocabSize: 300 });
    assert.ok(
      !Object.keys(withSpecials.model.vocab).some(
        (token) => token.includes('|>') && token !== '<|endoftext|>' && !DEFAULT_SPECIAL_TOKENS.includes(token),
      ),
    );
  });

  it('compresses held-out code better as the vocabulary grows', () => {
    const heldOut = heldOutText();
    const bytes = Buffer.byteLength(heldOut, 'utf8');
    const bytesPerToken = [300, 600, 1200, 2400].map((vocabSize) => {
      const tok = Tokenizer.fromJson(trainByteLevelBpe(texts, { vocabSize }));
      return bytes / tok.encode(heldOut).length;
    });
    for (let i = 1; i < bytesPerToken.length; i++) {
      assert.ok(
        bytesPerToken[i] > bytesPerToken[i - 1],
        `bytes/token ${bytesPerToken.map((x) => x.toFixed(2)).join(' < ')}`,
      );
    }
    assert.ok(bytesPerToken[0] > 1, 'even the smallest vocabulary beats one byte per token');
  });

  it('is deterministic and honours minFrequency and custom specials', () => {
    const again = trainByteLevelBpe(texts, { vocabSize: 2000 });
    assert.equal(JSON.stringify(again), JSON.stringify(trained.tokenizer));

    const sparse = trainByteLevelBpeWithStats(['abc abc abd xyz'], {
      vocabSize: 5000,
      minFrequency: 2,
      specialTokens: ['<s>'],
    });
    assert.ok(sparse.stats.vocabSize < 5000, 'stops when no pair is frequent enough');
    assert.equal(sparse.tokenizer.model.vocab['<s>'], 0);
    assert.equal(sparse.tokenizer.added_tokens.length, 1);
    // Pre-tokens "abc", " abc", " abd", " xyz". (a,b) occurs 3 times and merges first; then (Ġ,ab)
    // and (ab,c) tie at 2 and the smaller pair key (Ġ is byte 0x20) wins; every other pair occurs once.
    assert.deepEqual(sparse.tokenizer.model.merges, ['a b', 'Ġ ab']);
    assert.equal(sparse.stats.vocabSize, 1 + 256 + 2);
  });

  it('rejects bad options with one clear error', () => {
    assert.throws(() => trainByteLevelBpe(texts, { vocabSize: 100 }), /vocabSize must be an integer in \[261, \d+\]/);
    assert.throws(
      () => trainByteLevelBpe(texts, { vocabSize: 1000, minFrequency: 0 }),
      /minFrequency must be a positive integer/,
    );
    assert.throws(
      () => trainByteLevelBpe(texts, { vocabSize: 1000, specialTokens: ['<a>', '<a>'] }),
      /distinct and non-empty/,
    );
    assert.throws(
      () => trainByteLevelBpe([42 as unknown as string], { vocabSize: 1000 }),
      /every training text must be a string/,
    );
  });
});
