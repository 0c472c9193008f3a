#!/usr/bin/env node
/*
 * Check a packaged .vsix: the runtime files and dependencies are inside, development files are not, and
 * the packaged extension loads (every `require` resolves inside the package) with a stub `vscode` module.
 *
 *   node scripts/check-vsix.js aigc-code.vsix
 *
 * No dependencies: reads the zip with node:zlib.
 */
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const zlib = require('node:zlib');
const Module = require('node:module');

function readZip(file) {
    const buf = fs.readFileSync(file);
    let eocd = -1;
    for (let i = buf.length - 22; i >= Math.max(0, buf.length - 65557); i--) {
        if (buf.readUInt32LE(i) === 0x06054b50) {
            eocd = i;
            break;
        }
    }
    if (eocd < 0) {
        throw new Error(`${file}: not a zip file`);
    }
    const count = buf.readUInt16LE(eocd + 10);
    let p = buf.readUInt32LE(eocd + 16);
    const entries = new Map();
    for (let n = 0; n < count; n++) {
        if (buf.readUInt32LE(p) !== 0x02014b50) {
            throw new Error('bad central directory');
        }
        const method = buf.readUInt16LE(p + 10);
        const csize = buf.readUInt32LE(p + 20);
        const nameLen = buf.readUInt16LE(p + 28);
        const extraLen = buf.readUInt16LE(p + 30);
        const commentLen = buf.readUInt16LE(p + 32);
        const local = buf.readUInt32LE(p + 42);
        const name = buf.toString('utf8', p + 46, p + 46 + nameLen);
        p += 46 + nameLen + extraLen + commentLen;
        const lNameLen = buf.readUInt16LE(local + 26);
        const lExtraLen = buf.readUInt16LE(local + 28);
        const start = local + 30 + lNameLen + lExtraLen;
        const raw = buf.subarray(start, start + csize);
        entries.set(name, () => (method === 0 ? raw : zlib.inflateRawSync(raw)));
    }
    return entries;
}

function fail(msg) {
    console.error(`check-vsix: ${msg}`);
    process.exitCode = 1;
}

const file = process.argv[2] || 'aigc-code.vsix';
const entries = readZip(file);
const names = [...entries.keys()];

const required = [
    'extension.vsixmanifest',
    'extension/package.json',
    'extension/out/extension.js',
    'extension/out/config.js',
    'extension/out/status.js',
    'extension/out/normalize.js',
    'extension/node_modules/vscode-languageclient/package.json',
    'extension/node_modules/vscode-languageclient/lib/node/main.js',
    'extension/node_modules/vscode-languageclient/lib/common/inlineCompletion.js',
    'extension/node_modules/vscode-languageserver-protocol/lib/node/main.js',
    'extension/node_modules/vscode-jsonrpc/lib/node/main.js',
];
for (const r of required) {
    if (!entries.has(r)) {
        fail(`missing ${r}`);
    }
}
const forbidden = [/^extension\/src\//, /^extension\/out\/test\//, /^extension\/node_modules\/typescript\//,
    /^extension\/node_modules\/@vscode\/vsce\//, /^extension\/node_modules\/@types\//, /\.vsix$/];
for (const n of names) {
    if (forbidden.some((re) => re.test(n))) {
        fail(`should not be packaged: ${n}`);
    }
}

const pkg = JSON.parse(entries.get('extension/package.json')().toString('utf8'));
if (pkg.main !== './out/extension.js') {
    fail(`unexpected main: ${pkg.main}`);
}

// Extract and load the packaged extension with a stub `vscode` module.
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'aigc-vsix-'));
try {
    for (const [name, read] of entries) {
        if (!name.startsWith('extension/') || name.endsWith('/')) {
            continue;
        }
        const dest = path.join(dir, name);
        fs.mkdirSync(path.dirname(dest), { recursive: true });
        fs.writeFileSync(dest, read());
    }
    const stub = () => {
        const cache = new Map();
        const target = function () {};
        return new Proxy(target, {
            get(t, prop) {
                if (prop === 'prototype') {
                    return t.prototype;
                }
                if (prop === Symbol.toPrimitive) {
                    return () => '';
                }
                if (!cache.has(prop)) {
                    cache.set(prop, stub());
                }
                return cache.get(prop);
            },
            apply() {
                return stub();
            },
            construct() {
                return {};
            },
        });
    };
    const vscodeStub = stub();
    const origResolve = Module._resolveFilename;
    const origLoad = Module._load;
    Module._load = function (request, parent, isMain) {
        if (request === 'vscode') {
            return vscodeStub;
        }
        return origLoad.call(this, request, parent, isMain);
    };
    // Never fall back to this repository's node_modules: resolution must succeed inside the package.
    const root = path.join(dir, 'extension');
    Module._resolveFilename = function (request, parent, ...rest) {
        const resolved = origResolve.call(this, request, parent, ...rest);
        if (path.isAbsolute(resolved) && !resolved.startsWith(root) && !Module.isBuiltin(resolved)) {
            throw new Error(`${request} resolved outside the package: ${resolved}`);
        }
        return resolved;
    };
    try {
        const ext = require(path.join(root, 'out', 'extension.js'));
        if (typeof ext.activate !== 'function' || typeof ext.deactivate !== 'function') {
            fail('out/extension.js does not export activate/deactivate');
        }
        const lc = Module.createRequire(path.join(root, 'out', 'extension.js'))('vscode-languageclient/node');
        if (typeof lc.LanguageClient !== 'function') {
            fail('vscode-languageclient/node has no LanguageClient');
        }
    } catch (e) {
        fail(`packaged extension does not load: ${e && e.stack ? e.stack : e}`);
    } finally {
        Module._resolveFilename = origResolve;
        Module._load = origLoad;
    }
} finally {
    fs.rmSync(dir, { recursive: true, force: true });
}

if (!process.exitCode) {
    console.log(`check-vsix: ${file} ok (${names.length} files, main ${pkg.main}, version ${pkg.version})`);
}
