import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
    StatusState,
    backendState,
    formatLatency,
    formatStatus,
    initialState,
    requestCancelled,
    requestFinished,
    requestStarted,
    withKind,
} from '../status';

test('latency formatting', () => {
    assert.equal(formatLatency(0), '0 ms');
    assert.equal(formatLatency(123.4), '123 ms');
    assert.equal(formatLatency(1234), '1.2 s');
    assert.equal(formatLatency(12345), '12 s');
    assert.equal(formatLatency(NaN), '');
    assert.equal(formatLatency(-5), '');
});

test('status texts', () => {
    assert.equal(formatStatus(initialState()).text, '$(loading~spin) aigc');
    const ready = withKind(initialState(), 'ready');
    assert.equal(formatStatus(ready).text, '$(sparkle) aigc');
    assert.equal(formatStatus({ ...ready, lastLatencyMs: 420 }).text, '$(sparkle) aigc 420 ms');
    const err = formatStatus(withKind(ready, 'error', 'boom'));
    assert.equal(err.text, '$(error) aigc');
    assert.match(err.tooltip, /boom/);
    assert.equal(err.background, 'statusBarItem.errorBackground');
    assert.equal(formatStatus(withKind(ready, 'disabled')).text, '$(circle-slash) aigc');
    assert.match(formatStatus({ ...ready, detail: 'backend: local' }).tooltip, /backend: local/);
});

test('request lifecycle: generating -> ready with latency', () => {
    let s = withKind(initialState(), 'ready');
    s = requestStarted(s);
    assert.equal(s.kind, 'generating');
    assert.equal(formatStatus(s).text, '$(loading~spin) aigc');
    s = requestStarted(s);
    s = requestFinished(s, 100);
    assert.equal(s.kind, 'generating', 'still one in flight');
    s = requestFinished(s, 250);
    assert.equal(s.kind, 'ready');
    assert.equal(s.lastLatencyMs, 250);
    assert.equal(s.inFlight, 0);
});

test('errors are shown until the next successful request', () => {
    let s = requestFinished(requestStarted(withKind(initialState(), 'ready')), 10, 'server crashed');
    assert.equal(s.kind, 'error');
    assert.equal(s.message, 'server crashed');
    s = requestFinished(requestStarted(s), 30);
    assert.equal(s.kind, 'ready');
    assert.equal(s.message, undefined);
});

test('cancelled requests do not touch latency', () => {
    let s: StatusState = { ...withKind(initialState(), 'ready'), lastLatencyMs: 77 };
    s = requestCancelled(requestStarted(s));
    assert.equal(s.kind, 'ready');
    assert.equal(s.lastLatencyMs, 77);
    assert.equal(requestCancelled(s).inFlight, 0, 'never negative');
});

test('disabled and stopped states are not overridden by requests', () => {
    const d = withKind(initialState(), 'disabled');
    assert.equal(requestStarted(d).kind, 'disabled');
    assert.equal(requestFinished(requestStarted(d), 5, 'x').kind, 'disabled');
    const st = withKind(initialState(), 'stopped');
    assert.equal(requestFinished(requestStarted(st), 5).kind, 'stopped');
});

test('backend state from aigcCode/status', () => {
    assert.deepEqual(backendState({ backend: 'loading' }), { kind: 'starting', message: 'loading the model' });
    assert.deepEqual(backendState({ backend: 'not loaded' }).kind, 'starting');
    assert.deepEqual(backendState({ backend: 'error: no such model /x' }), { kind: 'error', message: 'no such model /x' });
    assert.deepEqual(backendState({ backend: 'local model /m on cpu' }), { kind: 'ready', message: 'local model /m on cpu' });
    assert.deepEqual(backendState(null), { kind: 'ready' });
    assert.deepEqual(backendState({}), { kind: 'ready' });
});
