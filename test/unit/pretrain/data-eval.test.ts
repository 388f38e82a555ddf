import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { CorpusFile } from '../../../trainer/tools/pretrain/corpus';
import {
  FIM_SEGMENT_CHARS,
  RowSampler,
  WORD_CUT_KEEP,
  encodeTrainingStream,
  randomFimSplit,
  segmentText,
  specialIds,
} from '../../../trainer/tools/pretrain/data';
import {
  fimPromptAt,
  pickLines,
  promptBefore,
  scoringWindows,
  xzCompressedBytes,
} from '../../../trainer/tools/pretrain/evaluate';
import { learningRateAt, DEFAULT_HYPERPARAMETERS } from '../../../trainer/tools/pretrain/train';
import { trainingFlopsPerToken } from '../../../trainer/tools/pretrain/vocab';
import { Rng } from '../../../trainer/model/random';
import { trainByteLevelBpe } from '../../../trainer/model/tokenizer/bpe-trainer';
import { Tokenizer } from '../../../trainer/model/tokenizer/tokenizer';

const ROOT = path.join(__dirname, '..', '..', '..');
// Real files of this repository stand in for a corpus.
const files: CorpusFile[] = [
  'trainer/tools/pretrain/corpus.ts',
  'trainer/tools/pretrain/data.ts',
  'trainer/tools/pretrain/evaluate.ts',
  'trainer/tools/pretrain/train.ts',
].map((p) => ({
  source: 'idiom',
  path: p,
  language: 'typescript',
  text: fs.readFileSync(path.join(ROOT, p), 'utf8'),
}));
const tokenizer = Tokenizer.fromJson(
  trainByteLevelBpe(
    files.map((f) => f.text),
    { vocabSize: 600 },
  ),
);

describe('pretrain data', () => {
  it('segments at line ends within the budget and loses nothing', () => {
    for (const f of files) {
      const segments = segmentText(f.text);
      assert.equal(segments.join(''), f.text);
      for (const s of segments) assert.ok(s.length <= FIM_SEGMENT_CHARS);
      assert.ok(segments.slice(0, -1).every((s) => s.endsWith('\n') || s.length === FIM_SEGMENT_CHARS));
    }
  });

  it('FIM splits reassemble to the text and never cut a surrogate pair', () => {
    const rng = new Rng(3);
    const text = 'const smile = "😀😀😀";\n'.repeat(5);
    for (let i = 0; i < 200; i++) {
      const s = randomFimSplit(text, rng);
      assert.equal(s.prefix + s.middle + s.suffix, text);
      for (const part of [s.prefix, s.middle, s.suffix]) assert.ok(!/^[\uDC00-\uDFFF]|[\uD800-\uDBFF]$/.test(part));
    }
  });

  it("'word' cuts put most span ends at word boundaries; 'char' cuts mostly fall inside words", () => {
    const text =
      'export function invoiceTotal(invoice: Invoice): number {\n  return invoice.lines.reduce((sum, line) => sum + line.price, 0);\n}\n';
    const insideWord = (cuts: 'char' | 'word'): number => {
      const rng = new Rng(9);
      let inside = 0;
      for (let i = 0; i < 2000; i++) {
        const s = randomFimSplit(text, rng, cuts);
        assert.equal(s.prefix + s.middle + s.suffix, text);
        if (/[A-Za-z0-9_$]$/.test(s.prefix) && /^[A-Za-z0-9_$]/.test(s.middle + s.suffix)) inside++;
      }
      return inside / 2000;
    };
    const char = insideWord('char');
    const word = insideWord('word');
    assert.ok(char > 0.6, `char: ${char}`);
    // Only the kept share (WORD_CUT_KEEP) of cut points can stay inside a word.
    assert.ok(word < WORD_CUT_KEEP * char + 0.05, `word: ${word} vs char ${char}`);
  });

  it('encodes plain documents and PSM examples that decode back to the files', () => {
    const ids = specialIds(tokenizer);
    const { tokens, stats } = encodeTrainingStream(files, tokenizer, { fimRate: 0.5, seed: 5 });
    assert.equal(stats.tokens, tokens.length);
    assert.ok(stats.fimExamples > 0 && stats.plainDocuments > 0);
    // Split into documents at <|endoftext|>; undo FIM (PSM → prefix + middle + suffix).
    const docs: string[] = [];
    let current: number[] = [];
    for (const t of tokens) {
      if (t === ids.eos) {
        if (current[0] === ids.prefix) {
          const s = current.indexOf(ids.suffix);
          const m = current.indexOf(ids.middle);
          assert.ok(s > 0 && m > s, 'PSM order');
          docs.push(
            tokenizer.decode(current.slice(1, s)) +
              tokenizer.decode(current.slice(m + 1)) +
              tokenizer.decode(current.slice(s + 1, m)),
          );
        } else docs.push(tokenizer.decode(current));
        current = [];
      } else current.push(t);
    }
    assert.equal(current.length, 0, 'the stream ends with <|endoftext|>');
    assert.equal(docs.join(''), files.map((f) => f.text).join(''));
    const segments = files.reduce((n, f) => n + segmentText(f.text).length, 0);
    const rate = stats.fimExamples / segments;
    assert.ok(rate > 0.3 && rate < 0.7, `FIM rate ${rate}`);
    // Same seed, same stream.
    assert.deepEqual(encodeTrainingStream(files, tokenizer, { fimRate: 0.5, seed: 5 }).tokens, tokens);
  });

  it('samples rows of T+1 tokens from the stream, a pure function of the step', () => {
    const stream = Int32Array.from({ length: 1001 }, (_, i) => i);
    const sampler = new RowSampler(stream, 4, 10, 9);
    assert.equal(sampler.rows, 100);
    const seen = new Set<number>();
    for (let step = 0; step < 25; step++) {
      const batch = sampler.batchAt(step);
      assert.equal(batch.length, 4 * 11);
      for (let b = 0; b < 4; b++) {
        const first = batch[b * 11];
        assert.equal(first % 10, 0);
        for (let t = 0; t < 11; t++) assert.equal(batch[b * 11 + t], first + t);
        seen.add(first);
      }
    }
    assert.equal(seen.size, 100, 'one epoch visits every row once');
    assert.deepEqual(new RowSampler(stream, 4, 10, 9).batchAt(37), sampler.batchAt(37));
    assert.notDeepEqual(sampler.batchAt(25), sampler.batchAt(0));
  });
});

describe('pretrain evaluation helpers', () => {
  it('scoring windows score every target once, each after the first window with ≥ T/2 context', () => {
    for (const length of [2, 5, 65, 66, 100, 257, 1000]) {
      const T = 64;
      const scored = new Array<number>(length).fill(0);
      for (const w of scoringWindows(length, T)) {
        const end = Math.min(length, w.start + T + 1);
        assert.ok(w.from > w.start && w.from <= end);
        for (let target = w.from; target < end; target++) {
          scored[target]++;
          if (w.start > 0) assert.ok(target - w.start >= T / 2, `target ${target} has ${target - w.start} context`);
        }
      }
      assert.deepEqual(scored.slice(1), new Array(length - 1).fill(1), `length ${length}`);
    }
  });

  it('xz compresses repetitive code far below 8 bits per byte', () => {
    const text = Buffer.from(files[0].text);
    const compressed = xzCompressedBytes(text);
    assert.ok(compressed > 0 && compressed < text.length / 2);
  });

  it('picks non-blank lines and prompts that end right before them', () => {
    const ids = specialIds(tokenizer);
    const picks = pickLines(files, 20);
    assert.equal(picks.length, 20);
    for (const p of picks) {
      assert.ok(p.line.trim().length > 0);
      assert.equal(p.file.text.slice(p.offset, p.offset + p.line.length), p.line);
      assert.ok(p.offset === 0 || p.file.text[p.offset - 1] === '\n');
      const prompt = promptBefore(tokenizer, ids, p.file.text, p.offset, 100000);
      assert.equal(prompt[0], ids.eos);
      assert.equal(tokenizer.decode(prompt.slice(1)), p.file.text.slice(0, p.offset));
      assert.equal(promptBefore(tokenizer, ids, p.file.text, p.offset, 50).length, Math.min(50, prompt.length));
      // The FIM prompt for the same line: prefix through its indentation, suffix from its end.
      const fim = fimPromptAt(tokenizer, ids, p.file.text, p.offset, p.line, 200);
      assert.ok(fim.length <= 200);
      assert.equal(fim[0], ids.prefix);
      assert.equal(fim[fim.length - 1], ids.middle);
      const at = fim.indexOf(ids.suffix);
      const indent = p.line.length - p.line.trimStart().length;
      assert.ok(p.file.text.slice(0, p.offset + indent).endsWith(tokenizer.decode(fim.slice(1, at))));
      assert.ok(p.file.text.slice(p.offset + p.line.length).startsWith(tokenizer.decode(fim.slice(at + 1, -1))));
    }
  });

  it('learning rate: warm-up, constant, linear decay to the floor', () => {
    const h = {
      ...DEFAULT_HYPERPARAMETERS,
      peakLearningRate: 1,
      warmupSteps: 10,
      decayFraction: 0.25,
      finalLearningRateFraction: 0.1,
    };
    assert.equal(learningRateAt(h, 0, 0), 0.1);
    assert.equal(learningRateAt(h, 9, 0.01), 1);
    assert.equal(learningRateAt(h, 500, 0.5), 1);
    assert.ok(Math.abs(learningRateAt(h, 900, 0.875) - 0.55) < 1e-12);
    assert.ok(Math.abs(learningRateAt(h, 1000, 1) - 0.1) < 1e-12);
    // After an extension at step 1000 the warm-up starts from the final rate.
    assert.ok(Math.abs(learningRateAt(h, 1000, 0.5, 1000) - (0.1 + 0.1 * 0.9)) < 1e-12);
    assert.equal(learningRateAt(h, 1009, 0.5, 1000), 1);
  });

  it('a larger vocabulary costs more training FLOPs per token', () => {
    const shape = { hiddenSize: 256, numLayers: 4, intermediateSize: 688, attentionWidth: 1024, seqLen: 512 };
    assert.ok(trainingFlopsPerToken(shape, 8192) - trainingFlopsPerToken(shape, 4096) === 6 * 4096 * 256);
  });
});

describe('pretrain evaluation file selection', () => {
  it('cuts long files at a line end and stops near the byte budget', async () => {
    const { selectEvalFiles, truncateAtLine, MAX_EVAL_FILE_CHARS } = await import(
      '../../../trainer/tools/pretrain/evaluate'
    );
    assert.equal(truncateAtLine('ab\ncd\nef', 7), 'ab\ncd\n');
    assert.equal(truncateAtLine('abcdef', 4), 'abcd');
    assert.equal(truncateAtLine('short\n', 100), 'short\n');
    const big: CorpusFile = { source: 'x', path: 'big.py', language: 'python', text: 'value = 1\n'.repeat(10_000) };
    const small: CorpusFile[] = Array.from({ length: 10 }, (_, i) => ({
      source: 'x',
      path: `s${i}.py`,
      language: 'python',
      text: `x = ${i}\n`.repeat(100),
    }));
    const picked = selectEvalFiles([big, ...small, files[0]], 'python', 1e9);
    assert.equal(picked.length, 11, 'only python files');
    const cut = picked.find((f) => f.path === 'big.py')!;
    assert.ok(cut.text.length <= MAX_EVAL_FILE_CHARS && cut.text.endsWith('\n') && big.text.startsWith(cut.text));
    const few = selectEvalFiles([big, ...small], 'python', 1500);
    assert.ok(few.length >= 1 && few.length < 11);
  });
});
