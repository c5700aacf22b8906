#!/usr/bin/env python3
"""Drives the real engram binary with the official MCP Python SDK (PyPI `mcp`, 2.x).

Every tool answer goes through the SDK's normal call path, `ClientSession.call_tool`
(reached through `mcp.Client.call_tool`), which validates `structuredContent` against
the tool's `outputSchema` from `tools/list` and raises on a mismatch. Nothing here
catches that to let it pass: a failing answer is reported with the SDK's message.

Usage:
  agent.py MODE stdio BINARY [ARG...]
  agent.py MODE http URL | PROFILE=URL...

MODE:
  profile     for the profiles core, compat and all: list the tools (compared with
              operations/*.toml) and call a sensible subset (cases.json "profiles").
  every-tool  under `--tools all`: call every listed tool at least once (cases.json
              "every_tool"): empty, paged, partial and error answers included.
  agent       under `--tools all`: one agent's work (cases.json "agent"): remember and
              recall, store and search facts, the graph, a session handle and its
              scratch, discover_tools and call_operation; checks it finds what it stored.

stdio: runs `BINARY ARG... --data-dir TMP --tools PROFILE` (ARG defaults to `serve`),
       one fresh temporary data dir per server started; the server's stderr passes through.
http:  the server(s) are already running; each session picks a fresh namespace
       (X-Engram-Namespace, sent on every request), so one server can take many runs.
       `profile` wants one URL per profile (core=URL compat=URL all=URL; each server
       started with that --tools) and runs the profiles given; `every-tool` and `agent`
       want one URL served with `--tools all`.

Options (before MODE): --protocol auto|legacy|2026-07-28 (default auto, what
`mcp.Client` does: probe server/discover, fall back to initialize). `legacy` and
`2026-07-28` are checked: the run fails unless that generation was negotiated. With
`2026-07-28` (`mcp.Client(mode="2026-07-28")` adopts the version without asking) the
driver also sends a real `server/discover` at 2026-07-28, fails unless the server
lists that version, and adopts the server's answer (as `auto` would).

Steps of cases.json run when their `when` names one of the run's tags: the generation
negotiated (`legacy` or `2026-07-28`), the transport, and `stateless` (2026-07-28 over
HTTP) or `stateful`.
ENGRAM_AGENT_VERBOSE=1 prints every answer's structuredContent.

Exit status: 0 when every step passed; 1 with every failing tool, its case and the
SDK's error message on stderr; 2 on bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import tomllib
import traceback
import uuid
from pathlib import Path
from typing import Any

import mcp
import mcp_types
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

try:  # the SDK's own client factory: its default MCP timeouts, plus our headers
    from mcp.shared._httpx_utils import create_mcp_http_client
except ImportError:  # pragma: no cover - moved in a later 2.x
    import httpx2

    def create_mcp_http_client(headers: dict[str, str] | None = None) -> Any:
        return httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=300.0))


HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CASES = json.loads((HERE / "cases.json").read_text())
PROFILES = ("core", "compat", "all")
NOTIFY_WAIT_S = 3.0
# Longest one request may take before it is reported as a failure (a dropped request).
REQUEST_TIMEOUT_S = 15.0
VERBOSE = bool(os.environ.get("ENGRAM_AGENT_VERBOSE"))
NAMESPACE_HEADER = "X-Engram-Namespace"
# The protocol generation without a handshake (server/discover, per-request metadata).
CURRENT_PROTOCOL = "2026-07-28"
# The namespace of a stdio server started without --namespace.
STDIO_NAMESPACE = "default"


class SdkWarnings(logging.Handler):
    """Warnings the SDK logs without failing a call (shown, not counted as failures)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        msg = f"{record.name}: {record.getMessage()}"
        self.seen[msg] = self.seen.get(msg, 0) + 1


SDK_WARNINGS = SdkWarnings()


def sdk_version() -> str:
    try:
        from importlib.metadata import version

        return version("mcp")
    except Exception:  # noqa: BLE001 - informational only
        return getattr(mcp, "__version__", "?")


def catalog() -> dict[str, set[str]]:
    """Tool names per profile, from operations/*.toml (the source of truth)."""
    out: dict[str, set[str]] = {p: set() for p in PROFILES}
    for f in sorted((REPO / "operations").glob("*.toml")):
        for op in tomllib.loads(f.read_text()).get("operation", []):
            out["all"].add(op["name"])
            for p in op.get("profiles", []):
                out.setdefault(p, set()).add(op["name"])
    return out


# ---------------------------------------------------------------- variables and checks


class Missing(Exception):
    pass


def substitute(value: Any, env: dict[str, Any], missing: list[str]) -> Any:
    if isinstance(value, str):
        m = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", value)
        if m:
            name = m.group(1)
            if name not in env:
                missing.append(name)
                return f"missing-{name}"
            return copy.deepcopy(env[name])

        def interp(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in env:
                missing.append(name)
                return f"missing-{name}"
            return str(env[name])

        return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", interp, value)
    if isinstance(value, list):
        return [substitute(v, env, missing) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, env, missing) for k, v in value.items()}
    return value


_ABSENT = object()


def lookup(doc: Any, path: str) -> Any:
    cur = doc
    for part in path.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return _ABSENT
    return cur


def short(v: Any, n: int = 160) -> str:
    s = json.dumps(v, ensure_ascii=False) if v is not _ABSENT else "<absent>"
    return s if len(s) <= n else s[: n - 3] + "..."


def strict_equal(a: Any, b: Any) -> bool:
    """JSON equality: unlike Python's ==, false is not 0 and true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(strict_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, dict)) or isinstance(b, (list, dict)):
        return False
    return a is not _ABSENT and a == b


def run_checks(sc: Any, checks: dict[str, dict[str, Any]], env: dict[str, Any]) -> list[str]:
    problems = []
    for path, preds in checks.items():
        got = lookup(sc, path)
        for pred, want in preds.items():
            want = substitute(want, env, [])
            if pred == "present":
                ok = (got is not _ABSENT and got is not None) == want
            elif pred == "equals":
                ok = strict_equal(got, want)
            elif pred in ("len", "min_len"):
                ok = isinstance(got, list) and (len(got) == want if pred == "len" else len(got) >= want)
            else:
                raise ValueError(f"unknown check {pred!r} in cases.json")
            if not ok:
                problems.append(f"check {path} {pred} {short(want)}: got {short(got)}")
    return problems


# ---------------------------------------------------------------- the run


def one_line(message: str) -> str:
    """The SDK's message on one line. jsonschema's messages go on with a dump of the whole
    schema and instance; keep the message and where it failed ("Failed validating 'type' in
    schema['properties']['count']", "On instance['count']"), not the dumps."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return message
    kept = [lines[0]]
    kept += [line.rstrip(":") for line in lines[1:] if line.startswith(("Failed validating", "On instance"))]
    if len(kept) == 1:
        kept = lines
    text = " | ".join(kept) if len(kept) > 1 and kept is not lines else " ".join(kept)
    return text if len(text) <= 600 else text[:597] + "..."


class Report:
    def __init__(self, label: str) -> None:
        self.label = label
        self.failures: list[tuple[str, str, str]] = []  # (tool, case, message)
        self.passed = 0
        self.called: set[str] = set()
        self.validated: set[str] = set()
        self.tags: set[str] = set()

    def ok(self, tool: str, case: str, note: str = "") -> None:
        self.passed += 1
        print(f"  ok    {tool} [{case}]{note}", flush=True)

    def fail(self, tool: str, case: str, message: str) -> None:
        message = one_line(message)
        self.failures.append((tool, case, message))
        print(f"  FAIL  {tool} [{case}]: {message}", flush=True)


def describe(e: BaseException) -> str:
    """An SDK exception as its type, JSON-RPC code (for MCPError) and message."""
    code = getattr(e, "code", None)
    return f"{type(e).__name__}{f' {code}' if isinstance(code, int) else ''}: {e}"


def error_text(result: Any) -> str:
    texts = [c.text for c in (result.content or []) if getattr(c, "type", None) == "text"]
    return " ".join(texts)


def step_applies(step: dict[str, Any], tags: set[str]) -> bool:
    """A step without `when` runs everywhere; with it, in runs holding one of its tags."""
    when = step.get("when")
    if when is None:
        return True
    return bool(tags & ({when} if isinstance(when, str) else set(when)))


def run_tags(protocol_version: str, transport: str) -> set[str]:
    generation = CURRENT_PROTOCOL if protocol_version >= CURRENT_PROTOCOL else "legacy"
    stateless = generation == CURRENT_PROTOCOL and transport == "http"
    return {generation, transport, "stateless" if stateless else "stateful"}


class Runner:
    def __init__(self, client: Client, report: Report, profile: str, tags: set[str], namespace: str) -> None:
        self.client = client
        self.report = report
        self.profile = profile
        self.tags = tags
        self.env: dict[str, Any] = {"MISSING_ID": CASES["missing_id"], "NAMESPACE": namespace}
        self.listed: dict[str, Any] = {}
        self.list_changed = 0

    async def list_all(self) -> dict[str, Any]:
        tools: dict[str, Any] = {}
        cursor = None
        while True:
            page = await self.client.list_tools(cursor=cursor, cache_mode="refresh")
            for t in page.tools:
                tools[t.name] = t
            cursor = page.next_cursor
            if not cursor:
                return tools

    async def relist(self, step: dict[str, Any]) -> None:
        case = "tools/list"
        if step.get("notified"):
            deadline = asyncio.get_running_loop().time() + NOTIFY_WAIT_S
            while self.list_changed == 0 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
            if self.list_changed == 0:
                self.report.fail("tools/list", case, "no notifications/tools/list_changed arrived")
        self.list_changed = 0
        try:
            self.listed = await self.list_all()
        except Exception as e:  # noqa: BLE001 - reported, not hidden
            self.report.fail("tools/list", case, describe(e))
            return
        names = set(self.listed)
        problems = []
        if step.get("catalog"):
            want = catalog()[self.profile]
            if names != want:
                problems.append(
                    f"listed tools differ from operations/*.toml profile {self.profile!r}: "
                    f"missing {sorted(want - names)}, unexpected {sorted(names - want)}"
                )
        for n in step.get("includes", []):
            if n not in names:
                problems.append(f"{n} not listed")
        for n in step.get("excludes", []):
            if n in names:
                problems.append(f"{n} listed but should not be")
        for name, t in self.listed.items():
            if t.output_schema is None:
                problems.append(f"{name} has no outputSchema: its answers go unvalidated")
        if problems:
            for p in problems:
                self.report.fail("tools/list", case, p)
        else:
            self.report.ok("tools/list", case, f" ({len(names)} tools)")

    async def call(self, step: dict[str, Any]) -> None:
        tool, case = step["tool"], step.get("case", "")
        expect = step.get("expect", "ok")
        missing: list[str] = []
        args = substitute(step.get("args", {}), self.env, missing)
        dep = f" (earlier steps did not produce {', '.join('$' + m for m in missing)})" if missing else ""
        self.report.called.add(tool)
        listed = self.listed.get(tool)
        if expect == "ok" and listed is None:
            self.report.fail(tool, case, "not in the last tools/list: the SDK cannot validate its answer")
        elif expect == "ok" and listed.output_schema is None:
            self.report.fail(tool, case, "no outputSchema in tools/list: the answer cannot be validated")
        try:
            # mcp.Client.call_tool -> ClientSession.call_tool, which validates
            # structuredContent against the listed outputSchema (RuntimeError if not).
            result = await self.client.call_tool(tool, args)
        except Exception as e:  # noqa: BLE001 - every SDK error is the finding
            kind = "protocol/SDK error" if expect == "ok" else "expected a tool error (isError), got a protocol/SDK error"
            self.report.fail(tool, case, f"{kind}: {describe(e)}{dep}")
            return
        if expect == "error":
            if result.is_error:
                want = step.get("error_includes")
                if not error_text(result).strip():
                    self.report.fail(tool, case, "tool error without a text message")
                elif want and want not in error_text(result):
                    self.report.fail(tool, case, f"tool error does not mention {want!r}: {error_text(result)!r}")
                else:
                    self.report.ok(tool, case, f" -> isError: {error_text(result)[:90]!r}")
            else:
                self.report.fail(
                    tool, case, f"expected a tool error (isError), got success: {short(result.structured_content)}{dep}"
                )
            return
        if result.is_error:
            self.report.fail(tool, case, f"unexpected tool error: {error_text(result)}{dep}")
            return
        sc = result.structured_content
        if sc is None:
            self.report.fail(tool, case, "success without structuredContent")
            return
        if listed is not None and listed.output_schema is not None:
            self.report.validated.add(tool)
        for var, path in step.get("save", {}).items():
            v = lookup(sc, path)
            if v is not _ABSENT and v is not None:
                self.env[var] = v
        if VERBOSE:
            print(f"        {short(sc, 400)}", flush=True)
        problems = run_checks(sc, step.get("check", {}), self.env)
        if problems:
            self.report.fail(tool, case, "; ".join(problems) + dep)
        else:
            self.report.ok(tool, case)

    async def run(self, steps: list[dict[str, Any]]) -> None:
        for step in steps:
            if not step_applies(step, self.tags):
                continue
            if "relist" in step:
                await self.relist(step)
            else:
                await self.call(step)


def message_handler_for(runner_box: list[Runner], report: Report) -> Any:
    async def handler(message: Any) -> None:
        if isinstance(message, Exception):
            # A transport-level fault the session surfaced (an unparsable message, ...).
            report.fail("transport", "incoming message", describe(message))
            return
        root = getattr(message, "root", message)
        method = getattr(root, "method", None)
        if method == "notifications/tools/list_changed" and runner_box:
            runner_box[0].list_changed += 1

    return handler


async def confirm_protocol(client: Client, protocol: str) -> str | None:
    """Checks that the generation asked for is the one in use; None, or what is wrong."""
    if protocol == CURRENT_PROTOCOL:
        # mcp.Client(mode="2026-07-28") adopts the version without asking the server:
        # ask it (server/discover at 2026-07-28, as mode="auto" does) and adopt its answer.
        try:
            raw = await client.session.send_discover(CURRENT_PROTOCOL)
            discovered = mcp_types.DiscoverResult.model_validate(raw)
        except Exception as e:  # noqa: BLE001 - the finding
            return f"server/discover at {CURRENT_PROTOCOL} failed: {describe(e)}"
        if CURRENT_PROTOCOL not in discovered.supported_versions:
            return f"server/discover lists {discovered.supported_versions}, not {CURRENT_PROTOCOL}"
        client.session.adopt(discovered)
        if client.session.protocol_version != CURRENT_PROTOCOL:
            return f"negotiated {client.session.protocol_version!r}, not {CURRENT_PROTOCOL}"
    elif protocol == "legacy":
        if client.session.initialize_result is None or client.session.protocol_version >= CURRENT_PROTOCOL:
            return f"expected an initialize handshake (legacy), negotiated {client.session.protocol_version!r}"
    return None


async def run_session(
    target: Any, profile: str, steps: list[dict[str, Any]], ns: argparse.Namespace, namespace: str, report: Report
) -> None:
    box: list[Runner] = []
    handler = message_handler_for(box, report)
    try:
        async with Client(
            target, mode=ns.protocol, message_handler=handler, read_timeout_seconds=REQUEST_TIMEOUT_S
        ) as client:
            wrong = await confirm_protocol(client, ns.protocol)
            if wrong:
                report.fail("session", profile, f"--protocol {ns.protocol}: {wrong}")
                return
            report.tags = run_tags(client.session.protocol_version, ns.transport)
            print(
                f"  (connected: protocol {client.session.protocol_version}, server "
                f"{getattr(client.server_info, 'name', '?')} {getattr(client.server_info, 'version', '?')}; "
                f"steps for {sorted(report.tags)})",
                flush=True,
            )
            runner = Runner(client, report, profile, report.tags, namespace)
            box.append(runner)
            await runner.run(steps)
    except Exception as e:  # noqa: BLE001
        report.fail("session", profile, f"connection failed: {describe(e)}")
        traceback.print_exc(file=sys.stderr)


def stdio_target(binary: str, args: list[str], profile: str, data_dir: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=binary,
        args=[*(args or ["serve"]), "--data-dir", data_dir, "--tools", profile],
        env={**os.environ, "ENGRAM_LOG": os.environ.get("ENGRAM_LOG", "warn")},
    )


async def main_async(ns: argparse.Namespace) -> int:
    reports: list[Report] = []
    jobs: list[tuple[str, list[dict[str, Any]]]] = []
    if ns.mode == "profile":
        jobs = [(p, CASES["profiles"][p]) for p in PROFILES]
    elif ns.mode == "agent":
        jobs = [("all", CASES["agent"])]
    else:
        jobs = [("all", CASES["every_tool"])]

    urls: dict[str, str] = {}
    if ns.transport == "http":
        for item in ns.target:
            if "=" in item and item.split("=", 1)[0] in PROFILES:
                p, u = item.split("=", 1)
                urls[p] = u
            else:
                urls["*" if ns.mode == "profile" else "all"] = item
        if ns.mode == "profile":
            if "*" in urls:
                print("profile over http wants PROFILE=URL for each profile", file=sys.stderr)
                return 2
            jobs = [(p, s) for p, s in jobs if p in urls]
        elif "all" not in urls:
            print(f"{ns.mode} over http wants one URL served with --tools all", file=sys.stderr)
            return 2

    for profile, steps in jobs:
        label = f"python {ns.transport} {ns.mode} --tools {profile} --protocol {ns.protocol}"
        print(f"== {label}", flush=True)
        report = Report(label)
        reports.append(report)
        if ns.transport == "stdio":
            data_dir = tempfile.mkdtemp(prefix="engram-agent-py-")
            try:
                target = stdio_target(ns.target[0], ns.target[1:], profile, data_dir)
                await run_session(target, profile, steps, ns, STDIO_NAMESPACE, report)
            finally:
                shutil.rmtree(data_dir, ignore_errors=True)
        else:
            # A namespace of its own, so runs sharing one server never see each other's memories.
            namespace = f"agent-py-{uuid.uuid4().hex[:12]}"
            print(f"  (namespace {namespace})", flush=True)
            headers = {NAMESPACE_HEADER: namespace}
            # A server with tokens: an admin token may name any namespace.
            if os.environ.get("ENGRAM_TOKEN"):
                headers["Authorization"] = f"Bearer {os.environ['ENGRAM_TOKEN']}"
            async with create_mcp_http_client(headers=headers) as http:
                target = streamable_http_client(urls[profile], http_client=http)
                await run_session(target, profile, steps, ns, namespace, report)
        if ns.mode == "every-tool":
            listed = catalog()["all"]
            never = sorted(listed - report.called)
            if never:
                report.fail("coverage", "every tool called", f"never called: {never}")
            exempt = {t for t, tag in CASES["no_success_when"].items() if tag in report.tags}
            unvalidated = sorted(listed - report.validated - exempt)
            if unvalidated:
                report.fail(
                    "coverage",
                    "every tool validated",
                    f"no successful, schema-validated answer from: {unvalidated}",
                )

    if SDK_WARNINGS.seen:
        print(f"SDK warnings (not failures): {len(SDK_WARNINGS.seen)}", flush=True)
        for msg, n in sorted(SDK_WARNINGS.seen.items()):
            print(f"  warn  {msg}" + (f" (x{n})" if n > 1 else ""), flush=True)
    total_fail = sum(len(r.failures) for r in reports)
    total_ok = sum(r.passed for r in reports)
    print(f"python SDK mcp {sdk_version()}: {total_ok} passed, {total_fail} failed", flush=True)
    if total_fail:
        print(f"\nFAILURES (python SDK mcp {sdk_version()}, {ns.transport}, {ns.mode}):", file=sys.stderr)
        for r in reports:
            if not r.failures:
                continue
            print(f"-- {r.label}: {len(r.failures)} failing steps", file=sys.stderr)
            by_tool: dict[str, list[tuple[str, str]]] = {}
            for tool, case, msg in r.failures:
                by_tool.setdefault(tool, []).append((case, msg))
            for tool in sorted(by_tool):
                for case, msg in by_tool[tool]:
                    print(f"   {tool} [{case}]: {msg}", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", default="auto", help="mcp.Client mode: auto, legacy or 2026-07-28")
    ap.add_argument("mode", choices=["profile", "every-tool", "agent"])
    ap.add_argument("transport", choices=["stdio", "http"])
    ap.add_argument("target", nargs=argparse.REMAINDER, help="BINARY [ARG...] or URL | PROFILE=URL...")
    ns = ap.parse_args()
    mcp_logger = logging.getLogger("mcp")
    mcp_logger.addHandler(SDK_WARNINGS)
    mcp_logger.propagate = False
    if not ns.target:
        ap.error("missing BINARY or URL")
    return asyncio.run(main_async(ns))


if __name__ == "__main__":
    sys.exit(main())
