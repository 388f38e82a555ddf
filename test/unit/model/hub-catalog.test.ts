import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomCheckpointWeights, saveCheckpoint } from '../../../trainer/model/checkpoint';
import { countParameters } from '../../../trainer/model/config';
import { describeModel, listLocalModels, memoryNeeded } from '../../../trainer/model/hub/catalog';
import { checkModelId, hubCacheDir, modelIdOfFolder, repoFolderName } from '../../../trainer/model/hub/cache';
import { detectFimFamily } from '../../../trainer/model/hub/fim-family';
import { tinyModelConfig } from '../../fixtures/tiny-config';

const config = tinyModelConfig({ model_type: 'qwen2', tie_word_embeddings: true });
const memory = { total: os.totalmem(), available: os.freemem() };

/** A tokenizer.json whose added tokens (and SentencePiece-style vocabulary) hold `tokens`. */
function writeTokenizer(dir: string, added: string[], vocab: string[] = []): void {
  fs.writeFileSync(
    path.join(dir, 'tokenizer.json'),
    JSON.stringify({
      added_tokens: added.map((content, id) => ({ id, content, special: true })),
      model: { type: 'BPE', vocab: Object.fromEntries(vocab.map((token, i) => [token, 100 + i])) },
    }),
  );
}

describe('model catalog: the Hugging Face cache and what each model needs', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-catalog-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('finds the FIM family of Qwen, StarCoder, CodeLlama and DeepSeek tokenizers, and none in a chat one', () => {
    const cases: Array<[string, string[], string[], string | null]> = [
      ['qwen', ['<|endoftext|>', '<|fim_prefix|>', '<|fim_middle|>', '<|fim_suffix|>'], [], 'qwen'],
      ['starcoder', ['<fim_prefix>', '<fim_middle>', '<fim_suffix>'], [], 'starcoder'],
      ['codellama', ['<s>', '</s>'], ['▁<PRE>', '▁<SUF>', '▁<MID>', '▁<EOT>'], 'codellama'],
      ['deepseek', ['<｜fim▁begin｜>', '<｜fim▁hole｜>', '<｜fim▁end｜>'], [], 'deepseek'],
      ['chat', ['<|im_start|>', '<|im_end|>'], [], null],
      ['half', ['<|fim_prefix|>', '<|fim_suffix|>'], [], null],
    ];
    for (const [name, added, vocab, family] of cases) {
      const folder = path.join(dir, name);
      fs.mkdirSync(folder);
      writeTokenizer(folder, added, vocab);
      assert.equal(detectFimFamily(folder), family, name);
    }
    // DeepSeek-Coder lists them in tokenizer_config.json too; that alone is enough.
    const fromConfig = path.join(dir, 'from-config');
    fs.mkdirSync(fromConfig);
    fs.writeFileSync(
      path.join(fromConfig, 'tokenizer_config.json'),
      JSON.stringify({
        added_tokens_decoder: Object.fromEntries(
          ['<｜fim▁begin｜>', '<｜fim▁hole｜>', '<｜fim▁end｜>'].map((content, i) => [String(32000 + i), { content }]),
        ),
      }),
    );
    assert.equal(detectFimFamily(fromConfig), 'deepseek');
  });

  it('lists cache snapshots with their refs, parameters from the headers and the memory they need', async () => {
    const cache = path.join(dir, 'hub');
    const snapshot = path.join(cache, repoFolderName('Org/Tiny-Coder'), 'snapshots', 'c'.repeat(40));
    await saveCheckpoint(snapshot, config, randomCheckpointWeights(config, 1), { dtype: 'float16' });
    writeTokenizer(snapshot, ['<|fim_prefix|>', '<|fim_suffix|>', '<|fim_middle|>']);
    fs.mkdirSync(path.join(cache, repoFolderName('Org/Tiny-Coder'), 'refs'));
    fs.writeFileSync(path.join(cache, repoFolderName('Org/Tiny-Coder'), 'refs', 'main'), 'c'.repeat(40));
    fs.mkdirSync(path.join(cache, 'datasets--Org--Data'));

    const [model, ...rest] = listLocalModels({ cacheDir: cache, memory, precision: 'int8' });
    assert.deepEqual(rest, []);
    assert.equal(model.id, 'Org/Tiny-Coder');
    assert.deepEqual(model.refs, ['main']);
    assert.equal(model.architecture, 'qwen2');
    assert.equal(model.parameters, countParameters(config));
    assert.equal(model.dtype, 'F16');
    assert.equal(model.memoryBytes, memoryNeeded(countParameters(config), config, 'int8'));
    assert.ok(model.memoryBytes < memoryNeeded(countParameters(config), config, 'float32'));
    assert.equal(model.fim, 'qwen');
    assert.equal(model.problem, null);

    // The same folder given as idiom.baseModelPath is listed once.
    assert.equal(listLocalModels({ cacheDir: cache, memory, configured: snapshot }).length, 1);
  });

  it('a truncated or oversized safetensors, a chat tokenizer and a model larger than memory each say why', async () => {
    await saveCheckpoint(dir, config, randomCheckpointWeights(config, 1));
    writeTokenizer(dir, ['<|im_start|>']);
    const weights = path.join(dir, 'model.safetensors');
    const bytes = fs.readFileSync(weights);

    fs.writeFileSync(weights, bytes.subarray(0, bytes.length - 10));
    assert.match(describeModel(dir, 'setting', 'x', { memory }).problem ?? '', /invalid safetensors: .*out of bounds/);
    fs.writeFileSync(weights, Buffer.concat([bytes, Buffer.alloc(12)]));
    assert.match(
      describeModel(dir, 'setting', 'x', { memory }).problem ?? '',
      /12 bytes after the last tensor \(oversized\)/,
    );
    fs.writeFileSync(weights, bytes);

    const chat = describeModel(dir, 'setting', 'x', { memory });
    assert.equal(chat.fits, true);
    assert.match(chat.problem ?? '', /no fill-in-the-middle tokens/);

    const needed = memoryNeeded(countParameters(config), config, 'float32');
    const small = describeModel(dir, 'setting', 'x', { memory: { total: needed - 1, available: needed - 1 } });
    assert.equal(small.fits, false);
    assert.match(small.problem ?? '', /^at float32 it needs \d+ MB of memory to serve; this machine has \d+ MB;/);
  });

  it('reads the cache location and model ids as huggingface_hub writes them', () => {
    assert.equal(hubCacheDir({ HF_HUB_CACHE: '/a/hub', HF_HOME: '/b' }), path.resolve('/a/hub'));
    assert.equal(hubCacheDir({ HF_HOME: '/b' }), path.resolve('/b/hub'));
    assert.equal(hubCacheDir({ XDG_CACHE_HOME: '/c' }), path.resolve('/c/huggingface/hub'));
    assert.equal(modelIdOfFolder(repoFolderName('Qwen/Qwen2.5-Coder-0.5B')), 'Qwen/Qwen2.5-Coder-0.5B');
    assert.equal(modelIdOfFolder('datasets--x--y'), null);
    for (const bad of ['../etc', 'a/b/c', 'a/..', '', 'a b/c'])
      assert.throws(() => checkModelId(bad), /not a Hugging Face model id/);
  });
});
