/**
 * Protocol-level integration test against the real `aigc-code serve`, using the extension's own
 * settings -> command line / initializationOptions and response normalisation (everything the extension
 * does except the VS Code UI). Skipped unless AIGC_CODE_BIN is set; .ci/editors.sh sets it, together
 * with AIGC_TEST_MODEL (a tiny model directory; unset = the server's built-in default model).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';

import {
    CompletionRequest,
    ConfigurationRequest,
    DidChangeConfigurationNotification,
    DidChangeTextDocumentNotification,
    DidOpenTextDocumentNotification,
    ExitNotification,
    InitializeRequest,
    InitializedNotification,
    InlineCompletionRequest,
    ShutdownRequest,
    StreamMessageReader,
    StreamMessageWriter,
    createProtocolConnection,
} from 'vscode-languageserver-protocol/node';

import { initializationOptions, normalizeSettings, serverCommand, serverSettings } from '../config';
import { completionToInline, normalizeInlineResponse } from '../normalize';
import { backendState } from '../status';

const bin = process.env.AIGC_CODE_BIN;
const model = process.env.AIGC_TEST_MODEL;

test('extension <-> real aigc-code server', { skip: bin ? false : 'AIGC_CODE_BIN not set', timeout: 600_000 }, async () => {
    const settings = normalizeSettings({
        'server.path': bin,
        model: model || '',
        maxNewTokens: 24,
        temperature: 0,
        enabledLanguages: ['python', 'typescript'],
    });
    const cmd = serverCommand(settings);
    const proc = spawn(cmd.command, cmd.args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    proc.stderr.on('data', (d: Buffer) => {
        stderr += d.toString();
    });
    const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
    const conn = createProtocolConnection(new StreamMessageReader(proc.stdout), new StreamMessageWriter(proc.stdin));
    conn.onRequest(ConfigurationRequest.type, (params) => params.items.map(() => serverSettings(settings)));
    for (const method of ['client/registerCapability', 'client/unregisterCapability', 'window/workDoneProgress/create']) {
        conn.onRequest(method, () => null);
    }
    const logs: string[] = [];
    for (const method of ['window/logMessage', 'window/showMessage', '$/progress', 'telemetry/event']) {
        conn.onNotification(method, (p: { message?: string }) => {
            if (p && typeof p.message === 'string') {
                logs.push(p.message);
            }
        });
    }
    conn.listen();
    try {
        const init = await conn.sendRequest(InitializeRequest.type, {
            processId: process.pid,
            rootUri: null,
            workspaceFolders: null,
            initializationOptions: initializationOptions(settings),
            capabilities: {
                general: { positionEncodings: ['utf-16'] },
                textDocument: {
                    synchronization: { dynamicRegistration: false },
                    completion: { completionItem: { snippetSupport: true } },
                    inlineCompletion: { dynamicRegistration: false },
                },
                workspace: { configuration: true, didChangeConfiguration: { dynamicRegistration: false } },
            },
        });
        const caps = init.capabilities as Record<string, unknown>;
        assert.ok(caps.inlineCompletionProvider, 'inlineCompletionProvider advertised');
        assert.ok(caps.completionProvider, 'completionProvider advertised');
        assert.ok(
            caps.positionEncoding === undefined || caps.positionEncoding === 'utf-16',
            `utf-16 positions (got ${String(caps.positionEncoding)})`,
        );
        const sync = caps.textDocumentSync as { change?: number } | number | undefined;
        assert.equal(typeof sync === 'number' ? sync : sync?.change, 2, 'incremental sync');
        await conn.sendNotification(InitializedNotification.type, {});

        // what the status bar follows: aigcCode/status until the model is loaded
        let backend = backendState(await conn.sendRequest('aigcCode/status', null));
        for (let i = 0; backend.kind === 'starting' && i < 600; i++) {
            await new Promise((r) => setTimeout(r, 500));
            backend = backendState(await conn.sendRequest('aigcCode/status', null));
        }
        assert.equal(backend.kind, 'ready', `backend: ${JSON.stringify(backend)}`);

        const uri = 'file:///tmp/aigc-vscode-it/sample.py';
        // The test model is random: its text only survives the server's syntax check inside a comment.
        const text = 'import math\n\n\ndef circle_area(radius):\n    """Area of a circle."""\n    # grows with the \n    return 0\n';
        await conn.sendNotification(DidOpenTextDocumentNotification.type, {
            textDocument: { uri, languageId: 'python', version: 1, text },
        });
        // an incremental edit: type "square of é " at the end of the comment (é: UTF-16 columns)
        await conn.sendNotification(DidChangeTextDocumentNotification.type, {
            textDocument: { uri, version: 2 },
            contentChanges: [{ range: { start: { line: 5, character: 21 }, end: { line: 5, character: 21 } }, text: 'square of é ' }],
        });
        // The random model may start with a newline (nothing left in a one-line comment): then retype the
        // comment, and after a few greedy tries sample (temperature 1, fixed seed) via didChangeConfiguration.
        const comments = ['grows with the square of é ', 'radius is ', 'See also: ', 'TODO: handle ', 'Note that ', 'Uses '];
        let version = 2;
        let position = { line: 5, character: 33 };
        let inline: unknown = null;
        let items: ReturnType<typeof normalizeInlineResponse> = [];
        for (let attempt = 0; attempt < 16; attempt++) {
            if (attempt > 0) {
                const line = `    # ${comments[attempt % comments.length]}`;
                await conn.sendNotification(DidChangeTextDocumentNotification.type, {
                    textDocument: { uri, version: ++version },
                    contentChanges: [{ range: { start: { line: 5, character: 0 }, end: { line: 6, character: 0 } }, text: `${line}\n` }],
                });
                position = { line: 5, character: line.length };
            }
            if (attempt >= 4) {
                const sampling = normalizeSettings({
                    'server.path': bin,
                    model: model || '',
                    maxNewTokens: 24,
                    temperature: 1,
                    serverSettings: { seed: attempt },
                });
                await conn.sendNotification(DidChangeConfigurationNotification.type, {
                    settings: { aigcCode: serverSettings(sampling) },
                });
            }
            inline = await conn.sendRequest(InlineCompletionRequest.type, {
                textDocument: { uri },
                position,
                context: { triggerKind: 1 },
            });
            items = normalizeInlineResponse(inline, position);
            if (items.length > 0) {
                break;
            }
        }
        assert.ok(items.length >= 1, `inline completion returned an item: ${JSON.stringify(inline)}`);
        assert.ok(items[0].insertText.length > 0);

        const completion = await conn.sendRequest(CompletionRequest.type, {
            textDocument: { uri },
            position,
            context: { triggerKind: 1 },
        });
        const fromCompletion = completionToInline(completion, position);
        assert.ok(fromCompletion.length >= 1, `completion returned an item: ${JSON.stringify(completion)}`);

        // settings change (what the extension sends on a configuration change that needs no restart)
        const changed = normalizeSettings({ 'server.path': bin, model: model || '', maxNewTokens: 8, temperature: 0 });
        await conn.sendNotification(DidChangeConfigurationNotification.type, {
            settings: { aigcCode: serverSettings(changed) },
        });
        const again = await conn.sendRequest(InlineCompletionRequest.type, {
            textDocument: { uri },
            position,
            context: { triggerKind: 2 },
        });
        assert.ok(Array.isArray(normalizeInlineResponse(again, position)));

        // a language the server does not complete: no items, no error
        const other = 'file:///tmp/aigc-vscode-it/notes.txt';
        await conn.sendNotification(DidOpenTextDocumentNotification.type, {
            textDocument: { uri: other, languageId: 'plaintext', version: 1, text: 'hello ' },
        });
        const none = await conn.sendRequest(InlineCompletionRequest.type, {
            textDocument: { uri: other },
            position: { line: 0, character: 6 },
            context: { triggerKind: 1 },
        });
        assert.deepEqual(normalizeInlineResponse(none), []);

        await conn.sendRequest(ShutdownRequest.type);
        await conn.sendNotification(ExitNotification.type);
        const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r('timeout'), 15000))]);
        assert.equal(code, 0, 'server exits 0 after shutdown/exit');
    } catch (e) {
        process.stderr.write(`---- server stderr ----\n${stderr.slice(-4000)}\n---- server log messages ----\n${logs.slice(-40).join('\n')}\n`);
        throw e;
    } finally {
        conn.dispose();
        if (proc.exitCode === null) {
            proc.kill();
        }
    }
});
