import { test } from 'node:test';
import assert from 'node:assert/strict';

import { completionToInline, fitSelectedCompletion, normalizeInlineResponse, rangeContains, visibleSuffix } from '../normalize';

const pos = { line: 3, character: 8 };
const r = (l1: number, c1: number, l2: number, c2: number) => ({
    start: { line: l1, character: c1 },
    end: { line: l2, character: c2 },
});

test('InlineCompletionList and bare arrays', () => {
    const list = { items: [{ insertText: 'return x' }, { insertText: 'pass', range: r(3, 4, 3, 8) }] };
    assert.deepEqual(normalizeInlineResponse(list, pos), [
        { insertText: 'return x', isSnippet: false },
        { insertText: 'pass', isSnippet: false, range: r(3, 4, 3, 8) },
    ]);
    assert.deepEqual(normalizeInlineResponse([{ insertText: 'a' }]), [{ insertText: 'a', isSnippet: false }]);
});

test('null, empty and malformed responses give no items', () => {
    for (const v of [null, undefined, 42, 'x', {}, { items: null }, [], { items: [] }]) {
        assert.deepEqual(normalizeInlineResponse(v), []);
    }
    assert.deepEqual(normalizeInlineResponse([{ insertText: '' }, {}, null, { insertText: 5 }]), []);
});

test('snippet StringValue', () => {
    const out = normalizeInlineResponse([{ insertText: { kind: 'snippet', value: 'foo(${1:x})' } }]);
    assert.deepEqual(out, [{ insertText: 'foo(${1:x})', isSnippet: true }]);
});

test('ranges must be well formed and contain the cursor', () => {
    assert.deepEqual(normalizeInlineResponse([{ insertText: 'a', range: r(3, 9, 3, 2) }]), []);
    assert.deepEqual(normalizeInlineResponse([{ insertText: 'a', range: { start: 1 } }]), []);
    assert.deepEqual(normalizeInlineResponse([{ insertText: 'a', range: r(1, 0, 1, 1) }], pos), []);
    assert.equal(normalizeInlineResponse([{ insertText: 'a', range: r(1, 0, 1, 1) }]).length, 1);
    assert.equal(rangeContains(r(3, 8, 3, 8), pos), true);
    assert.equal(rangeContains(r(2, 0, 4, 0), pos), true);
    assert.equal(rangeContains(r(3, 9, 3, 10), pos), false);
});

test('multi-line text is kept verbatim, duplicates dropped', () => {
    const text = 'if x:\n    return 1\nreturn 2';
    assert.deepEqual(normalizeInlineResponse({ items: [{ insertText: text }, { insertText: text }] }), [
        { insertText: text, isSnippet: false },
    ]);
});

test('completion fallback: the server\'s single textEdit item', () => {
    const result = {
        isIncomplete: true,
        items: [
            {
                label: 'return a + b',
                sortText: '0',
                preselect: true,
                textEdit: { range: r(3, 4, 3, 8), newText: 'retu' + 'rn a + b' },
                filterText: 'retu',
            },
        ],
    };
    assert.deepEqual(completionToInline(result, pos), [
        { insertText: 'return a + b', isSnippet: false, range: r(3, 4, 3, 8), filterText: 'retu' },
    ]);
});

test('completion fallback: preselect and sortText order, insertText/label, InsertReplaceEdit, snippets', () => {
    const items = [
        { label: 'c', sortText: '2' },
        { label: 'b', sortText: '1', insertText: 'bee' },
        { label: 'a', sortText: '9', preselect: true, insertTextFormat: 2, insertText: 'a($1)' },
        { label: 'd', sortText: '3', textEdit: { insert: r(3, 6, 3, 8), replace: r(3, 6, 3, 12), newText: 'dd' } },
    ];
    assert.deepEqual(completionToInline(items, pos), [
        { insertText: 'a($1)', isSnippet: true },
        { insertText: 'bee', isSnippet: false },
        { insertText: 'c', isSnippet: false },
        { insertText: 'dd', isSnippet: false, range: r(3, 6, 3, 8) },
    ]);
    assert.deepEqual(completionToInline(null), []);
    assert.deepEqual(
        completionToInline({ items: [{ label: 'x' }], itemDefaults: { editRange: r(3, 7, 3, 8) } }, pos),
        [{ insertText: 'x', isSnippet: false, range: r(3, 7, 3, 8) }],
    );
});

test('visible suffix after the typed prefix', () => {
    const line = '    retu';
    assert.equal(visibleSuffix({ insertText: 'return 1', isSnippet: false, range: r(3, 4, 3, 8) }, line, pos), 'rn 1');
    assert.equal(visibleSuffix({ insertText: 'pass', isSnippet: false, range: r(3, 4, 3, 8) }, line, pos), undefined);
    assert.equal(visibleSuffix({ insertText: 'x = 1', isSnippet: false }, line, pos), 'x = 1');
});

test('suggest widget open: only items extending its selected item, widened to its range', () => {
    // `cons|` with the widget's `console` selected (range = the typed word)
    const line = 'cons';
    const pos = { line: 0, character: 4 };
    const selected = { range: { start: { line: 0, character: 0 }, end: { line: 0, character: 4 } }, text: 'console' };
    const extend = { insertText: 'ole.log(x);', isSnippet: false, range: { start: pos, end: pos } };
    const other = { insertText: 't x = 1;', isSnippet: false, range: { start: pos, end: pos } };
    const out = fitSelectedCompletion([extend, other], selected, line, pos);
    assert.deepEqual(out, [{ insertText: 'console.log(x);', isSnippet: false, range: { start: { line: 0, character: 0 }, end: pos } }]);
    // without the widget nothing changes
    assert.deepEqual(fitSelectedCompletion([extend, other], undefined, line, pos), [extend, other]);
    // an item that equals the selected item adds nothing: dropped
    assert.deepEqual(fitSelectedCompletion([{ insertText: 'ole', isSnippet: false }], selected, line, pos), []);
});
