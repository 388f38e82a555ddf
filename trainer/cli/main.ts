import { Command } from 'commander';
import { registerAdaptersCommand } from './commands/adapters';
import { registerBenchCommand } from './commands/bench';
import { registerLspCommand } from './commands/lsp';
import { registerMineCommand } from './commands/mine';
import { registerModelsCommand } from './commands/models';
import { registerTrainCommand } from './commands/train';
import { registerEvalCommand } from './commands/eval';
import { registerAuditCommand } from './commands/audit';
import { registerReviewCommand } from './commands/review';
import { registerStatusCommand } from './commands/status';
import { installInterruptHandlers } from './interrupt';

// The `idiom` command line. Each subcommand lives in its own module under trainer/cli/commands/.
export function buildProgram(): Command {
  const program = new Command();
  program
    .name('idiom')
    .description('Learn the idioms of a repository and complete code the way it writes it.')
    .showHelpAfterError();
  registerLspCommand(program);
  registerBenchCommand(program);
  registerAdaptersCommand(program);
  registerMineCommand(program);
  registerModelsCommand(program);
  registerTrainCommand(program);
  registerEvalCommand(program);
  registerAuditCommand(program);
  registerReviewCommand(program);
  registerStatusCommand(program);
  return program;
}

export async function main(): Promise<void> {
  installInterruptHandlers();
  const program = buildProgram();
  try {
    await program.parseAsync(process.argv);
  } catch (error) {
    // One clear line on bad input; the stack only when asked for.
    const message = error instanceof Error ? error.message : String(error);
    process.stderr.write(`idiom: ${message}\n`);
    if (process.env.IDIOM_DEBUG) process.stderr.write(`${(error as Error)?.stack ?? ''}\n`);
    process.exitCode = 1;
  }
}
