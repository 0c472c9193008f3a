/**
 * Normalisation of server responses into inline-completion items (no `vscode` import; unit-tested).
 *
 * The server answers `textDocument/inlineCompletion` with `InlineCompletionList | InlineCompletionItem[]
 * | null` (LSP 3.18) and `textDocument/completion` with `CompletionList | CompletionItem[] | null`.
 * The completion path is only used when a server does not advertise `inlineCompletionProvider`.
 * Positions are LSP positions (UTF-16 code units), the same unit VS Code uses.
 */

export interface Pos {
    line: number;
    character: number;
}

export interface Rng {
    start: Pos;
    end: Pos;
}

export interface InlineItem {
    insertText: string;
    /** Text to replace; when absent the text is inserted at the cursor. */
    range?: Rng;
    /** `insertText` is a snippet (`$1`, `${2:x}` ...). */
    isSnippet: boolean;
    filterText?: string;
}

function isObj(v: unknown): v is Record<string, unknown> {
    return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isPos(v: unknown): v is Pos {
    return isObj(v) && Number.isInteger(v.line) && Number.isInteger(v.character) &&
        (v.line as number) >= 0 && (v.character as number) >= 0;
}

export function isRange(v: unknown): v is Rng {
    return isObj(v) && isPos(v.start) && isPos(v.end) && comparePos(v.start, v.end) <= 0;
}

export function comparePos(a: Pos, b: Pos): number {
    return a.line !== b.line ? a.line - b.line : a.character - b.character;
}

export function rangeContains(r: Rng, p: Pos): boolean {
    return comparePos(r.start, p) <= 0 && comparePos(p, r.end) <= 0;
}

function copyRange(r: Rng): Rng {
    return {
        start: { line: r.start.line, character: r.start.character },
        end: { line: r.end.line, character: r.end.character },
    };
}

function inlineItem(raw: unknown, position?: Pos): InlineItem | undefined {
    if (typeof raw === 'string') {
        return raw ? { insertText: raw, isSnippet: false } : undefined;
    }
    if (!isObj(raw)) {
        return undefined;
    }
    let text: string | undefined;
    let isSnippet = false;
    const it = raw.insertText;
    if (typeof it === 'string') {
        text = it;
    } else if (isObj(it) && typeof it.value === 'string') {
        // StringValue {kind: 'snippet', value}
        text = it.value;
        isSnippet = it.kind === 'snippet';
    }
    if (!text) {
        return undefined;
    }
    const item: InlineItem = { insertText: text, isSnippet };
    if (raw.range !== undefined && raw.range !== null) {
        if (!isRange(raw.range)) {
            return undefined;
        }
        if (position && !rangeContains(raw.range, position)) {
            return undefined;
        }
        item.range = copyRange(raw.range);
    }
    if (typeof raw.filterText === 'string') {
        item.filterText = raw.filterText;
    }
    return item;
}

function dedupe(items: InlineItem[]): InlineItem[] {
    const seen = new Set<string>();
    return items.filter((i) => {
        const key = JSON.stringify([i.insertText, i.range, i.isSnippet]);
        if (seen.has(key)) {
            return false;
        }
        seen.add(key);
        return true;
    });
}

/**
 * `InlineCompletionList | InlineCompletionItem[] | null` -> items.
 * Drops empty suggestions, malformed ranges and ranges that do not contain `position` (when given).
 */
export function normalizeInlineResponse(result: unknown, position?: Pos): InlineItem[] {
    let raw: unknown[];
    if (Array.isArray(result)) {
        raw = result;
    } else if (isObj(result) && Array.isArray(result.items)) {
        raw = result.items;
    } else {
        return [];
    }
    const out: InlineItem[] = [];
    for (const r of raw) {
        const item = inlineItem(r, position);
        if (item) {
            out.push(item);
        }
    }
    return dedupe(out);
}

const SNIPPET_FORMAT = 2;

function completionSortKey(item: Record<string, unknown>): string {
    if (typeof item.sortText === 'string') {
        return item.sortText;
    }
    return typeof item.label === 'string' ? item.label : '';
}

/**
 * `CompletionList | CompletionItem[] | null` -> inline items (fallback path). Preselected items first,
 * then by `sortText`. A `textEdit` (or the `insert` range of an `InsertReplaceEdit`) becomes the range.
 */
export function completionToInline(result: unknown, position?: Pos): InlineItem[] {
    let raw: unknown[];
    let defaultRange: unknown;
    if (Array.isArray(result)) {
        raw = result;
    } else if (isObj(result) && Array.isArray(result.items)) {
        raw = result.items;
        const defaults = result.itemDefaults;
        if (isObj(defaults) && defaults.editRange !== undefined) {
            defaultRange = isObj(defaults.editRange) && 'insert' in defaults.editRange
                ? defaults.editRange.insert
                : defaults.editRange;
        }
    } else {
        return [];
    }
    const items = raw.filter(isObj);
    const ranked = items
        .map((item, index) => ({ item, index }))
        .sort((a, b) => {
            const pa = a.item.preselect === true ? 0 : 1;
            const pb = b.item.preselect === true ? 0 : 1;
            if (pa !== pb) {
                return pa - pb;
            }
            const ka = completionSortKey(a.item);
            const kb = completionSortKey(b.item);
            return ka < kb ? -1 : ka > kb ? 1 : a.index - b.index;
        });
    const out: InlineItem[] = [];
    for (const { item } of ranked) {
        const isSnippet = item.insertTextFormat === SNIPPET_FORMAT;
        let text: string | undefined;
        let range: unknown;
        const te = item.textEdit;
        if (isObj(te) && typeof te.newText === 'string') {
            text = te.newText;
            range = 'insert' in te ? te.insert : te.range;
        } else {
            text = typeof item.textEditText === 'string'
                ? item.textEditText
                : typeof item.insertText === 'string'
                    ? item.insertText
                    : typeof item.label === 'string' ? item.label : undefined;
            range = defaultRange;
        }
        const converted = inlineItem(
            { insertText: isSnippet && text !== undefined ? { kind: 'snippet', value: text } : text, range },
            position,
        );
        if (converted) {
            if (typeof item.filterText === 'string') {
                converted.filterText = item.filterText;
            }
            out.push(converted);
        }
    }
    return dedupe(out);
}

/**
 * The part of `item` that would appear after the cursor, given the current text of the range start line
 * up to the cursor. Used for status/log messages; `undefined` when the item does not extend the text
 * already typed (VS Code would hide it).
 */
export function visibleSuffix(item: InlineItem, typedBeforeCursor: string, position: Pos): string | undefined {
    if (!item.range) {
        return item.insertText;
    }
    if (item.range.start.line !== position.line) {
        return undefined;
    }
    const already = typedBeforeCursor.slice(item.range.start.character, position.character);
    if (!item.insertText.startsWith(already)) {
        return undefined;
    }
    return item.insertText.slice(already.length);
}

/**
 * Keep only what VS Code can show while the suggest widget is open (`context.selectedCompletionInfo`):
 * VS Code hides an inline suggestion that does not extend the widget's selected item. An item that does
 * (the typed text from `selected.range.start` plus the item's text starts with `selected.text`) is
 * returned with its range widened to start where the selected item's range starts, so that accepting it
 * replaces the same text the widget would; the others are dropped (never shown, never taking Tab).
 * `lineText` is the cursor's line.
 */
export function fitSelectedCompletion(items: InlineItem[], selected: { range: Rng; text: string } | undefined, lineText: string, position: Pos): InlineItem[] {
    if (!selected) {
        return items;
    }
    const start = selected.range.start;
    if (start.line !== position.line || start.character > position.character) {
        return [];
    }
    const typed = lineText.slice(start.character, position.character);
    const out: InlineItem[] = [];
    for (const item of items) {
        const itemStart = item.range ? item.range.start : position;
        if (item.isSnippet || itemStart.line !== position.line || itemStart.character < start.character) {
            continue;
        }
        // the text from the selected item's start to the cursor, then the item's replacement
        const full = lineText.slice(start.character, itemStart.character) + item.insertText;
        if (!full.startsWith(selected.text) || full.length <= Math.max(selected.text.length, typed.length)) {
            continue;
        }
        const end = item.range ? item.range.end : position;
        out.push({ ...item, insertText: full, range: { start: { ...start }, end: { ...end } } });
    }
    return out;
}
