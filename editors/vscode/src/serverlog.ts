/**
 * Server stderr -> log levels (no `vscode` import; unit-tested).
 *
 * The server logs `2026-12-02 05:00:00,123 INFO aigc_code.server: message` to stderr. vscode-languageclient
 * shows every stderr line as `[error]`; the extension routes each line to the level the server gave it.
 * Lines without a level (a traceback's continuation lines) keep the level of the line before them.
 */

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error';

const LEVELS: Record<string, LogLevel> = {
    DEBUG: 'debug',
    INFO: 'info',
    WARNING: 'warn',
    WARN: 'warn',
    ERROR: 'error',
    CRITICAL: 'error',
};

const LINE = /^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[,.]\d+)?\s+([A-Z]+)\s+(.*)$/;

/** The level and the text (without the timestamp and level, which the output channel adds itself). */
export function parseServerLine(line: string, previous: LogLevel = 'info'): { level: LogLevel; text: string } {
    const m = LINE.exec(line);
    if (m && LEVELS[m[1]]) {
        return { level: LEVELS[m[1]], text: m[2] };
    }
    return { level: previous, text: line };
}

/** A line-by-line router: remembers the last level for continuation lines. */
export function serverLineRouter(sink: (level: LogLevel, text: string) => void): (line: string) => void {
    let last: LogLevel = 'info';
    return (line: string) => {
        if (!line.trim()) {
            return;
        }
        const { level, text } = parseServerLine(line, last);
        last = level;
        sink(level, text);
    };
}
