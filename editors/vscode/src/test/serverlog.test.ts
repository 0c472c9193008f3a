import { test } from 'node:test';
import assert from 'node:assert/strict';

import { LogLevel, parseServerLine, serverLineRouter } from '../serverlog';

test('server stderr lines keep their level (not all [error])', () => {
    assert.deepEqual(parseServerLine('2026-12-02 05:00:00,123 INFO aigc_code.server: ready'), { level: 'info', text: 'aigc_code.server: ready' });
    assert.equal(parseServerLine('2026-12-02 05:00:00,123 DEBUG aigc_code.server: completion').level, 'debug');
    assert.equal(parseServerLine('2026-12-02 05:00:00,123 WARNING x: y').level, 'warn');
    assert.equal(parseServerLine('2026-12-02 05:00:00,123 ERROR x: y').level, 'error');
    assert.equal(parseServerLine('no level here', 'warn').level, 'warn');
});

test('traceback lines follow the level of the line before', () => {
    const seen: [LogLevel, string][] = [];
    const route = serverLineRouter((level, text) => seen.push([level, text]));
    route('2026-12-02 05:00:00,123 ERROR aigc_code.server: boom');
    route('Traceback (most recent call last):');
    route('');
    route('2026-12-02 05:00:01,000 INFO aigc_code.server: fine');
    assert.deepEqual(seen.map((s) => s[0]), ['error', 'error', 'info']);
});
