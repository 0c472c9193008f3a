/**
 * Status bar state machine and formatting (no `vscode` import; unit-tested).
 */

export type StatusKind = 'starting' | 'ready' | 'generating' | 'error' | 'disabled' | 'stopped';

export interface StatusState {
    kind: StatusKind;
    /** Latency of the last completed request in milliseconds. */
    lastLatencyMs?: number;
    /** Error message for `error`. */
    message?: string;
    /** Number of requests in flight. */
    inFlight: number;
    /** Model / backend label shown in the tooltip. */
    detail?: string;
}

export interface StatusView {
    text: string;
    tooltip: string;
    /** ThemeColor id for the background, if any. */
    background?: string;
}

export function initialState(): StatusState {
    return { kind: 'starting', inFlight: 0 };
}

const ICONS: Record<StatusKind, string> = {
    starting: '$(loading~spin)',
    ready: '$(sparkle)',
    generating: '$(loading~spin)',
    error: '$(error)',
    disabled: '$(circle-slash)',
    stopped: '$(debug-stop)',
};

const LABELS: Record<StatusKind, string> = {
    starting: 'starting',
    ready: 'ready',
    generating: 'generating',
    error: 'error',
    disabled: 'disabled',
    stopped: 'stopped',
};

/** Human-readable latency: `850 ms`, `1.2 s`, `12 s`. */
export function formatLatency(ms: number): string {
    if (!Number.isFinite(ms) || ms < 0) {
        return '';
    }
    if (ms < 1000) {
        return `${Math.round(ms)} ms`;
    }
    if (ms < 10000) {
        return `${(ms / 1000).toFixed(1)} s`;
    }
    return `${Math.round(ms / 1000)} s`;
}

export function formatStatus(s: StatusState): StatusView {
    let text = `${ICONS[s.kind]} aigc`;
    const latency = s.lastLatencyMs !== undefined ? formatLatency(s.lastLatencyMs) : '';
    if (s.kind === 'ready' && latency) {
        text += ` ${latency}`;
    }
    const lines = [`aigc-code: ${LABELS[s.kind]}`];
    if (s.kind === 'error' && s.message) {
        lines.push(s.message);
    }
    if (s.detail) {
        lines.push(s.detail);
    }
    if (latency) {
        lines.push(`Last completion: ${latency}`);
    }
    lines.push('Click for aigc-code actions');
    const view: StatusView = { text, tooltip: lines.join('\n') };
    if (s.kind === 'error') {
        view.background = 'statusBarItem.errorBackground';
    } else if (s.kind === 'disabled' || s.kind === 'stopped') {
        view.background = 'statusBarItem.warningBackground';
    }
    return view;
}

/** Transitions. Each returns a new state; `error`/`disabled` are sticky until cleared explicitly. */
export function requestStarted(s: StatusState): StatusState {
    if (s.kind === 'disabled' || s.kind === 'stopped' || s.kind === 'starting') {
        return { ...s, inFlight: s.inFlight + 1 };
    }
    return { ...s, kind: 'generating', inFlight: s.inFlight + 1, message: undefined };
}

export function requestFinished(s: StatusState, latencyMs: number, error?: string): StatusState {
    const inFlight = Math.max(0, s.inFlight - 1);
    if (s.kind === 'disabled' || s.kind === 'stopped' || s.kind === 'starting') {
        return { ...s, inFlight };
    }
    if (error) {
        return { ...s, kind: 'error', message: error, inFlight };
    }
    return {
        ...s,
        kind: inFlight > 0 ? 'generating' : 'ready',
        lastLatencyMs: latencyMs,
        message: undefined,
        inFlight,
    };
}

/** A cancelled request (the user kept typing) does not update latency or report an error. */
export function requestCancelled(s: StatusState): StatusState {
    const inFlight = Math.max(0, s.inFlight - 1);
    if (s.kind === 'generating' && inFlight === 0) {
        return { ...s, kind: 'ready', inFlight };
    }
    return { ...s, inFlight };
}

export function withKind(s: StatusState, kind: StatusKind, message?: string): StatusState {
    return { ...s, kind, message, inFlight: kind === 'ready' ? s.inFlight : 0 };
}

/**
 * Interpret the server's `aigcCode/status` answer ({backend: "loading" | "not loaded" | "<description>" |
 * "error: ..."}): `starting` while the model loads, `error` when it failed, else `ready`.
 */
export function backendState(status: unknown): { kind: 'starting' | 'ready' | 'error'; message?: string } {
    const backend = typeof status === 'object' && status !== null ? (status as { backend?: unknown }).backend : undefined;
    if (typeof backend !== 'string') {
        return { kind: 'ready' };
    }
    if (backend === 'loading' || backend === 'not loaded') {
        return { kind: 'starting', message: 'loading the model' };
    }
    if (backend.startsWith('error')) {
        return { kind: 'error', message: backend.replace(/^error:\s*/, '') };
    }
    return { kind: 'ready', message: backend };
}
