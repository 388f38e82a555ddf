// Languages Idiom can mine: how a path maps to a language, which tree-sitter grammar parses it
// (the .wasm files shipped by @vscode/tree-sitter-wasm), and which syntax nodes count as chunks.

export type ChunkKind = 'function' | 'method' | 'class';

export interface LanguageSpec {
  id: string;
  // File name inside @vscode/tree-sitter-wasm/wasm/.
  grammar: string;
  extensions: string[];
  // Interpreter names that mark an extensionless script (`#!/usr/bin/env python3`).
  shebangs?: string[];
  // Node type → chunk kind. Methods are also recognised as functions nested in a class.
  chunkNodes: Record<string, ChunkKind>;
}

const javascriptChunks: Record<string, ChunkKind> = {
  function_declaration: 'function',
  generator_function_declaration: 'function',
  function_expression: 'function',
  arrow_function: 'function',
  method_definition: 'method',
  class_declaration: 'class',
  class: 'class',
};

const typescriptChunks: Record<string, ChunkKind> = {
  ...javascriptChunks,
  function_signature: 'function',
  abstract_class_declaration: 'class',
  interface_declaration: 'class',
  enum_declaration: 'class',
  abstract_method_signature: 'method',
  method_signature: 'method',
  module: 'class',
  internal_module: 'class',
};

export const LANGUAGES: readonly LanguageSpec[] = [
  {
    id: 'typescript',
    grammar: 'tree-sitter-typescript.wasm',
    extensions: ['.ts', '.mts', '.cts'],
    chunkNodes: typescriptChunks,
  },
  { id: 'tsx', grammar: 'tree-sitter-tsx.wasm', extensions: ['.tsx'], chunkNodes: typescriptChunks },
  {
    id: 'javascript',
    grammar: 'tree-sitter-javascript.wasm',
    extensions: ['.js', '.mjs', '.cjs', '.jsx'],
    shebangs: ['node', 'nodejs', 'deno', 'bun'],
    chunkNodes: javascriptChunks,
  },
  {
    id: 'python',
    grammar: 'tree-sitter-python.wasm',
    extensions: ['.py', '.pyi', '.pyw'],
    shebangs: ['python', 'python3', 'python2'],
    chunkNodes: { function_definition: 'function', class_definition: 'class' },
  },
  {
    id: 'go',
    grammar: 'tree-sitter-go.wasm',
    extensions: ['.go'],
    chunkNodes: {
      function_declaration: 'function',
      method_declaration: 'method',
      func_literal: 'function',
      type_declaration: 'class',
    },
  },
  {
    id: 'rust',
    grammar: 'tree-sitter-rust.wasm',
    extensions: ['.rs'],
    chunkNodes: {
      function_item: 'function',
      function_signature_item: 'function',
      closure_expression: 'function',
      impl_item: 'class',
      struct_item: 'class',
      enum_item: 'class',
      trait_item: 'class',
      union_item: 'class',
      mod_item: 'class',
    },
  },
  {
    id: 'java',
    grammar: 'tree-sitter-java.wasm',
    extensions: ['.java'],
    chunkNodes: {
      method_declaration: 'method',
      constructor_declaration: 'method',
      lambda_expression: 'function',
      class_declaration: 'class',
      interface_declaration: 'class',
      enum_declaration: 'class',
      record_declaration: 'class',
      annotation_type_declaration: 'class',
    },
  },
  {
    id: 'csharp',
    grammar: 'tree-sitter-c-sharp.wasm',
    extensions: ['.cs'],
    chunkNodes: {
      method_declaration: 'method',
      constructor_declaration: 'method',
      local_function_statement: 'function',
      lambda_expression: 'function',
      class_declaration: 'class',
      struct_declaration: 'class',
      interface_declaration: 'class',
      record_declaration: 'class',
      enum_declaration: 'class',
    },
  },
  {
    // The C++ grammar also parses C well enough for chunking; no separate C grammar is shipped.
    id: 'cpp',
    grammar: 'tree-sitter-cpp.wasm',
    extensions: ['.cc', '.cpp', '.cxx', '.c++', '.hh', '.hpp', '.hxx', '.h++', '.c', '.h', '.ipp', '.inl'],
    chunkNodes: {
      function_definition: 'function',
      lambda_expression: 'function',
      class_specifier: 'class',
      struct_specifier: 'class',
      union_specifier: 'class',
      enum_specifier: 'class',
      namespace_definition: 'class',
      template_declaration: 'class',
    },
  },
  {
    id: 'ruby',
    grammar: 'tree-sitter-ruby.wasm',
    extensions: ['.rb', '.rake', '.gemspec'],
    shebangs: ['ruby'],
    chunkNodes: {
      method: 'method',
      singleton_method: 'method',
      class: 'class',
      module: 'class',
      singleton_class: 'class',
    },
  },
  {
    id: 'php',
    grammar: 'tree-sitter-php.wasm',
    extensions: ['.php'],
    shebangs: ['php'],
    chunkNodes: {
      function_definition: 'function',
      method_declaration: 'method',
      anonymous_function: 'function',
      arrow_function: 'function',
      class_declaration: 'class',
      interface_declaration: 'class',
      trait_declaration: 'class',
      enum_declaration: 'class',
    },
  },
  {
    id: 'bash',
    grammar: 'tree-sitter-bash.wasm',
    extensions: ['.sh', '.bash', '.zsh'],
    shebangs: ['sh', 'bash', 'zsh', 'dash', 'ksh'],
    chunkNodes: { function_definition: 'function' },
  },
];

const byExtension = new Map<string, LanguageSpec>();
for (const language of LANGUAGES) for (const extension of language.extensions) byExtension.set(extension, language);
const byInterpreter = new Map<string, LanguageSpec>();
for (const language of LANGUAGES) for (const name of language.shebangs ?? []) byInterpreter.set(name, language);

export function languageById(id: string): LanguageSpec | undefined {
  return LANGUAGES.find((language) => language.id === id);
}

export function fileExtension(path: string): string {
  const base = path.slice(path.lastIndexOf('/') + 1);
  const dot = base.lastIndexOf('.');
  return dot <= 0 ? '' : base.slice(dot).toLowerCase();
}

// Language of a path by its extension; undefined for an unknown extension.
export function languageForPath(path: string): LanguageSpec | undefined {
  return byExtension.get(fileExtension(path));
}

// Language of an extensionless script by its `#!` line.
export function languageForShebang(firstLine: string): LanguageSpec | undefined {
  const match = /^#!\s*(\S+)(?:\s+(\S+))?/.exec(firstLine);
  if (!match) return undefined;
  let interpreter = match[1].slice(match[1].lastIndexOf('/') + 1);
  if (interpreter === 'env' && match[2]) interpreter = match[2];
  interpreter = interpreter.replace(/[\d.]+$/, '') || interpreter;
  return byInterpreter.get(interpreter) ?? byInterpreter.get(`${interpreter}3`);
}
