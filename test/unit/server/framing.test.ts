import { strict as assert } from 'node:assert';
import { FramingCheck, FramingError } from '../../../server/framing';

/** Feeds `input` in chunks of the given sizes; resolves with what passed through, or the error. */
function run(input: Buffer, sizes: number[], max?: number): Promise<{ out: Buffer; error: Error | null }> {
  const check = new FramingCheck(max);
  const parts: Buffer[] = [];
  check.on('data', (chunk: Buffer) => parts.push(chunk));
  return new Promise((resolve) => {
    check.on('error', (error) => resolve({ out: Buffer.concat(parts), error }));
    check.on('end', () => resolve({ out: Buffer.concat(parts), error: null }));
    let at = 0;
    for (let i = 0; at < input.length; i++) {
      const size = sizes[i % sizes.length];
      check.write(input.subarray(at, at + size));
      at += size;
    }
    check.end();
  });
}

const message = (body: string, extra = '') =>
  Buffer.from(`Content-Length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`);

describe('server/framing', () => {
  const stream = Buffer.concat([
    message('{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}'),
    message(
      '{"jsonrpc":"2.0","method":"x","params":{"text":"ünïcödé \\r\\n\\r\\n Content-Length: 5"}}',
      'Content-Type: application/vscode-jsonrpc; charset=utf-8\r\n',
    ),
    Buffer.from('content-length: 2\r\n\r\n{}'),
    message(''),
  ]);

  for (const sizes of [[stream.length], [1], [3, 7, 1], [17, 2, 64]]) {
    it(`passes well-framed messages through unchanged in chunks of ${sizes.join('/')} bytes`, async () => {
      const { out, error } = await run(stream, sizes);
      assert.equal(error, null);
      assert.ok(out.equals(stream));
    });
  }

  for (const [name, bytes, why] of [
    ['no Content-Length', 'Content-Type: application/json\r\n\r\n{}', /without a Content-Length/],
    ['a Content-Length over the limit', 'Content-Length: 1000000000000\r\n\r\n{', /1000000000000 bytes/],
    ['a Content-Length that is no number', 'Content-Length: 1e3\r\n\r\n{}', /not a byte count/],
    ['a header line without a colon', 'hello\r\n\r\n', /without a colon/],
    ['headers that never end', 'X'.repeat(9000), /without an end/],
  ] as const) {
    it(`fails on ${name}`, async () => {
      const { error } = await run(Buffer.concat([message('{}'), Buffer.from(bytes)]), [5]);
      assert.ok(error instanceof FramingError, String(error));
      assert.match(error.message, why);
    });
  }
});
