import { strict as assert } from 'node:assert';
import { exclusionByPath } from '../../../trainer/data/mining/filters';
import { looksRandom, passwordLike, scanSecrets, shannonEntropy } from '../../../trainer/data/mining/secrets';
import { secretlintRuleNames } from '../../../trainer/data/mining/secretlint';
import {
  DISGUISE_LOOKALIKES,
  disguisedSecrets,
  plantedSecrets,
  SECRET_LOOKALIKES,
} from '../../fixtures/mining/planted-secrets';

describe('mining/secrets', () => {
  const planted = plantedSecrets();

  it('plants at least 20 secrets of different kinds', () => {
    assert.ok(planted.length >= 20);
    assert.equal(new Set(planted.map((secret) => secret.kind)).size, planted.length);
  });

  // The detector each planted kind must trigger (others may fire too).
  const detector = (kind: string): string =>
    kind === 'github-fine-grained'
      ? 'github-token'
      : kind === 'private-key-in-code'
        ? 'private-key'
        : kind.startsWith('assigned-')
          ? 'assigned-secret'
          : kind;

  for (const secret of planted.filter((s) => s.expected === 'secret')) {
    it(`finds a ${secret.kind} in file content`, () => {
      const hits = scanSecrets(secret.content);
      assert.ok(
        hits.some((hit) => hit.kind === detector(secret.kind)),
        `${secret.path}: expected ${detector(secret.kind)}, got ${JSON.stringify(hits)}`,
      );
      // Hits carry kind and line only, never the value.
      assert.ok(!JSON.stringify(hits).includes(secret.canary));
    });
  }

  for (const secret of planted.filter((s) => s.expected === 'secret-file')) {
    it(`excludes ${secret.path} by name`, () => {
      assert.equal(exclusionByPath(secret.path), 'secret-file');
    });
  }

  for (const [name, content] of Object.entries(SECRET_LOOKALIKES)) {
    it(`keeps ${name}, which only talks about tokens and passwords`, () => {
      assert.deepEqual(scanSecrets(content), []);
    });
  }

  for (const secret of disguisedSecrets()) {
    it(`finds a disguised credential: ${secret.kind}`, () => {
      const hits = scanSecrets(secret.content);
      assert.ok(hits.length > 0, `${secret.path}: nothing found`);
      for (const canary of secret.canaries) assert.ok(!JSON.stringify(hits).includes(canary));
    });
  }

  for (const [name, content] of Object.entries(DISGUISE_LOOKALIKES)) {
    it(`keeps ${name}, which passes credentials by variable, template or placeholder`, () => {
      assert.deepEqual(scanSecrets(content), []);
    });
  }

  it("runs secretlint's recommended rules, but not the one a comment in a mined file could switch off", () => {
    const names = secretlintRuleNames();
    for (const rule of ['aws', 'basicauth', 'database-connection-string', 'linear', '1password'])
      assert.ok(names.includes(rule), rule);
    assert.ok(!names.includes('filter-comments'));
    // Formats only secretlint's rules know, in a file that asks secretlint to look away.
    const linear = `lin_api_${['Qk8mZ2xR7v', 'Lp4Tn9Wc3H', 'y6Jb1Fd5Gs', '0Ae2Ku8Mo4'].join('')}`;
    const password = ['Wq7v', 'K2pZ', '9xL'].join('');
    const text =
      `// secretlint-disable\nconst client = new LinearClient({ apiKey: process.env.KEY ?? ${JSON.stringify(linear)} });\n` +
      `const uri = "mongodb://orders:${password}@mongo.internal:27017/orders";\n`;
    const kinds = scanSecrets(text).map((hit) => hit.kind);
    assert.ok(kinds.includes('secretlint-linear'), JSON.stringify(kinds));
    assert.ok(kinds.includes('secretlint-database-connection-string'), JSON.stringify(kinds));
  });

  it('tells passwords that context names from identifiers, paths and templates', () => {
    for (const value of ['Xk7#pQ2m!vR9', 'Hunter2!x', 'Rvwbzqtm&KX', 'q8ZfR2mLx0Pw'])
      assert.ok(passwordLike(value), value);
    for (const value of [
      'DB_PASSWORD',
      'db_password_1',
      '${DB_PASSWORD}',
      '{{ .Values.password }}',
      '%DB_PW%',
      '$PGPASS',
      'changeme',
      '<password>',
      '/run/secrets/db',
      'ops@example.com',
      'Password:',
      'argon2id',
      'input[name=password]',
    ]) {
      assert.ok(!passwordLike(value), value);
    }
  });

  it('reports the line of a hit', () => {
    const text = `a\nb\nconst k = "AKIA${'Q'.repeat(8)}${'7'.repeat(8)}";\n`;
    assert.deepEqual(scanSecrets(text), [{ kind: 'aws-access-key-id', line: 3 }]);
  });

  it('tells random values from words and placeholders', () => {
    assert.ok(shannonEntropy('aaaa') === 0);
    assert.ok(Math.abs(shannonEntropy('abcd') - 2) < 1e-12);
    assert.ok(!looksRandom('your-api-key-here'));
    assert.ok(!looksRandom('${API_KEY_FROM_ENV_2}'));
    assert.ok(!looksRandom('xxxxxxxxxxxxxxxxxxxx'));
    assert.ok(looksRandom('q8ZfR2mLx0PwN4vKt7Yc'));
  });

  it('scans long identifier runs without catastrophic backtracking', function () {
    // A backtracking pattern would run for minutes here and hit this timeout; linear ones take ms.
    this.timeout(20_000);
    const line = `${'a'.repeat(900)}_token_${'b'.repeat(90)}\n`;
    assert.deepEqual(scanSecrets(line.repeat(200)), []);
  });
});
