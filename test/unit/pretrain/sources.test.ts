import { strict as assert } from 'node:assert';
import {
  globToRegExp,
  isPermissiveLicense,
  loadSourceList,
  makePathFilter,
  parseSourceList,
} from '../../../trainer/tools/pretrain/sources';

describe('pretrain sources', () => {
  it('accepts permissive SPDX licenses and expressions, refuses others', () => {
    for (const ok of ['MIT', 'Apache-2.0', 'BSD-3-Clause', 'ISC', '(MIT OR GPL-3.0)', 'MIT AND ISC', { type: 'MIT' }])
      assert.ok(isPermissiveLicense(ok), JSON.stringify(ok));
    for (const bad of [
      'GPL-3.0',
      'AGPL-3.0-only',
      'UNLICENSED',
      'SEE LICENSE IN LICENSE',
      '',
      undefined,
      null,
      'MIT AND GPL-2.0',
      42,
    ]) {
      assert.ok(!isPermissiveLicense(bad), JSON.stringify(bad));
    }
  });

  it('matches globs like a shell: ** across folders, * within one name', () => {
    const src = globToRegExp('src/**/*.ts');
    assert.ok(src.test('src/a.ts'));
    assert.ok(src.test('src/x/y/a.ts'));
    assert.ok(!src.test('lib/a.ts'));
    assert.ok(!src.test('src/a.tsx'));
    const top = globToRegExp('*.js');
    assert.ok(top.test('map.js'));
    assert.ok(!top.test('fp/map.js'));
    const keep = makePathFilter(['gyp/**/*.py'], ['**/*_test.py']);
    assert.ok(keep('gyp/pylib/gyp/input.py'));
    assert.ok(!keep('gyp/pylib/gyp/input_test.py'));
  });

  it('the committed source list is valid, pinned and has held-out packages in every language', () => {
    const list = loadSourceList();
    assert.ok(list.npm.length >= 20);
    for (const p of list.npm) assert.match(p.integrity ?? '', /^sha512-/, `${p.name} has no pinned integrity`);
    for (const language of ['typescript', 'javascript'] as const) {
      assert.ok(
        list.npm.some((p) => p.language === language && p.heldOut),
        `no held-out ${language} package`,
      );
      assert.ok(
        list.npm.some((p) => p.language === language && !p.heldOut),
        `no training ${language} package`,
      );
    }
    assert.ok(list.python.heldOut.length > 0);
  });

  it('rejects malformed entries with one clear message', () => {
    const python = { license: 'PSF-2.0', debianPackages: [{ name: 'x', version: '1' }], exclude: [], heldOut: [] };
    assert.throws(
      () =>
        parseSourceList({ npm: [{ name: 'a', version: 'latest', language: 'typescript', include: ['*.ts'] }], python }),
      /version must be an exact version/,
    );
    assert.throws(
      () => parseSourceList({ npm: [{ name: 'a', version: '1.0.0', language: 'rust', include: ['*.rs'] }], python }),
      /language must be one of/,
    );
    assert.throws(
      () => parseSourceList({ npm: [], python: { ...python, license: 'GPL-3.0' } }),
      /not a permissive license/,
    );
    assert.throws(() => parseSourceList('nope'), /must be a JSON object/);
  });
});
