// Entry of the language server over stdio: `idiom lsp --stdio`, or dist/server.js launched by the
// extension. stdout carries LSP messages only, so anything printed goes to stderr.
import { createConnection } from 'vscode-languageserver/node';
import { FramingCheck } from './framing';
import { IdiomServer } from './server';

export function runServer(): void {
  const toStderr = (...args: unknown[]) => process.stderr.write(`${args.map(String).join(' ')}\n`);
  console.log = toStderr;
  console.info = toStderr;
  // Broken framing cannot be recovered from (the next message's start is unknown): one line, exit.
  const input = new FramingCheck();
  input.on('error', (error) => {
    process.stderr.write(`idiom lsp: ${error.message}; closing the connection\n`);
    process.exit(1);
  });
  process.stdin.pipe(input);
  const connection = createConnection(input, process.stdout);
  new IdiomServer(connection).listen();
}

if (require.main === module) runServer();
