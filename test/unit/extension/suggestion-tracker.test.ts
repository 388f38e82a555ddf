import { strict as assert } from 'node:assert';
import { SuggestionTracker } from '../../../extension/suggestion-tracker';
import type { SuggestionEventParams } from '../../../server/protocol';

// The events the extension tells the server, from what the editor does with a suggestion.

describe('extension: SuggestionTracker', () => {
  const uri = 'file:///repo/src/main.ts';
  const text = 'items.reduce((sum, item) => sum + item.price, 0);';
  let events: SuggestionEventParams[];
  let tracker: SuggestionTracker;
  const settle = () => new Promise((resolve) => setTimeout(resolve, 30));
  beforeEach(() => {
    events = [];
    tracker = new SuggestionTracker((event) => events.push(event), 10);
  });
  afterEach(() => tracker.dispose());

  it('shown once; a word accepted is partial; typing through is not; the rest accepted is no dismissal', async () => {
    tracker.served(uri, 100, 's1', text);
    tracker.served(uri, 100, 's1', text);
    const word = 'items.';
    tracker.changed(uri, [{ offset: 100, removed: 0, text: word }]);
    tracker.moved(uri, 100 + word.length);
    // Typed through one character, then asked again: the same text is the same suggestion.
    tracker.changed(uri, [{ offset: 100 + word.length, removed: 0, text: 'r' }]);
    const at = 100 + word.length + 1;
    tracker.served(uri, at, 's2', text.slice(word.length + 1));
    tracker.changed(uri, [{ offset: at, removed: 0, text: text.slice(word.length + 1) }]);
    tracker.accepted('s1');
    await settle();
    assert.deepEqual(events, [
      { id: 's1', event: 'shown' },
      { id: 's1', event: 'partial', chars: word.length },
    ]);
  });

  it('another edit, the cursor leaving or a new suggestion elsewhere dismisses it', async () => {
    tracker.served(uri, 10, 'a', text);
    tracker.changed(uri, [{ offset: 10, removed: 0, text: 'x' }]);
    tracker.served(uri, 11, 'b', text);
    tracker.moved(uri, 40);
    tracker.served(uri, 40, 'c', text);
    tracker.served(uri, 80, 'd', 'other');
    // An edit in another document leaves it alone.
    tracker.changed('file:///repo/other.ts', [{ offset: 80, removed: 0, text: 'zz' }]);
    await settle();
    assert.deepEqual(events, [
      { id: 'a', event: 'shown' },
      { id: 'b', event: 'shown' },
      { id: 'c', event: 'shown' },
      { id: 'd', event: 'shown' },
      { id: 'a', event: 'dismissed' },
      { id: 'b', event: 'dismissed' },
      { id: 'c', event: 'dismissed' },
    ]);
  });

  it('an accept command just after an edit that did not match cancels the dismissal', async () => {
    tracker.served(uri, 10, 'a', text);
    // VS Code may adjust what it inserts (indentation, brackets); the command still says accepted.
    tracker.changed(uri, [{ offset: 10, removed: 0, text: `${text})` }]);
    tracker.accepted('a');
    await settle();
    assert.deepEqual(events, [{ id: 'a', event: 'shown' }]);
  });
});
