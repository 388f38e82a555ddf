// The commands package.json contributes (those in the command palette). commands.ts must register a
// factory for each (its table is typed by these ids) and a unit test checks that package.json lists
// exactly these. No 'vscode' import, so tests load it.
export const CONTRIBUTED_COMMANDS = [
  'idiom.retrain',
  'idiom.showAdapters',
  'idiom.switchMode',
  'idiom.toggleCompletions',
  'idiom.showMenu',
  'idiom.showTrainingReport',
  'idiom.showAdapterHistory',
  'idiom.chooseBaseModel',
  'idiom.showOutput',
  'idiom.restartServer',
  'idiom.combineAdapters',
  'idiom.setEndpointKey',
  'idiom.publishAdapter',
  'idiom.fetchAdapters',
] as const;

export type ContributedCommand = (typeof CONTRIBUTED_COMMANDS)[number];
