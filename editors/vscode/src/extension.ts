/**
 * VS Code client for the aigc-code LSP server (`aigc-code serve`, stdio).
 *
 * Inline completions (ghost text, Tab accepts) come from the LSP 3.18 `textDocument/inlineCompletion`
 * request, which vscode-languageclient 10 wires up itself (InlineCompletionItemFeature) when the server
 * advertises `inlineCompletionProvider`; the middleware below adds the enable switch, per-language gating
 * and status/latency tracking. A server without that capability is served through `textDocument/completion`
 * converted to inline items (normalize.ts).
 */

import { execFile } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as readline from 'readline';
import * as vscode from 'vscode';
import {
    DidChangeConfigurationNotification,
    LanguageClient,
    LanguageClientOptions,
    ServerOptions,
    State,
    CompletionRequest,
} from 'vscode-languageclient/node';

import {
    AigcSettings,
    SUPPORTED_LANGUAGES,
    checkCommand,
    configAction,
    findExecutable,
    initializationOptions,
    languageEnabled,
    normalizeSettings,
    serverCommand,
    serverSettings,
} from './config';
import { InlineItem, completionToInline, fitSelectedCompletion } from './normalize';
import { serverLineRouter } from './serverlog';
import {
    StatusState,
    backendState,
    formatStatus,
    initialState,
    requestCancelled,
    requestFinished,
    requestStarted,
    withKind,
} from './status';

const SECTION = 'aigcCode';

let client: LanguageClient | undefined;
let settings: AigcSettings;
let state: StatusState = initialState();
let statusItem: vscode.StatusBarItem;
let output: vscode.LogOutputChannel;
let fallbackProvider: vscode.Disposable | undefined;
let starting: Promise<void> | undefined;
/** The settings the running server was started with or last sent (undefined: no server). */
let applied: AigcSettings | undefined;

function readSettings(): AigcSettings {
    const cfg = vscode.workspace.getConfiguration(SECTION);
    const raw: Record<string, unknown> = {
        enable: cfg.get('enable'),
        'server.path': cfg.get('server.path'),
        'server.args': cfg.get('server.args'),
        'server.logFile': cfg.get('server.logFile'),
        'server.env': cfg.get('server.env'),
        model: cfg.get('model'),
        adapter: cfg.get('adapter'),
        backend: cfg.get('backend'),
        endpoint: cfg.get('endpoint'),
        apiKey: cfg.get('apiKey'),
        fimFormat: cfg.get('fimFormat'),
        device: cfg.get('device'),
        serverSettings: cfg.get('serverSettings'),
        maxNewTokens: cfg.get('maxNewTokens'),
        temperature: cfg.get('temperature'),
        debounceMs: cfg.get('debounceMs'),
        enabledLanguages: cfg.get('enabledLanguages'),
        suggestWidget: cfg.get('suggestWidget'),
    };
    return normalizeSettings(raw, process.env, os.homedir());
}

function render(): void {
    const view = formatStatus(state);
    statusItem.text = view.text;
    statusItem.tooltip = view.tooltip;
    statusItem.backgroundColor = view.background ? new vscode.ThemeColor(view.background) : undefined;
}

function setState(next: StatusState): void {
    state = next;
    render();
}

function detail(s: AigcSettings): string {
    const parts = [`backend: ${s.backend}`];
    if (s.backend === 'openai' && s.endpoint) {
        parts.push(`endpoint: ${s.endpoint}`);
    }
    parts.push(`model: ${s.model || '(default)'}`);
    if (s.adapter) {
        parts.push(`adapter: ${s.adapter}`);
    }
    return parts.join('\n');
}

function errorMessage(e: unknown): string {
    if (e instanceof Error) {
        return e.message;
    }
    if (typeof e === 'object' && e !== null && 'message' in e) {
        return String((e as { message: unknown }).message);
    }
    return String(e);
}

function isCancellation(e: unknown): boolean {
    // -32800 RequestCancelled, -32801 ContentModified
    const code = typeof e === 'object' && e !== null ? (e as { code?: unknown }).code : undefined;
    return code === -32800 || code === -32801 || (e instanceof Error && e.name === 'Canceled');
}

/** Wrap one completion round-trip with gating and status tracking. */
async function tracked<T>(
    document: vscode.TextDocument,
    token: vscode.CancellationToken,
    run: () => Promise<T | null | undefined> | vscode.ProviderResult<T>,
): Promise<T | null | undefined> {
    if (!languageEnabled(settings, document.languageId)) {
        return null;
    }
    const t0 = Date.now();
    setState(requestStarted(state));
    try {
        const result = await run();
        if (token.isCancellationRequested) {
            setState(requestCancelled(state));
            return null;
        }
        setState(requestFinished(state, Date.now() - t0));
        return result;
    } catch (e) {
        if (token.isCancellationRequested || isCancellation(e)) {
            setState(requestCancelled(state));
            return null;
        }
        const msg = errorMessage(e);
        output.error(`completion failed: ${msg}`);
        setState(requestFinished(state, Date.now() - t0, msg));
        return null;
    }
}

function toVscodeItem(item: InlineItem): vscode.InlineCompletionItem {
    const text = item.isSnippet ? new vscode.SnippetString(item.insertText) : item.insertText;
    const range = item.range
        ? new vscode.Range(item.range.start.line, item.range.start.character, item.range.end.line, item.range.end.character)
        : undefined;
    const out = new vscode.InlineCompletionItem(text, range);
    if (item.filterText !== undefined) {
        out.filterText = item.filterText;
    }
    return out;
}

/** Inline provider over `textDocument/completion`, for servers without `inlineCompletionProvider`. */
function registerCompletionFallback(c: LanguageClient): vscode.Disposable {
    const selector = SUPPORTED_LANGUAGES.flatMap((language) => [
        { scheme: 'file', language },
        { scheme: 'untitled', language },
    ]);
    return vscode.languages.registerInlineCompletionItemProvider(selector, {
        provideInlineCompletionItems: (document, position, _context, token) =>
            tracked(document, token, async () => {
                const params = c.code2ProtocolConverter.asCompletionParams(document, position, {
                    triggerKind: vscode.CompletionTriggerKind.Invoke,
                    triggerCharacter: undefined,
                });
                const result = await c.sendRequest(CompletionRequest.type, params, token);
                const items = completionToInline(result, { line: position.line, character: position.character });
                return items.slice(0, 1).map(toVscodeItem);
            }),
    });
}

/** While the suggest widget is open, only items that extend its selected item (else VS Code hides them). */
function fitWidget(
    result: vscode.InlineCompletionItem[] | vscode.InlineCompletionList | null | undefined,
    context: vscode.InlineCompletionContext,
    document: vscode.TextDocument,
    position: vscode.Position,
): vscode.InlineCompletionItem[] | vscode.InlineCompletionList | null | undefined {
    const selected = context.selectedCompletionInfo;
    if (!selected || !result) {
        return result;
    }
    const items = Array.isArray(result) ? result : result.items;
    const plain: InlineItem[] = [];
    for (const it of items) {
        if (typeof it.insertText !== 'string') {
            continue; // snippets: not adjusted, not shown with the widget open
        }
        const r = it.range;
        plain.push({
            insertText: it.insertText,
            isSnippet: false,
            range: r ? { start: { line: r.start.line, character: r.start.character }, end: { line: r.end.line, character: r.end.character } } : undefined,
        });
    }
    const sel = {
        range: { start: { line: selected.range.start.line, character: selected.range.start.character }, end: { line: selected.range.end.line, character: selected.range.end.character } },
        text: selected.text,
    };
    const pos = { line: position.line, character: position.character };
    return fitSelectedCompletion(plain, sel, document.lineAt(position.line).text, pos).map(toVscodeItem);
}

/** Server stderr into the log at the level each line carries (not all as errors). */
function pipeServerStderr(input: NodeJS.ReadableStream): void {
    const route = serverLineRouter((level, text) => output[level](`server: ${text}`));
    readline.createInterface({ input, crlfDelay: Infinity, terminal: false, historySize: 0 }).on('line', route);
}

function clientOptions(s: AigcSettings): LanguageClientOptions {
    return {
        documentSelector: SUPPORTED_LANGUAGES.flatMap((language) => [
            { scheme: 'file', language },
            { scheme: 'untitled', language },
        ]),
        initializationOptions: initializationOptions(s),
        outputChannel: output,
        stdioOptions: {
            stdout: (input) => pipeServerStderr(input),
            stderr: (input) => pipeServerStderr(input),
        },
        middleware: {
            provideInlineCompletionItems: (document, position, context, token, next) =>
                tracked(document, token, async () => {
                    const result = await next(document, position, context, token);
                    return fitWidget(result, context, document, position);
                }),
            // The server also answers textDocument/completion (one preselected item); showing it in the
            // suggest widget on top of the ghost text is opt-in.
            provideCompletionItem: (document, position, context, token, next) => {
                if (!settings.suggestWidget || !languageEnabled(settings, document.languageId)) {
                    return undefined;
                }
                return next(document, position, context, token);
            },
        },
        initializationFailedHandler: (error) => {
            output.error(`initialize failed: ${errorMessage(error)}`);
            return false;
        },
    };
}

const STATUS_REQUEST = 'aigcCode/status';

/** Follow the server's model loading (aigcCode/status) so the status bar does not say "ready" too early. */
let followSeq = 0;

async function followBackend(c: LanguageClient): Promise<void> {
    const started = Date.now();
    const seq = ++followSeq;
    while (client === c && seq === followSeq && Date.now() - started < 30 * 60 * 1000) {
        let status: unknown;
        try {
            status = await c.sendRequest(STATUS_REQUEST, null);
        } catch {
            if (client === c && seq === followSeq && state.kind === 'starting') {
                setState(withKind(state, settings.enable ? 'ready' : 'disabled')); // a server without aigcCode/status
            }
            return;
        }
        if (client !== c || seq !== followSeq) {
            return;
        }
        const b = backendState(status);
        const base = detail(settings);
        if (b.kind === 'starting') {
            if (state.kind === 'starting' || state.kind === 'ready') {
                setState({ ...withKind(state, 'starting'), detail: `${base}\n${b.message}` });
            }
            await new Promise((r) => setTimeout(r, 250)); // cheap request; "ready" shows within 250 ms of the load
            continue;
        }
        if (b.kind === 'error') {
            output.error(`the server cannot load the model: ${b.message}`);
            setState({ ...withKind(state, 'error', `cannot load the model: ${b.message}`), detail: base });
        } else {
            output.info(`backend ready: ${b.message ?? ''}`);
            const kind = settings.enable ? 'ready' : 'disabled';
            setState({ ...(state.kind === 'starting' ? withKind(state, kind) : state), detail: b.message ? `${base}\n${b.message}` : base });
        }
        return;
    }
}

async function startClient(): Promise<void> {
    if (client || starting) {
        return starting;
    }
    const s = settings;
    const cmd = serverCommand(s);
    const env = { ...process.env, ...s.server.env };
    if (!findExecutable(cmd.command, env.PATH, isExecutable)) {
        reportStartFailure(cmd.command, `${cmd.command} not found`, 'not found');
        return;
    }
    const serverOptions: ServerOptions = {
        command: cmd.command,
        args: cmd.args,
        options: { env },
    };
    output.info(`starting: ${cmd.command} ${cmd.args.join(' ')}`);
    setState({ ...withKind(state, 'starting'), detail: detail(s) });
    const c = new LanguageClient(SECTION, 'aigc-code', serverOptions, clientOptions(s));
    client = c;
    applied = s;
    c.onDidChangeState((e) => {
        if (client !== c) {
            return;
        }
        if (e.newState === State.Running) {
            // also after the client restarted a crashed server: "ready" only once the model has loaded
            setState(withKind(state, settings.enable ? 'starting' : 'disabled'));
            void followBackend(c);
        } else if (e.newState === State.Stopped && state.kind !== 'error') {
            setState(withKind(state, 'stopped'));
        }
    });
    starting = (async () => {
        try {
            await c.start();
            const caps = c.initializeResult?.capabilities as Record<string, unknown> | undefined;
            if (caps && !caps.inlineCompletionProvider && caps.completionProvider) {
                output.info('server has no inlineCompletionProvider; using textDocument/completion');
                fallbackProvider = registerCompletionFallback(c);
            }
        } catch (e) {
            if (client === c) {
                client = undefined;
                applied = undefined;
            }
            void c.dispose().catch(() => undefined);
            reportStartFailure(cmd.command, errorMessage(e), 'failed');
        } finally {
            starting = undefined;
        }
    })();
    return starting;
}

function isExecutable(p: string): boolean {
    try {
        fs.accessSync(p, fs.constants.X_OK);
        return fs.statSync(p).isFile();
    } catch {
        return false;
    }
}

/** The one error notification for a server that cannot start (a missing executable is caught before spawning it). */
function reportStartFailure(command: string, msg: string, why: 'not found' | 'failed'): void {
    output.error(`could not start the server: ${msg}`);
    setState(withKind(state, 'error', `Server ${why === 'not found' ? 'not found' : 'failed to start'}: ${msg}`));
    const text = why === 'not found'
        ? `aigc-code: the server executable "${command}" was not found. Set \`aigcCode.server.path\` to your aigc-code (e.g. /path/to/venv/bin/aigc-code).`
        : `aigc-code: could not start "${command}" (${msg}). Is aigc-code installed and \`aigcCode.server.path\` correct?`;
    // not awaited: a restart must not wait for the user to close the notification
    void vscode.window.showErrorMessage(text, 'Show Log', 'Open Settings').then((pick) => {
        if (pick === 'Show Log') {
            output.show(true);
        } else if (pick === 'Open Settings') {
            void vscode.commands.executeCommand('workbench.action.openSettings', SECTION);
        }
    });
}

async function stopClient(): Promise<void> {
    if (starting) {
        await starting;
    }
    fallbackProvider?.dispose();
    fallbackProvider = undefined;
    const c = client;
    client = undefined;
    applied = undefined;
    if (c) {
        try {
            await c.stop(5000);
        } catch (e) {
            output.warn(`stop: ${errorMessage(e)}`);
        }
        await c.dispose().catch(() => undefined);
    }
}

async function restartClient(): Promise<void> {
    await stopClient();
    state = initialState();
    if (settings.enable) {
        await startClient();
    } else {
        setState({ ...withKind(state, 'disabled'), detail: detail(settings) });
    }
}

async function setEnabled(enable: boolean): Promise<void> {
    await vscode.workspace.getConfiguration(SECTION).update('enable', enable, vscode.ConfigurationTarget.Global);
}

async function onConfigurationChanged(): Promise<void> {
    settings = readSettings();
    const action = configAction(client ? applied : undefined, settings);
    if (action === 'disable') {
        setState({ ...withKind(state, 'disabled'), detail: detail(settings) });
        return;
    }
    if (action === 'start' || action === 'restart') {
        await restartClient();
        return;
    }
    if (state.kind === 'disabled') {
        void followBackend(client!); // back on: "ready" once the server says its model is loaded
        setState({ ...withKind(state, 'starting'), detail: detail(settings) });
    } else {
        setState({ ...state, detail: detail(settings) });
    }
    if (action === 'notify' && client && client.state === State.Running) {
        applied = settings;
        output.info('sending the changed settings to the server');
        await client.sendNotification(DidChangeConfigurationNotification.type, {
            settings: { [SECTION]: serverSettings(settings) },
        });
        void followBackend(client); // a new model loads in the background
    }
}

function checkServer(): void {
    const cmd = checkCommand(settings);
    const args = cmd.args;
    output.info(`${cmd.command} ${args.join(' ')}`);
    output.show(true);
    execFile(cmd.command, args, { env: { ...process.env, ...settings.server.env }, timeout: 300000 }, (err, stdout, stderr) => {
        for (const line of `${stdout ?? ''}${stderr ?? ''}`.split('\n')) {
            if (line.trim()) {
                output.info(`check: ${line}`);
            }
        }
        if (err) {
            void vscode.window.showErrorMessage(`aigc-code: server check failed (${err.message.split('\n')[0]}). See the log.`);
        } else {
            void vscode.window.showInformationMessage('aigc-code: server check passed.');
        }
    });
}

async function showMenu(): Promise<void> {
    const items: (vscode.QuickPickItem & { command: string })[] = [
        settings.enable
            ? { label: '$(circle-slash) Disable completions', command: 'aigcCode.disable' }
            : { label: '$(check) Enable completions', command: 'aigcCode.enable' },
        { label: '$(debug-restart) Restart server', command: 'aigcCode.restartServer' },
        { label: '$(output) Show log', command: 'aigcCode.showLog' },
        { label: '$(pass) Check server and model', command: 'aigcCode.checkServer' },
        { label: '$(gear) Open settings', command: 'aigcCode.openSettings' },
    ];
    const pick = await vscode.window.showQuickPick(items, { placeHolder: 'aigc-code' });
    if (pick) {
        await vscode.commands.executeCommand(pick.command);
    }
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
    output = vscode.window.createOutputChannel('aigc-code', { log: true });
    statusItem = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Right, 100);
    statusItem.name = 'aigc-code';
    statusItem.command = 'aigcCode.showMenu';
    settings = readSettings();
    state = { ...initialState(), detail: detail(settings) };
    render();
    statusItem.show();

    context.subscriptions.push(
        output,
        statusItem,
        vscode.commands.registerCommand('aigcCode.enable', () => setEnabled(true)),
        vscode.commands.registerCommand('aigcCode.disable', () => setEnabled(false)),
        vscode.commands.registerCommand('aigcCode.toggle', () => setEnabled(!settings.enable)),
        vscode.commands.registerCommand('aigcCode.restartServer', async () => {
            settings = readSettings();
            await restartClient();
        }),
        vscode.commands.registerCommand('aigcCode.showLog', () => output.show(true)),
        vscode.commands.registerCommand('aigcCode.checkServer', () => checkServer()),
        vscode.commands.registerCommand('aigcCode.showMenu', () => showMenu()),
        vscode.commands.registerCommand('aigcCode.openSettings', () =>
            vscode.commands.executeCommand('workbench.action.openSettings', SECTION),
        ),
        vscode.commands.registerCommand('aigcCode.triggerCompletion', () =>
            vscode.commands.executeCommand('editor.action.inlineSuggest.trigger'),
        ),
        vscode.workspace.onDidChangeConfiguration((e) => {
            if (e.affectsConfiguration(SECTION)) {
                void onConfigurationChanged();
            }
        }),
    );

    if (settings.enable) {
        // Do not block activation on model loading.
        void startClient();
    } else {
        setState(withKind(state, 'disabled'));
    }
}

export async function deactivate(): Promise<void> {
    await stopClient();
}
