#!/usr/bin/env node
// Drives the real engram binary with the official MCP TypeScript SDK
// (npm @modelcontextprotocol/sdk), the client most desktop and IDE hosts are built on.
//
// Every tool answer goes through `Client.callTool`, which validates `structuredContent`
// against the tool's `outputSchema` from `tools/list` (ajv) and throws an McpError on a
// mismatch. Nothing here catches that to let it pass: a failing answer is reported with
// the SDK's message.
//
// Usage:
//   node agent.mjs MODE stdio BINARY [ARG...]
//   node agent.mjs MODE http URL | PROFILE=URL...
//
// MODE:
//   profile     for the profiles core, compat and all: list the tools (compared with
//               operations/*.toml) and call a sensible subset (cases.json "profiles").
//   every-tool  under `--tools all`: call every listed tool at least once (cases.json
//               "every_tool"): empty, paged, partial and error answers included.
//
// stdio: runs `BINARY ARG... --data-dir TMP --tools PROFILE` (ARG defaults to `serve`),
//        one fresh temporary data dir per server started; the server's stderr passes through.
// http:  the server(s) are already running; each session picks a fresh namespace
//        (X-Engram-Namespace), so one server can take many runs. `profile` wants one URL per profile
//        (core=URL compat=URL all=URL; each server started with that --tools) and runs
//        the profiles given; `every-tool` wants one URL served with `--tools all`.
//
// ENGRAM_AGENT_VERBOSE=1 prints every answer's structuredContent.
//
// The SDK is loaded from $ENGRAM_CLIENTS_NODE_DIR/node_modules (default:
// <repo>/target/clients/node/node_modules, where tests/real_clients.rs installs it).
//
// Exit status: 0 when every step passed; 1 with every failing tool, its case and the
// SDK's error message on stderr; 2 on bad usage.

import { createRequire } from 'node:module';
import { readFileSync, readdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomUUID } from 'node:crypto';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, '..', '..');
const NODE_DIR = process.env.ENGRAM_CLIENTS_NODE_DIR || join(REPO, 'target', 'clients', 'node');
const require = createRequire(join(NODE_DIR, 'package.json'));
const { Client } = require('@modelcontextprotocol/sdk/client/index.js');
const { StdioClientTransport } = require('@modelcontextprotocol/sdk/client/stdio.js');
const { StreamableHTTPClientTransport } = require('@modelcontextprotocol/sdk/client/streamableHttp.js');
const { ToolListChangedNotificationSchema } = require('@modelcontextprotocol/sdk/types.js');
const SDK_VERSION = JSON.parse(
  readFileSync(join(NODE_DIR, 'node_modules', '@modelcontextprotocol', 'sdk', 'package.json'), 'utf8')
).version;

const CASES = JSON.parse(readFileSync(join(HERE, 'cases.json'), 'utf8'));
const PROFILES = ['core', 'compat', 'all'];
const NOTIFY_WAIT_MS = 3000;
// Longest one request may take before it is reported as a failure (a dropped request).
const REQUEST_OPTIONS = { timeout: 15000 };
const VERBOSE = Boolean(process.env.ENGRAM_AGENT_VERBOSE);

// ajv (inside the SDK) warns on console about schema keywords it ignores, such as
// formats it does not know ("uint64"). They are not failures; they are shown per tool.
const ajvWarnings = new Set();
const origWarn = console.warn;
console.warn = (...args) => {
  const text = args.map(String).join(' ');
  if (/unknown format|ignored in schema|strict mode/i.test(text)) ajvWarnings.add(text);
  else origWarn(...args);
};

/** Tool names per profile, from operations/*.toml (the source of truth). */
function catalog() {
  const out = { core: new Set(), compat: new Set(), all: new Set() };
  const dir = join(REPO, 'operations');
  for (const f of readdirSync(dir).filter((f) => f.endsWith('.toml')).sort()) {
    const text = readFileSync(join(dir, f), 'utf8');
    for (const chunk of text.split(/^\[\[operation\]\]\s*$/m).slice(1)) {
      const name = chunk.match(/^name\s*=\s*"([^"]+)"/m)?.[1];
      if (!name) continue;
      out.all.add(name);
      const profiles = chunk.match(/^profiles\s*=\s*\[([^\]]*)\]/m)?.[1] ?? '';
      for (const p of profiles.matchAll(/"([^"]+)"/g)) {
        (out[p[1]] ??= new Set()).add(name);
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------- variables and checks

function substitute(value, env, missing) {
  if (typeof value === 'string') {
    const whole = value.match(/^\$([A-Za-z_][A-Za-z0-9_]*)$/);
    if (whole) {
      const name = whole[1];
      if (!(name in env)) {
        missing.push(name);
        return `missing-${name}`;
      }
      return structuredClone(env[name]);
    }
    return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, name) => {
      if (!(name in env)) {
        missing.push(name);
        return `missing-${name}`;
      }
      return String(env[name]);
    });
  }
  if (Array.isArray(value)) return value.map((v) => substitute(v, env, missing));
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, substitute(v, env, missing)]));
  }
  return value;
}

const ABSENT = Symbol('absent');

function lookup(doc, path) {
  let cur = doc;
  for (const part of path.split('.')) {
    if (Array.isArray(cur) && /^\d+$/.test(part) && Number(part) < cur.length) cur = cur[Number(part)];
    else if (cur && typeof cur === 'object' && !Array.isArray(cur) && Object.hasOwn(cur, part)) cur = cur[part];
    else return ABSENT;
  }
  return cur;
}

function short(v, n = 160) {
  const s = v === ABSENT ? '<absent>' : JSON.stringify(v);
  return s === undefined ? String(v) : s.length <= n ? s : s.slice(0, n - 3) + '...';
}

function deepEqual(a, b) {
  return JSON.stringify(canonical(a)) === JSON.stringify(canonical(b));
}
function canonical(v) {
  if (Array.isArray(v)) return v.map(canonical);
  if (v && typeof v === 'object') {
    return Object.fromEntries(Object.keys(v).sort().map((k) => [k, canonical(v[k])]));
  }
  return v;
}

function runChecks(sc, checks, env) {
  const problems = [];
  for (const [path, preds] of Object.entries(checks ?? {})) {
    const got = lookup(sc, path);
    for (const [pred, rawWant] of Object.entries(preds)) {
      const want = substitute(rawWant, env, []);
      let ok;
      if (pred === 'present') ok = (got !== ABSENT && got !== null && got !== undefined) === want;
      else if (pred === 'equals') ok = got !== ABSENT && deepEqual(got, want);
      else if (pred === 'len') ok = Array.isArray(got) && got.length === want;
      else if (pred === 'min_len') ok = Array.isArray(got) && got.length >= want;
      else throw new Error(`unknown check ${pred} in cases.json`);
      if (!ok) problems.push(`check ${path} ${pred} ${short(want)}: got ${short(got)}`);
    }
  }
  return problems;
}

// ---------------------------------------------------------------- the run

class Report {
  constructor(label) {
    this.label = label;
    this.failures = []; // [tool, case, message]
    this.passed = 0;
    this.called = new Set();
    this.validated = new Set();
  }
  ok(tool, kase, note = '') {
    this.passed += 1;
    console.log(`  ok    ${tool} [${kase}]${note}`);
  }
  fail(tool, kase, message) {
    this.failures.push([tool, kase, message]);
    console.log(`  FAIL  ${tool} [${kase}]: ${message}`);
  }
}

function errorText(result) {
  return (result.content ?? [])
    .filter((c) => c.type === 'text')
    .map((c) => c.text)
    .join(' ');
}

function describe(e) {
  if (e && typeof e === 'object' && 'code' in e) return `${e.constructor?.name ?? 'Error'} ${e.code}: ${e.message}`;
  return `${e?.constructor?.name ?? 'Error'}: ${e?.message ?? String(e)}`;
}

class Runner {
  constructor(client, report, profile) {
    this.client = client;
    this.report = report;
    this.profile = profile;
    this.env = { MISSING_ID: CASES.missing_id };
    this.listed = new Map();
    this.listChanged = 0;
  }

  async listAll() {
    const tools = new Map();
    let cursor;
    do {
      const page = await this.client.listTools(cursor ? { cursor } : undefined, REQUEST_OPTIONS);
      for (const t of page.tools) tools.set(t.name, t);
      cursor = page.nextCursor;
    } while (cursor);
    return tools;
  }

  async relist(step) {
    const kase = 'tools/list';
    if (step.notified) {
      const deadline = Date.now() + NOTIFY_WAIT_MS;
      while (this.listChanged === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      if (this.listChanged === 0) this.report.fail('tools/list', kase, 'no notifications/tools/list_changed arrived');
    }
    this.listChanged = 0;
    try {
      this.listed = await this.listAll();
    } catch (e) {
      this.report.fail('tools/list', kase, describe(e));
      return;
    }
    const names = new Set(this.listed.keys());
    const problems = [];
    if (step.catalog) {
      const want = catalog()[this.profile];
      const missing = [...want].filter((n) => !names.has(n)).sort();
      const extra = [...names].filter((n) => !want.has(n)).sort();
      if (missing.length || extra.length) {
        problems.push(
          `listed tools differ from operations/*.toml profile '${this.profile}': ` +
            `missing ${JSON.stringify(missing)}, unexpected ${JSON.stringify(extra)}`
        );
      }
    }
    for (const n of step.includes ?? []) if (!names.has(n)) problems.push(`${n} not listed`);
    for (const n of step.excludes ?? []) if (names.has(n)) problems.push(`${n} listed but should not be`);
    for (const [name, t] of this.listed) {
      if (!t.outputSchema) problems.push(`${name} has no outputSchema: its answers go unvalidated`);
      // The SDK compiles one validator per listed outputSchema; without it callTool checks nothing.
      else if (!this.client.getToolOutputValidator(name)) {
        problems.push(`the SDK holds no output validator for ${name} after tools/list`);
      }
    }
    if (problems.length) for (const p of problems) this.report.fail('tools/list', kase, p);
    else this.report.ok('tools/list', kase, ` (${names.size} tools)`);
  }

  async call(step) {
    const tool = step.tool;
    const kase = step.case ?? '';
    const expect = step.expect ?? 'ok';
    const missing = [];
    const args = substitute(step.args ?? {}, this.env, missing);
    const dep = missing.length
      ? ` (earlier steps did not produce ${missing.map((m) => '$' + m).join(', ')})`
      : '';
    this.report.called.add(tool);
    const listed = this.listed.get(tool);
    if (expect === 'ok' && listed && !listed.outputSchema) {
      this.report.fail(tool, kase, 'no outputSchema in tools/list: the answer cannot be validated');
    }
    let result;
    try {
      // Client.callTool validates structuredContent against the listed outputSchema
      // (ajv) and throws McpError(InvalidParams) when it does not match.
      result = await this.client.callTool({ name: tool, arguments: args }, undefined, REQUEST_OPTIONS);
    } catch (e) {
      const kind =
        expect === 'ok'
          ? 'protocol/SDK error'
          : 'expected a tool error (isError), got a protocol/SDK error';
      this.report.fail(tool, kase, `${kind}: ${describe(e)}${dep}`);
      return;
    }
    if (expect === 'error') {
      if (result.isError) {
        const text = errorText(result);
        if (!text.trim()) this.report.fail(tool, kase, 'tool error without a text message');
        else this.report.ok(tool, kase, ` -> isError: ${JSON.stringify(text.slice(0, 90))}`);
      } else {
        this.report.fail(
          tool,
          kase,
          `expected a tool error (isError), got success: ${short(result.structuredContent)}${dep}`
        );
      }
      return;
    }
    if (result.isError) {
      this.report.fail(tool, kase, `unexpected tool error: ${errorText(result)}${dep}`);
      return;
    }
    const sc = result.structuredContent;
    if (sc === undefined || sc === null) {
      this.report.fail(tool, kase, 'success without structuredContent');
      return;
    }
    if (listed && listed.outputSchema && this.client.getToolOutputValidator(tool)) this.report.validated.add(tool);
    for (const [v, path] of Object.entries(step.save ?? {})) {
      const got = lookup(sc, path);
      if (got !== ABSENT && got !== null && got !== undefined) this.env[v] = got;
    }
    if (VERBOSE) console.log(`        ${short(sc, 400)}`);
    const problems = runChecks(sc, step.check, this.env);
    if (problems.length) this.report.fail(tool, kase, problems.join('; ') + dep);
    else this.report.ok(tool, kase);
  }

  async run(steps) {
    for (const step of steps) {
      if ('relist' in step) await this.relist(step);
      else await this.call(step);
    }
  }
}

async function runSession(makeTransport, profile, steps, report) {
  const client = new Client({ name: 'engram-real-clients', version: '0' }, { capabilities: {} });
  let runner = null;
  client.setNotificationHandler(ToolListChangedNotificationSchema, () => {
    if (runner) runner.listChanged += 1;
  });
  let closing = false;
  // Errors the transport reports while the session runs are findings; the abort of the
  // SSE stream that close() itself causes is not.
  client.onerror = (e) => {
    if (!closing) report.fail('transport', 'onerror', describe(e));
  };
  const transport = makeTransport();
  // The client hands the negotiated version to transports that take it (HTTP); note it for the log.
  let negotiated = '?';
  const setVersion = transport.setProtocolVersion?.bind(transport);
  transport.setProtocolVersion = (v) => {
    negotiated = v;
    setVersion?.(v);
  };
  try {
    await client.connect(transport);
    const info = client.getServerVersion();
    console.log(`  (connected: protocol ${negotiated}, server ${info?.name ?? '?'} ${info?.version ?? '?'})`);
    runner = new Runner(client, report, profile);
    await runner.run(steps);
  } catch (e) {
    report.fail('session', profile, `connection failed: ${describe(e)}`);
  } finally {
    closing = true;
    try {
      await client.close();
    } catch (e) {
      report.fail('session', profile, `close failed: ${describe(e)}`);
    }
  }
}

function usage(msg) {
  console.error(msg);
  console.error('usage: node agent.mjs profile|every-tool stdio BINARY [ARG...] | http URL|PROFILE=URL...');
  process.exit(2);
}

async function main() {
  const [mode, transportKind, ...target] = process.argv.slice(2);
  if (!['profile', 'every-tool'].includes(mode)) usage(`unknown mode ${mode}`);
  if (!['stdio', 'http'].includes(transportKind)) usage(`unknown transport ${transportKind}`);
  if (!target.length) usage('missing BINARY or URL');

  let jobs = mode === 'profile' ? PROFILES.map((p) => [p, CASES.profiles[p]]) : [['all', CASES.every_tool]];
  const urls = {};
  if (transportKind === 'http') {
    for (const item of target) {
      const eq = item.indexOf('=');
      if (eq > 0 && PROFILES.includes(item.slice(0, eq))) urls[item.slice(0, eq)] = item.slice(eq + 1);
      else urls[mode === 'every-tool' ? 'all' : '*'] = item;
    }
    if (mode === 'profile') {
      if (urls['*']) usage('profile over http wants PROFILE=URL for each profile');
      jobs = jobs.filter(([p]) => p in urls);
    } else if (!urls.all) usage('every-tool over http wants one URL served with --tools all');
  }

  const reports = [];
  for (const [profile, steps] of jobs) {
    const label = `node ${transportKind} ${mode} --tools ${profile}`;
    console.log(`== ${label}`);
    const report = new Report(label);
    reports.push(report);
    if (transportKind === 'stdio') {
      const dataDir = mkdtempSync(join(tmpdir(), 'engram-agent-node-'));
      try {
        const [binary, ...rest] = target;
        const args = [...(rest.length ? rest : ['serve']), '--data-dir', dataDir, '--tools', profile];
        await runSession(
          () =>
            new StdioClientTransport({
              command: binary,
              args,
              env: { ...process.env, ENGRAM_LOG: process.env.ENGRAM_LOG ?? 'warn' },
              stderr: 'inherit',
            }),
          profile,
          steps,
          report
        );
      } finally {
        rmSync(dataDir, { recursive: true, force: true });
      }
    } else {
      // A namespace of its own, so runs sharing one server never see each other's memories.
      const namespace = `agent-node-${randomUUID().replace(/-/g, '').slice(0, 12)}`;
      console.log(`  (namespace ${namespace})`);
      await runSession(
        () =>
          new StreamableHTTPClientTransport(new URL(urls[profile]), {
            requestInit: { headers: { 'X-Engram-Namespace': namespace } },
          }),
        profile,
        steps,
        report
      );
    }
    if (mode === 'every-tool') {
      const all = catalog().all;
      const never = [...all].filter((n) => !report.called.has(n)).sort();
      if (never.length) report.fail('coverage', 'every tool called', `never called: ${JSON.stringify(never)}`);
      const unvalidated = [...all].filter((n) => !report.validated.has(n)).sort();
      if (unvalidated.length) {
        report.fail(
          'coverage',
          'every tool validated',
          `no successful, schema-validated answer from: ${JSON.stringify(unvalidated)}`
        );
      }
    }
  }

  if (ajvWarnings.size) {
    console.log(`ajv warnings while compiling output schemas (not failures): ${ajvWarnings.size}`);
    for (const w of [...ajvWarnings].sort()) console.log(`  warn  ${w}`);
  }
  const totalFail = reports.reduce((n, r) => n + r.failures.length, 0);
  const totalOk = reports.reduce((n, r) => n + r.passed, 0);
  console.log(`typescript SDK @modelcontextprotocol/sdk ${SDK_VERSION}: ${totalOk} passed, ${totalFail} failed`);
  if (totalFail) {
    console.error(`\nFAILURES (typescript SDK ${SDK_VERSION}, ${transportKind}, ${mode}):`);
    for (const r of reports) {
      if (!r.failures.length) continue;
      console.error(`-- ${r.label}: ${r.failures.length} failing steps`);
      const sorted = [...r.failures].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
      for (const [tool, kase, msg] of sorted) console.error(`   ${tool} [${kase}]: ${msg}`);
    }
    process.exitCode = 1;
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
