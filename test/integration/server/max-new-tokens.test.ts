import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { defaultCompletionOptions } from '../../../server/completion/provider';
import { makePrintableModel } from '../../fixtures/e2e-model/printable-model';
import { engineCompletion } from './reference';
import { freshServerGhostText } from './session';

// idiom.completion.maxNewTokens over stdio: the server's suggestion is the engine's decode of the
// same prompt cut at that many tokens (decoded in this process, the confidence gate off).

const text = 'export function add(a: number, b: number) {\n  return \n}\n';
const cursor = { line: 1, character: 9 };
const offset = text.indexOf('return ') + 'return '.length;

/** The engine's decode of the server's prompt at the cursor, cut at `maxNewTokens` tokens. */
function engineText(modelDir: string, maxNewTokens: number): Promise<string | null> {
  return engineCompletion(modelDir, null, { text, offset }, { maxNewTokens });
}

describe('language server: idiom.completion.maxNewTokens over stdio (random-weights checkpoint)', function () {
  this.timeout(60_000);
  let dir: string;
  let modelDir: string;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-lsp-max-new-tokens-'));
    modelDir = (await makePrintableModel(path.join(dir, 'model'))).dir;
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  function ghostText(maxNewTokens: number): Promise<string | null> {
    const completion = { minConfidence: 0, recall: false, prompt: 'fim' as const, maxNewTokens };
    return freshServerGhostText(dir, { baseModelPath: modelDir, completion }, path.join(dir, 'add.ts'), text, cursor);
  }

  it('decodes at most maxNewTokens tokens; a value out of range means the default', async () => {
    const whole = await engineText(modelDir, defaultCompletionOptions.maxNewTokens);
    const cut = await engineText(modelDir, 2);
    assert.ok(cut, 'two tokens decode to some text');
    assert.notEqual(cut, whole, 'the default decodes past two tokens here (else the check proves nothing)');
    assert.equal(await ghostText(2), cut);
    assert.equal(await ghostText(0), whole);
  });
});
