import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';

import {
    DEFAULTS,
    SUPPORTED_LANGUAGES,
    checkCommand,
    configAction,
    expandPath,
    findExecutable,
    initializationOptions,
    languageEnabled,
    needsRestart,
    normalizeSettings,
    serverCommand,
    serverSettings,
} from '../config';

test('defaults: plain `aigc-code serve`', () => {
    const s = normalizeSettings(undefined);
    assert.deepEqual(serverCommand(s), { command: 'aigc-code', args: ['serve'] });
    assert.equal(s.enable, true);
    assert.equal(s.backend, 'local');
    assert.deepEqual(s.enabledLanguages, [...SUPPORTED_LANGUAGES]);
    assert.deepEqual(initializationOptions(s), {
        aigcCode: { backend: 'local', enabledLanguages: [...SUPPORTED_LANGUAGES] },
    });
});

test('each setting reaches the server once: backend settings only in initializationOptions', () => {
    const s = normalizeSettings({
        'server.path': '/opt/venv/bin/aigc-code',
        'server.args': ['--verbose', 7, ''],
        'server.logFile': '/tmp/aigc.log',
        model: '/models/tiny',
        adapter: '/adapters/mine',
        backend: 'openai',
    });
    assert.deepEqual(serverCommand(s), {
        command: '/opt/venv/bin/aigc-code',
        args: ['serve', '--log-file', '/tmp/aigc.log', '--verbose'],
    });
    const opts = initializationOptions(s).aigcCode as Record<string, unknown>;
    assert.equal(opts.model, '/models/tiny');
    assert.equal(opts.adapter, '/adapters/mine');
    assert.equal(opts.backend, 'openai');
    // `--check` gets them as flags: it checks exactly what the editor will use
    assert.deepEqual(checkCommand(s).args, [
        'serve', '--check', '--model', '/models/tiny', '--adapter', '/adapters/mine', '--backend', 'openai', '--verbose',
    ]);
});

test('nested configuration objects are read like flattened keys', () => {
    const s = normalizeSettings({ server: { path: 'x-code', args: ['--a'] }, model: 'm' });
    assert.deepEqual(serverCommand(s), { command: 'x-code', args: ['serve', '--a'] });
    assert.deepEqual(checkCommand(s).args, ['serve', '--check', '--model', 'm', '--a']);
});

test('paths expand ~ and ${env:..}; blanks fall back to defaults', () => {
    const env = { VENV: '/v' };
    const s = normalizeSettings(
        { 'server.path': '${env:VENV}/bin/aigc-code', model: '~/models/x', adapter: '  ', 'server.logFile': '${userHome}/l' },
        env,
        '/home/u',
    );
    assert.equal(s.server.path, '/v/bin/aigc-code');
    assert.equal(s.model, '/home/u/models/x');
    assert.equal(s.adapter, '');
    assert.equal(s.server.logFile, '/home/u/l');
    assert.equal(normalizeSettings({ 'server.path': '' }).server.path, 'aigc-code');
    assert.equal(expandPath('~', {}, '/h'), '/h');
    assert.equal(expandPath('a~b', {}, '/h'), 'a~b');
    assert.equal(expandPath('${env:MISSING}x', {}, '/h'), 'x');
});

test('invalid values are clamped or dropped', () => {
    const s = normalizeSettings({
        backend: 'bogus',
        maxNewTokens: 100000,
        temperature: -1,
        debounceMs: 'fast',
        enabledLanguages: ['python', 3, 'go'],
        enable: 'no',
    });
    assert.equal(s.backend, 'local');
    assert.equal(s.maxNewTokens, 4096);
    assert.equal(s.temperature, 0);
    assert.equal(s.debounceMs, undefined);
    assert.deepEqual(s.enabledLanguages, ['python', 'go']);
    assert.equal(s.enable, true, 'only an explicit false disables');
    assert.equal(normalizeSettings({ backend: 'OpenAI' }).backend, 'openai');
    assert.equal(normalizeSettings({ maxNewTokens: 12.6 }).maxNewTokens, 13);
});

test('openai backend: endpoint on the --check command line, not the server command line', () => {
    const s = normalizeSettings({ backend: 'openai', endpoint: 'http://gpu:8000/v1', model: 'qwen-coder' });
    assert.deepEqual(serverCommand(s).args, ['serve']);
    assert.deepEqual(checkCommand(s).args, [
        'serve', '--check', '--model', 'qwen-coder', '--backend', 'openai', '--endpoint', 'http://gpu:8000/v1',
    ]);
});

test('server settings carry the generation options under aigcCode', () => {
    const s = normalizeSettings({
        backend: 'openai',
        endpoint: 'http://gpu:8000/v1',
        maxNewTokens: 64,
        temperature: 0.2,
        debounceMs: 75,
        enabledLanguages: ['python'],
        model: 'm',
    });
    assert.deepEqual(serverSettings(s), {
        backend: 'openai',
        endpoint: 'http://gpu:8000/v1',
        maxNewTokens: 64,
        temperature: 0.2,
        debounceMs: 75,
        enabledLanguages: ['python'],
        model: 'm',
    });
    assert.deepEqual(initializationOptions(s), { aigcCode: serverSettings(s) });
});

test('restart only when the command line or environment changes', () => {
    const a = normalizeSettings({ model: 'a' });
    assert.equal(needsRestart(a, normalizeSettings({ model: 'a', temperature: 0.5 })), false);
    assert.equal(needsRestart(a, normalizeSettings({ model: 'b' })), false, 'a new model is sent, not restarted');
    assert.equal(needsRestart(a, normalizeSettings({ model: 'a', 'server.path': '/x/aigc-code' })), true);
    assert.equal(needsRestart(a, normalizeSettings({ model: 'a', 'server.args': ['--x'] })), true);
    assert.equal(needsRestart(a, normalizeSettings({ model: 'a', 'server.env': { K: 'v' } })), true);
    assert.equal(needsRestart(a, normalizeSettings({ model: 'a', enable: false })), false);
});

test('language gating', () => {
    const s = normalizeSettings({ enabledLanguages: ['python', 'rust'] });
    assert.equal(languageEnabled(s, 'python'), true);
    assert.equal(languageEnabled(s, 'go'), false);
    assert.equal(languageEnabled(normalizeSettings({ enable: false }), 'python'), false);
});

test('package.json contributes every setting config.ts reads, with matching defaults', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8'));
    const props = pkg.contributes.configuration.properties;
    const keys = [
        'enable', 'server.path', 'server.args', 'server.logFile', 'server.env', 'model', 'adapter', 'backend',
        'endpoint', 'apiKey', 'fimFormat', 'device', 'serverSettings', 'maxNewTokens', 'temperature', 'debounceMs', 'enabledLanguages', 'suggestWidget',
    ];
    for (const k of keys) {
        assert.ok(props[`aigcCode.${k}`], `aigcCode.${k} is contributed`);
    }
    assert.equal(props['aigcCode.server.path'].default, DEFAULTS.server.path);
    assert.equal(props['aigcCode.backend'].default, DEFAULTS.backend);
    assert.deepEqual(props['aigcCode.enabledLanguages'].default, [...SUPPORTED_LANGUAGES]);
    const activation = new Set(pkg.activationEvents);
    for (const lang of SUPPORTED_LANGUAGES) {
        assert.ok(activation.has(`onLanguage:${lang}`), `activates on ${lang}`);
    }
    const commands = new Set(pkg.contributes.commands.map((c: { command: string }) => c.command));
    for (const c of ['aigcCode.enable', 'aigcCode.disable', 'aigcCode.restartServer', 'aigcCode.showLog']) {
        assert.ok(commands.has(c), `${c} is contributed`);
    }
    assert.ok(pkg.dependencies['vscode-languageclient'], 'languageclient is a runtime dependency');
});

test('device, apiKey, fimFormat and pass-through server settings', () => {
    const s = normalizeSettings({
        device: 'cpu',
        apiKey: 'sk-1',
        fimFormat: 'suffix',
        backend: 'openai',
        serverSettings: { topP: 0.9, timeBudgetMs: 500, backend: 'local' },
    });
    assert.deepEqual(serverCommand(s).args, ['serve']);
    assert.deepEqual(checkCommand(s).args, ['serve', '--check', '--backend', 'openai', '--device', 'cpu', '--fim-format', 'suffix']);
    const out = serverSettings(s);
    assert.equal(out.topP, 0.9);
    assert.equal(out.timeBudgetMs, 500);
    assert.equal(out.backend, 'openai', 'explicit settings win over the pass-through object');
    assert.equal(out.apiKey, 'sk-1');
    assert.equal(out.fimFormat, 'suffix');
    assert.equal(out.device, 'cpu');
    assert.deepEqual(normalizeSettings({ serverSettings: [1] }).extra, {});
});

test('no setting is machine-scoped: User settings apply in remote windows (code-server, SSH, WSL)', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8'));
    for (const [key, prop] of Object.entries(pkg.contributes.configuration.properties as Record<string, { scope?: string }>)) {
        assert.ok(prop.scope !== 'machine' && prop.scope !== 'machine-overridable', `${key} has scope ${prop.scope}`);
    }
});

test('settings changed while disabled are applied on Enable', () => {
    const running = normalizeSettings({ 'server.path': '/a/aigc-code', model: 'm1' });
    // while disabled: any change just keeps completions off
    assert.equal(configAction(running, normalizeSettings({ enable: false, model: 'm2' })), 'disable');
    // Enable: compared with what the running server was given, not with the disabled-time settings
    assert.equal(configAction(running, normalizeSettings({ 'server.path': '/a/aigc-code', model: 'm2' })), 'notify');
    assert.equal(configAction(running, normalizeSettings({ 'server.path': '/b/aigc-code', model: 'm1' })), 'restart');
    assert.equal(configAction(running, normalizeSettings({ 'server.path': '/a/aigc-code', model: 'm1' })), 'none');
    assert.equal(configAction(undefined, running), 'start');
});

test('findExecutable: paths as they are, names through PATH', () => {
    const present = new Set(['/usr/bin/aigc-code', '/opt/v/bin/aigc-code']);
    const isExe = (p: string) => present.has(p);
    assert.equal(findExecutable('aigc-code', '/nope:/usr/bin', isExe), '/usr/bin/aigc-code');
    assert.equal(findExecutable('aigc-code', '/nope', isExe), undefined);
    assert.equal(findExecutable('/opt/v/bin/aigc-code', '', isExe), '/opt/v/bin/aigc-code');
    assert.equal(findExecutable('/missing/aigc-code', '/usr/bin', isExe), undefined);
    assert.equal(findExecutable('', '/usr/bin', isExe), undefined);
});
