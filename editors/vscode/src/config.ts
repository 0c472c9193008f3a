/**
 * Settings handling for the aigc-code extension.
 *
 * Plain module (no `vscode` import) so that it can be unit-tested with `node --test`.
 * extension.ts reads the raw `aigcCode.*` configuration object from VS Code and hands it here.
 */

/** Languages the aigc-code server completes (LSP languageIds). */
export const SUPPORTED_LANGUAGES: readonly string[] = [
    'python',
    'javascript',
    'javascriptreact',
    'typescript',
    'typescriptreact',
    'go',
    'rust',
    'java',
    'c',
    'cpp',
];

export type Backend = 'local' | 'openai';

export interface ServerLaunchSettings {
    /** Executable to run (`aigc-code` from PATH by default). */
    path: string;
    /** Extra arguments appended after the generated ones. */
    args: string[];
    /** Server log file (`--log-file`); empty = server default. */
    logFile: string;
    /** Extra environment variables for the server process. */
    env: Record<string, string>;
}

export interface AigcSettings {
    enable: boolean;
    server: ServerLaunchSettings;
    model: string;
    adapter: string;
    backend: Backend;
    endpoint: string;
    /** API key for the openai backend (sent to the server as `apiKey`). */
    apiKey: string;
    /** FIM prompt format for the openai backend (`fimFormat`). */
    fimFormat: string;
    /** Device for the local backend (`auto`, `cpu`, `cuda`, `cuda:1`). */
    device: string;
    maxNewTokens: number | undefined;
    temperature: number | undefined;
    debounceMs: number | undefined;
    enabledLanguages: string[];
    /** Also show the server's `textDocument/completion` item in the suggest widget. */
    suggestWidget: boolean;
    /** Further server settings passed through verbatim (camelCase keys, e.g. `topP`, `timeBudgetMs`). */
    extra: Record<string, unknown>;
}

export const DEFAULTS: AigcSettings = {
    enable: true,
    server: { path: 'aigc-code', args: [], logFile: '', env: {} },
    model: '',
    adapter: '',
    backend: 'local',
    endpoint: '',
    apiKey: '',
    fimFormat: '',
    device: '',
    maxNewTokens: undefined,
    temperature: undefined,
    debounceMs: undefined,
    enabledLanguages: [...SUPPORTED_LANGUAGES],
    suggestWidget: false,
    extra: {},
};

type Raw = Record<string, unknown> | undefined | null;

function str(v: unknown, dflt: string): string {
    return typeof v === 'string' ? v.trim() : dflt;
}

function num(v: unknown, min: number, max: number): number | undefined {
    if (typeof v !== 'number' || !Number.isFinite(v)) {
        return undefined;
    }
    return Math.min(max, Math.max(min, v));
}

function strList(v: unknown): string[] | undefined {
    if (!Array.isArray(v)) {
        return undefined;
    }
    return v.filter((x): x is string => typeof x === 'string' && x.length > 0);
}

/** Read a dotted key (`server.path`) from either a nested or a flattened object. */
function get(raw: Raw, key: string): unknown {
    if (!raw) {
        return undefined;
    }
    if (key in raw) {
        return raw[key];
    }
    const dot = key.indexOf('.');
    if (dot > 0) {
        const head = raw[key.slice(0, dot)];
        if (head && typeof head === 'object') {
            return get(head as Record<string, unknown>, key.slice(dot + 1));
        }
    }
    return undefined;
}

/** Replace `~` and `${env:NAME}` / `${userHome}` in a path-like setting. */
export function expandPath(p: string, env: Record<string, string | undefined>, home: string): string {
    if (!p) {
        return p;
    }
    let out = p.replace(/\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}/g, (_m, name: string) => env[name] ?? '');
    out = out.replace(/\$\{userHome\}/g, home);
    if (out === '~') {
        out = home;
    } else if (out.startsWith('~/')) {
        out = home + out.slice(1);
    }
    return out;
}

/** Turn the raw `aigcCode` configuration section into validated settings. */
export function normalizeSettings(
    raw: Raw,
    env: Record<string, string | undefined> = {},
    home = '',
): AigcSettings {
    const x = (p: string) => expandPath(p, env, home);
    const backendRaw = str(get(raw, 'backend'), DEFAULTS.backend).toLowerCase();
    const backend: Backend = backendRaw === 'openai' ? 'openai' : 'local';
    const langs = strList(get(raw, 'enabledLanguages'));
    const envRaw = get(raw, 'server.env');
    const serverEnv: Record<string, string> = {};
    if (envRaw && typeof envRaw === 'object' && !Array.isArray(envRaw)) {
        for (const [k, v] of Object.entries(envRaw as Record<string, unknown>)) {
            if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') {
                serverEnv[k] = String(v);
            }
        }
    }
    return {
        enable: get(raw, 'enable') !== false,
        server: {
            path: x(str(get(raw, 'server.path'), '')) || DEFAULTS.server.path,
            args: strList(get(raw, 'server.args')) ?? [],
            logFile: x(str(get(raw, 'server.logFile'), '')),
            env: serverEnv,
        },
        model: x(str(get(raw, 'model'), '')),
        adapter: x(str(get(raw, 'adapter'), '')),
        backend,
        endpoint: str(get(raw, 'endpoint'), ''),
        apiKey: str(get(raw, 'apiKey'), ''),
        fimFormat: str(get(raw, 'fimFormat'), ''),
        device: str(get(raw, 'device'), ''),
        maxNewTokens: (() => {
            const n = num(get(raw, 'maxNewTokens'), 1, 4096);
            return n === undefined ? undefined : Math.round(n);
        })(),
        temperature: num(get(raw, 'temperature'), 0, 2),
        debounceMs: (() => {
            const n = num(get(raw, 'debounceMs'), 0, 5000);
            return n === undefined ? undefined : Math.round(n);
        })(),
        enabledLanguages: langs ?? [...DEFAULTS.enabledLanguages],
        suggestWidget: get(raw, 'suggestWidget') === true,
        extra: (() => {
            const e = get(raw, 'serverSettings');
            return e && typeof e === 'object' && !Array.isArray(e) ? { ...(e as Record<string, unknown>) } : {};
        })(),
    };
}

export interface ServerCommand {
    command: string;
    args: string[];
}

/**
 * `aigc-code serve ...` command line for the given settings (stdio transport). Only the launch settings go
 * here (`--log-file`, `aigcCode.server.args`): the backend settings (model, adapter, backend, endpoint,
 * device, FIM format) reach the server once, in `initializationOptions` (and later changes in
 * `workspace/didChangeConfiguration`), so that each setting has one way in.
 */
export function serverCommand(s: AigcSettings): ServerCommand {
    const args = ['serve'];
    if (s.server.logFile) {
        args.push('--log-file', s.server.logFile);
    }
    args.push(...s.server.args);
    return { command: s.server.path, args };
}

/** `aigc-code serve --check ...`: checks the backend the editor's settings name (as command-line flags). */
export function checkCommand(s: AigcSettings): ServerCommand {
    const args = ['serve', '--check'];
    const flags: [string, string][] = [
        ['--model', s.model],
        ['--adapter', s.adapter],
        ['--backend', s.backend !== DEFAULTS.backend ? s.backend : ''],
        ['--endpoint', s.endpoint],
        ['--device', s.device],
        ['--fim-format', s.fimFormat],
    ];
    for (const [flag, value] of flags) {
        if (value) {
            args.push(flag, value);
        }
    }
    args.push(...s.server.args);
    return { command: s.server.path, args };
}

/**
 * The executable `command` names: a path (checked as it is) or a name looked up in `PATH`. `undefined`
 * when there is none, so that a wrong `aigcCode.server.path` gives one clear error instead of a spawn error.
 */
export function findExecutable(command: string, pathVar: string | undefined, isExecutable: (p: string) => boolean): string | undefined {
    if (!command) {
        return undefined;
    }
    if (command.includes('/') || command.includes('\\')) {
        return isExecutable(command) ? command : undefined;
    }
    const sep = process.platform === 'win32' ? ';' : ':';
    const exts = process.platform === 'win32' ? ['', '.exe', '.cmd', '.bat'] : [''];
    for (const dir of (pathVar ?? '').split(sep)) {
        for (const ext of exts) {
            const candidate = `${dir || '.'}/${command}${ext}`;
            if (dir && isExecutable(candidate)) {
                return candidate;
            }
        }
    }
    return undefined;
}

/** The settings object the server receives under the `aigcCode` key. */
export function serverSettings(s: AigcSettings): Record<string, unknown> {
    const out: Record<string, unknown> = {
        ...s.extra,
        backend: s.backend,
        enabledLanguages: s.enabledLanguages,
    };
    if (s.model) {
        out.model = s.model;
    }
    if (s.adapter) {
        out.adapter = s.adapter;
    }
    if (s.endpoint) {
        out.endpoint = s.endpoint;
    }
    if (s.apiKey) {
        out.apiKey = s.apiKey;
    }
    if (s.fimFormat) {
        out.fimFormat = s.fimFormat;
    }
    if (s.device) {
        out.device = s.device;
    }
    if (s.maxNewTokens !== undefined) {
        out.maxNewTokens = s.maxNewTokens;
    }
    if (s.temperature !== undefined) {
        out.temperature = s.temperature;
    }
    if (s.debounceMs !== undefined) {
        out.debounceMs = s.debounceMs;
    }
    return out;
}

/** `initializationOptions` for the `initialize` request. */
export function initializationOptions(s: AigcSettings): Record<string, unknown> {
    return { aigcCode: serverSettings(s) };
}

/** True when a settings change needs the server process restarted (command line or environment changed). */
export function needsRestart(before: AigcSettings, after: AigcSettings): boolean {
    const a = serverCommand(before);
    const b = serverCommand(after);
    return (
        a.command !== b.command ||
        a.args.length !== b.args.length ||
        a.args.some((v, i) => v !== b.args[i]) ||
        JSON.stringify(before.server.env) !== JSON.stringify(after.server.env)
    );
}

export type ConfigAction = 'disable' | 'start' | 'restart' | 'notify' | 'none';

/**
 * What a configuration change (or Enable) must do, given the settings the running server was last given
 * (`applied`; undefined when no server runs) and the new settings. Settings changed while completions were
 * disabled are compared with `applied`, so they take effect on Enable.
 */
export function configAction(applied: AigcSettings | undefined, next: AigcSettings): ConfigAction {
    if (!next.enable) {
        return 'disable';
    }
    if (!applied) {
        return 'start';
    }
    if (needsRestart(applied, next)) {
        return 'restart';
    }
    return JSON.stringify(serverSettings(applied)) !== JSON.stringify(serverSettings(next)) ? 'notify' : 'none';
}

/** Whether completions should be offered for a document of this languageId. */
export function languageEnabled(s: AigcSettings, languageId: string): boolean {
    return s.enable && s.enabledLanguages.includes(languageId);
}
