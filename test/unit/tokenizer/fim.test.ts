import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildFimPrompt, defaultPromptBudget } from '../../../server/completion/prompt';
import { tokenizeExample } from '../../../trainer/data/dataset/tokenize';
import type { FimExample } from '../../../trainer/data/mining/examples';
import { trainByteLevelBpe } from '../../../trainer/model/tokenizer/bpe-trainer';
import { completionSupport, fimPromptTokens } from '../../../trainer/model/tokenizer/fim';
import { Tokenizer } from '../../../trainer/model/tokenizer/tokenizer';
import { trainingTexts } from './corpus';

// Each family's FIM template, found from special tokens in tokenizer.json files written here:
// byte-level BPE ones (Qwen, StarCoder, DeepSeek-Coder) and a SentencePiece-style one (CodeLlama).

const texts = trainingTexts().map((t) => t.slice(0, 4000));

const FAMILY_SPECIALS = {
  qwen: ['<|endoftext|>', '<|fim_prefix|>', '<|fim_middle|>', '<|fim_suffix|>', '<|file_sep|>'],
  starcoder: ['<|endoftext|>', '<fim_prefix>', '<fim_middle>', '<fim_suffix>', '<fim_pad>', '<file_sep>'],
  deepseek: ['<｜begin▁of▁sentence｜>', '<｜end▁of▁sentence｜>', '<｜fim▁hole｜>', '<｜fim▁begin｜>', '<｜fim▁end｜>'],
} as const;

/** A Llama-2-style tokenizer.json: "▁" prepended, spaces as "▁", BPE over characters with byte fallback. */
function codeLlamaStyleJson(): object {
  const specials = ['<unk>', '<s>', '</s>', '▁<PRE>', '▁<SUF>', '▁<MID>', '▁<EOT>'];
  const vocab: Record<string, number> = {};
  for (const token of specials) vocab[token] = Object.keys(vocab).length;
  for (let byte = 0; byte < 256; byte++)
    vocab[`<0x${byte.toString(16).toUpperCase().padStart(2, '0')}>`] = Object.keys(vocab).length;
  const chars = '▁abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789(){}[];:=+-*/.,_\'"<>';
  for (const char of chars) vocab[char] = Object.keys(vocab).length;
  const merges: string[] = [];
  for (const [a, b] of [
    ['▁', 'r'],
    ['▁r', 'e'],
    ['▁re', 't'],
    ['▁', 'x'],
    ['r', 'e'],
    ['re', 't'],
  ]) {
    merges.push(`${a} ${b}`);
    vocab[a + b] = Object.keys(vocab).length;
  }
  return {
    version: '1.0',
    added_tokens: specials.map((content, id) => ({
      id,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: {
      type: 'Sequence',
      normalizers: [
        { type: 'Prepend', prepend: '▁' },
        { type: 'Replace', pattern: { String: ' ' }, content: '▁' },
      ],
    },
    pre_tokenizer: null,
    post_processor: null,
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: '▁' }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        { type: 'Strip', content: ' ', start: 1, stop: 0 },
      ],
    },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: '<unk>',
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      vocab,
      merges,
    },
  };
}

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-fim-'));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Writes `json` as `folder`/tokenizer.json (and tokenizer_config.json when given) under the temp dir. */
function checkpointFolder(folder: string, json: object, tokenizerConfig?: object): string {
  const at = path.join(dir, folder);
  fs.mkdirSync(at, { recursive: true });
  fs.writeFileSync(path.join(at, 'tokenizer.json'), JSON.stringify(json));
  if (tokenizerConfig) fs.writeFileSync(path.join(at, 'tokenizer_config.json'), JSON.stringify(tokenizerConfig));
  return at;
}

const fimExample = (prefix: string, middle: string, suffix: string): FimExample =>
  ({ kind: 'fim-line-rest', split: 'train', prefix, middle, suffix }) as FimExample;

describe('FIM templates per family', () => {
  for (const [family, specials] of Object.entries(FAMILY_SPECIALS)) {
    it(`detects ${family} from tokenizer.json's special tokens and lays out its PSM prompt`, async () => {
      const folder = checkpointFolder(family, trainByteLevelBpe(texts, { vocabSize: 400, specialTokens: specials }));
      const tokenizer = await Tokenizer.load(folder);
      const fim = tokenizer.fim;
      assert.ok(fim, `${family}: no template found`);
      assert.equal(fim.family, family);
      const name = (id: number | null) => (id === null ? null : tokenizer.idToToken(id));
      const expectedNames = {
        qwen: ['<|fim_prefix|>', '<|fim_suffix|>', '<|fim_middle|>', null],
        starcoder: ['<fim_prefix>', '<fim_suffix>', '<fim_middle>', null],
        deepseek: ['<｜fim▁begin｜>', '<｜fim▁hole｜>', '<｜fim▁end｜>', '<｜begin▁of▁sentence｜>'],
      }[family]!;
      assert.deepEqual([name(fim.prefix), name(fim.suffix), name(fim.middle), name(fim.bos)], expectedNames);

      const prefix = tokenizer.encode('function add(a, b) {\n  return ');
      const suffix = tokenizer.encode(';\n}\n');
      const prompt = Array.from(fimPromptTokens(fim, prefix, suffix));
      const start = fim.bos === null ? [] : [fim.bos];
      assert.deepEqual(prompt, [...start, fim.prefix, ...prefix, fim.suffix, ...suffix, fim.middle]);
      // The server's prompt for the same document is the same sequence.
      const served = buildFimPrompt(
        { prefix: 'function add(a, b) {\n  return ', suffix: ';\n}\n', languageId: 'typescript', snippets: [] },
        tokenizer,
        fim,
        defaultPromptBudget,
      );
      assert.deepEqual(Array.from(served.tokens), prompt);

      // A training example: the same prompt, then the middle and end of text, loss from the middle on.
      const [example] = tokenizeExample(
        fimExample('function add(a, b) {\n  return ', 'a + b', ';\n}\n'),
        tokenizer,
        256,
      );
      assert.deepEqual(Array.from(example.tokens.subarray(0, example.lossStart)), prompt);
      assert.equal(tokenizer.decode(Array.from(example.tokens.subarray(example.lossStart, -1))), 'a + b');
      assert.equal(example.tokens[example.tokens.length - 1], tokenizer.eos);
      assert.notEqual(tokenizer.eos, null);
    });
  }

  it('CodeLlama: <s>▁<PRE> prefix (with its leading space) ▁<SUF>suffix (without) ▁<MID>, ended by ▁<EOT>', async () => {
    const tokenizer = await Tokenizer.load(checkpointFolder('codellama', codeLlamaStyleJson()));
    const fim = tokenizer.fim;
    assert.ok(fim);
    assert.equal(fim.family, 'codellama');
    const name = (id: number | null) => (id === null ? null : tokenizer.idToToken(id));
    assert.deepEqual(
      [name(fim.bos), name(fim.prefix), name(fim.suffix), name(fim.middle), name(fim.end)],
      ['<s>', '▁<PRE>', '▁<SUF>', '▁<MID>', '▁<EOT>'],
    );

    const prompt = buildFimPrompt(
      { prefix: 'def f(x):\n    ret', suffix: 'urn x\n', languageId: 'python', snippets: [] },
      tokenizer,
      fim,
      defaultPromptBudget,
    );
    const tokens = Array.from(prompt.tokens);
    assert.deepEqual(tokens.slice(0, 2), [fim.bos, fim.prefix]);
    assert.equal(tokens[tokens.length - 1], fim.middle);
    const suffixAt = tokens.indexOf(fim.suffix);
    const prefixIds = tokens.slice(2, suffixAt);
    const suffixIds = tokens.slice(suffixAt + 1, -1);
    assert.ok(name(prefixIds[0])!.startsWith('▁'), "the prefix keeps SentencePiece's leading space");
    assert.ok(!name(suffixIds[0])!.startsWith('▁'), `the suffix starts without one: ${name(suffixIds[0])}`);
    assert.deepEqual(prefixIds, tokenizer.encode('def f(x):\n    ret'));
    assert.equal(tokenizer.decode(suffixIds), 'urn x\n');
    // Plain encoding would have put the space there: the template is what removes it.
    assert.ok(name(tokenizer.encode('urn x\n')[0])!.startsWith('▁'));

    const [example] = tokenizeExample(fimExample('def f(x):\n    ret', 'urn', ' x\n'), tokenizer, 128);
    assert.equal(example.tokens[example.tokens.length - 1], fim.end, 'a middle ends with <EOT>');
    assert.deepEqual(example.tokens.subarray(0, 2), Int32Array.from([fim.bos!, fim.prefix]));
  });

  describe('completionSupport', () => {
    const qwenJson = () => trainByteLevelBpe(texts, { vocabSize: 300, specialTokens: FAMILY_SPECIALS.qwen });
    const plainJson = () => trainByteLevelBpe(texts, { vocabSize: 300, specialTokens: ['<|endoftext|>'] });
    const chatTemplate = { chat_template: '{% for message in messages %}{{ message.content }}{% endfor %}' };

    it('accepts a base checkpoint with FIM tokens, chat template or not (Qwen base models ship one)', async () => {
      for (const [folder, config] of [
        ['Qwen2.5-Coder-0.5B', undefined],
        ['with-template', chatTemplate],
      ] as const) {
        const at = checkpointFolder(folder, qwenJson(), config);
        const support = completionSupport(at, await Tokenizer.load(at));
        assert.equal(support.problem, null);
        assert.equal(support.template?.family, 'qwen');
      }
    });

    it('refuses a chat/instruct checkpoint, even one whose vocabulary has FIM tokens, in one line', async () => {
      const cases = [
        checkpointFolder('Qwen2.5-Coder-1.5B-Instruct', qwenJson()),
        checkpointFolder('models--Qwen--Qwen3-Coder-30B-A3B-Instruct/snapshots/0123abcd', qwenJson()),
        checkpointFolder('renamed', qwenJson(), { name_or_path: 'deepseek-ai/deepseek-coder-6.7b-chat' }),
      ];
      for (const at of cases) {
        const support = completionSupport(at, await Tokenizer.load(at));
        assert.equal(support.template, null, at);
        assert.match(support.problem!, /is a chat\/instruct checkpoint: inline completion needs a base \(FIM\) model/);
        assert.match(support.problem!, /review mode can still use this one/);
        assert.ok(!support.problem!.includes('\n'));
      }
    });

    it('refuses a tokenizer without FIM tokens, naming the chat template when there is one', async () => {
      const bare = checkpointFolder('bare', plainJson());
      const chat = checkpointFolder('chatty', plainJson(), chatTemplate);
      const bareSupport = completionSupport(bare, await Tokenizer.load(bare));
      assert.equal(bareSupport.template, null);
      assert.match(bareSupport.problem!, /tokenizer\.json has no fill-in-the-middle tokens: inline completion needs/);
      assert.ok(!bareSupport.problem!.includes('chat_template'));
      const chatSupport = completionSupport(chat, await Tokenizer.load(chat));
      assert.match(
        chatSupport.problem!,
        /no fill-in-the-middle tokens \(a chat model: tokenizer_config\.json has a chat_template\)/,
      );
    });
  });
});
