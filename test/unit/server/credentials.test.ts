import { strict as assert } from 'node:assert';
import { credentialAddedBy } from '../../../server/completion/credentials';
import {
  DISGUISE_LOOKALIKES,
  SECRET_LOOKALIKES,
  disguisedSecrets,
  plantedSecrets,
} from '../../fixtures/mining/planted-secrets';

describe('server/completion/credentials', () => {
  const inCode = plantedSecrets().filter((secret) => secret.expected === 'secret');

  it('withholds every planted credential completed at the place it was planted', () => {
    assert.ok(inCode.length >= 20);
    for (const secret of inCode) {
      const at = secret.content.indexOf(secret.canary);
      const prefix = secret.content.slice(0, at);
      const suffix = secret.content.slice(at + secret.canary.length);
      assert.notEqual(
        credentialAddedBy(prefix, secret.canary, suffix),
        null,
        `${secret.kind} (${secret.path}) was not withheld`,
      );
      // Typed so far: only the credential's first half is left to complete.
      const half = Math.floor(secret.canary.length / 2);
      assert.notEqual(
        credentialAddedBy(prefix + secret.canary.slice(0, half), secret.canary.slice(half), suffix),
        null,
        `${secret.kind}: the second half`,
      );
    }
  });

  it('withholds disguised credentials: the second piece of a split key, an encoded key, a password on a command line', () => {
    for (const secret of disguisedSecrets()) {
      for (const canary of secret.canaries) {
        const at = secret.content.indexOf(canary);
        if (at < 0) continue; // the decoded form of an encoded key
        const prefix = secret.content.slice(0, at);
        const suffix = secret.content.slice(at + canary.length);
        assert.notEqual(
          credentialAddedBy(prefix, canary, suffix),
          null,
          `${secret.kind} (${secret.path}) was not withheld`,
        );
      }
    }
  });

  it('lets code that only talks about tokens and passwords through, line by line', () => {
    for (const [file, content] of Object.entries({ ...SECRET_LOOKALIKES, ...DISGUISE_LOOKALIKES })) {
      let start = 0;
      for (const line of content.split('\n')) {
        const prefix = content.slice(0, start);
        const suffix = content.slice(start + line.length);
        assert.equal(credentialAddedBy(prefix, line, suffix), null, `${file}: ${line}`);
        start += line.length + 1;
      }
    }
  });

  it('judges what the completion adds, not a credential already on the line', () => {
    const secret = inCode.find((s) => s.kind === 'aws-access-key-id')!;
    const at = secret.content.indexOf(secret.canary) + secret.canary.length;
    // After the key, the completion closes the object: nothing new.
    assert.equal(
      credentialAddedBy(secret.content.slice(0, at), "' };", secret.content.slice(at).replace(/^' };/, '')),
      null,
    );
  });
});
