import type { Command } from 'commander';

// `idiom lsp --stdio`: the language server, for VS Code and any other LSP editor. The server is
// loaded only when this command runs, so the rest of the CLI never loads LSP code.
export function registerLspCommand(program: Command): void {
  program
    .command('lsp')
    .description('start the Idiom language server (inline completions, idiom/* methods)')
    .option('--stdio', 'talk LSP over stdin/stdout (the only transport)', true)
    .action(() => {
      // require, not import(): tsx runs the CLI as CommonJS, and esbuild bundles require alike.
      const { runServer } = require('../../../server/main') as typeof import('../../../server/main');
      runServer();
    });
}
