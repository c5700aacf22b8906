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
//   node agent.mjs [--protocol legacy] MODE stdio BINARY [ARG...]
//   node agent.mjs [--protocol legacy] MODE http URL | PROFILE=URL...
//
// MODE:
//   profile     for the profiles core, compat and all: list the tools (compared with
//               operations/*.toml) and call a sensible subset (cases.json "profiles").
//   every-tool  under `--tools all`: call every listed tool at least once (cases.json
//               "every_tool"): empty, paged, partial and error answers included.
//   agent       under `--tools all`: one agent's work (cases.json "agent"): remember and
//               recall, store and search facts, the graph, a session handle and its
//               scratch, discover_tools and call_operation; checks it finds what it stored.
//
// stdio: runs `BINARY ARG... --data-dir TMP --tools PROFILE` (ARG defaults to `serve`),
//        one fresh temporary data dir per server started; the server's stderr passes through.
// http:  the server(s) are already running; each session picks a fresh namespace
//        (X-Engram-Namespace), so one server can take many runs. `profile` wants one URL per profile
//        (core=URL compat=URL all=URL; each server started with that --tools) and runs
//        the profiles given; `every-tool` and `agent` want one URL served with `--tools all`.
//
// Protocol: the TypeScript SDK 1.x speaks only the handshake generation. `Client.connect`
// always sends `initialize` (at its LATEST_PROTOCOL_VERSION, 2025-11-25) and accepts only
// SUPPORTED_PROTOCOL_VERSIONS (2025-11-25 back to 2024-10-07); it has no `server/discover`
// and no per-request `_meta` protocol version, so it cannot speak MCP 2026-07-28.
// `--protocol legacy` (the default; `auto` means the same here) checks that a handshake
// version was negotiated; `--protocol 2026-07-28` is refused (exit 2).
// Steps of cases.json run when their `when` names one of the run's tags: `legacy`, the
// transport, and `stateful` (see cases.json "about").
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
const NODE_DIR = resolve(process.env.ENGRAM_CLIENTS_NODE_DIR || join(REPO, 'target', 'clients', 'node'));
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
// The protocol generation without a handshake, which this SDK does not speak.
const CURRENT_PROTOCOL = '2026-07-28';
// The namespace of a stdio server started without --namespace.
const STDIO_NAMESPACE = 'default';

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
    this.tags = new Set();
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

/** A step without `when` runs everywhere; with it, in runs holding one of its tags. */
function stepApplies(step, tags) {
  if (step.when === undefined) return true;
  return (Array.isArray(step.when) ? step.when : [step.when]).some((t) => tags.has(t));
}

class Runner {
  constructor(client, report, profile, tags, namespace) {
    this.client = client;
    this.report = report;
    this.profile = profile;
    this.tags = tags;
    this.env = { MISSING_ID: CASES.missing_id, NAMESPACE: namespace };
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
    if (expect === 'ok' && !listed) {
      this.report.fail(tool, kase, 'not in the last tools/list: the SDK cannot validate its answer');
    } else if (expect === 'ok' && !listed.outputSchema) {
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
        const want = step.error_includes;
        if (!text.trim()) this.report.fail(tool, kase, 'tool error without a text message');
        else if (want && !text.includes(want)) {
          this.report.fail(tool, kase, `tool error does not mention ${JSON.stringify(want)}: ${JSON.stringify(text)}`);
        } else this.report.ok(tool, kase, ` -> isError: ${JSON.stringify(text.slice(0, 90))}`);
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
      if (!stepApplies(step, this.tags)) continue;
      if ('relist' in step) await this.relist(step);
      else await this.call(step);
    }
  }
}

async function runSession(makeTransport, profile, steps, transportKind, namespace, report) {
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
  // The client hands the negotiated version to the transport after initialize (HTTP
  // transports use it; on stdio this property is ours): note it to check and log it.
  let negotiated = '?';
  const setVersion = transport.setProtocolVersion?.bind(transport);
  transport.setProtocolVersion = (v) => {
    negotiated = v;
    setVersion?.(v);
  };
  try {
    await client.connect(transport);
    const info = client.getServerVersion();
    if (negotiated === '?' || negotiated >= CURRENT_PROTOCOL) {
      report.fail('session', profile, `--protocol legacy: expected a handshake version, negotiated ${negotiated}`);
      return;
    }
    // This SDK always runs the handshake: the connection has a session.
    report.tags = new Set(['legacy', transportKind, 'stateful']);
    console.log(
      `  (connected: protocol ${negotiated}, server ${info?.name ?? '?'} ${info?.version ?? '?'}; ` +
        `steps for ${JSON.stringify([...report.tags].sort())})`
    );
    runner = new Runner(client, report, profile, report.tags, namespace);
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
  console.error(
    'usage: node agent.mjs [--protocol legacy] profile|every-tool|agent stdio BINARY [ARG...] | http URL|PROFILE=URL...'
  );
  process.exit(2);
}

async function main() {
  const argv = process.argv.slice(2);
  let protocol = 'legacy';
  if (argv[0] === '--protocol') {
    protocol = argv[1];
    argv.splice(0, 2);
  }
  if (protocol === CURRENT_PROTOCOL) {
    usage(
      `--protocol ${CURRENT_PROTOCOL}: @modelcontextprotocol/sdk ${SDK_VERSION} cannot speak it ` +
        '(Client.connect always sends initialize; no server/discover)'
    );
  }
  if (!['legacy', 'auto'].includes(protocol)) usage(`unknown --protocol ${protocol}`);
  const [mode, transportKind, ...target] = argv;
  if (!['profile', 'every-tool', 'agent'].includes(mode)) usage(`unknown mode ${mode}`);
  if (!['stdio', 'http'].includes(transportKind)) usage(`unknown transport ${transportKind}`);
  if (!target.length) usage('missing BINARY or URL');

  let jobs =
    mode === 'profile'
      ? PROFILES.map((p) => [p, CASES.profiles[p]])
      : [['all', mode === 'agent' ? CASES.agent : CASES.every_tool]];
  const urls = {};
  if (transportKind === 'http') {
    for (const item of target) {
      const eq = item.indexOf('=');
      if (eq > 0 && PROFILES.includes(item.slice(0, eq))) urls[item.slice(0, eq)] = item.slice(eq + 1);
      else urls[mode === 'profile' ? '*' : 'all'] = item;
    }
    if (mode === 'profile') {
      if (urls['*']) usage('profile over http wants PROFILE=URL for each profile');
      jobs = jobs.filter(([p]) => p in urls);
    } else if (!urls.all) usage(`${mode} over http wants one URL served with --tools all`);
  }

  const reports = [];
  for (const [profile, steps] of jobs) {
    const label = `node ${transportKind} ${mode} --tools ${profile} --protocol ${protocol}`;
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
          transportKind,
          STDIO_NAMESPACE,
          report
        );
      } finally {
        rmSync(dataDir, { recursive: true, force: true });
      }
    } else {
      // A namespace of its own, so runs sharing one server never see each other's memories.
      const namespace = `agent-node-${randomUUID().replace(/-/g, '').slice(0, 12)}`;
      console.log(`  (namespace ${namespace})`);
      const headers = { 'X-Engram-Namespace': namespace };
      // A server with tokens: an admin token may name any namespace.
      if (process.env.ENGRAM_TOKEN) headers.Authorization = `Bearer ${process.env.ENGRAM_TOKEN}`;
      await runSession(
        () =>
          new StreamableHTTPClientTransport(new URL(urls[profile]), {
            requestInit: { headers },
          }),
        profile,
        steps,
        transportKind,
        namespace,
        report
      );
    }
    if (mode === 'every-tool') {
      const all = catalog().all;
      const never = [...all].filter((n) => !report.called.has(n)).sort();
      if (never.length) report.fail('coverage', 'every tool called', `never called: ${JSON.stringify(never)}`);
      const exempt = new Set(
        Object.entries(CASES.no_success_when)
          .filter(([, tag]) => report.tags.has(tag))
          .map(([tool]) => tool)
      );
      const unvalidated = [...all].filter((n) => !report.validated.has(n) && !exempt.has(n)).sort();
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
