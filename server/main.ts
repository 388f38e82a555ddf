// Entry of the language server over stdio: `idiom lsp --stdio`, or dist/server.js launched by the
// extension. stdout carries LSP messages only, so anything printed goes to stderr.
import { createConnection } from 'vscode-languageserver/node';
import { IdiomServer } from './server';

export function runServer(): void {
  const toStderr = (...args: unknown[]) => process.stderr.write(`${args.map(String).join(' ')}\n`);
  console.log = toStderr;
  console.info = toStderr;
  const connection = createConnection(process.stdin, process.stdout);
  new IdiomServer(connection).listen();
}

if (require.main === module) runServer();
