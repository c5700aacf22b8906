#!/usr/bin/env python3
"""p50/p95 of episodic_remember and episodic_recall over stdio and HTTP, per MCP
protocol generation (2025-11-25 with a session, 2026-07-28 stateless), raw JSON-RPC,
one client, calls in sequence, a fresh store. Usage:
    python3 benches/protocol_latency.py target/release/engram [N]"""
import http.client as httpclient, json, os, subprocess, sys, tempfile, time, statistics

BIN = sys.argv[1]
N = int(sys.argv[2]) if len(sys.argv) > 2 else 300
V26 = "2026-07-28"
META = {"io.modelcontextprotocol/protocolVersion": V26, "io.modelcontextprotocol/clientCapabilities": {}}

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]

def report(label, times):
    for op, ts in times.items():
        ms = [t * 1000 for t in ts]
        print(f"{label:28s} {op:18s} p50 {pct(ms, .5):6.3f} ms  p95 {pct(ms, .95):6.3f} ms  (n={len(ms)})")

def workload(call):
    times = {"episodic_remember": [], "episodic_recall": []}
    for i in range(N):
        for op, args in (("episodic_remember", {"content": f"measured event {i} about kiwi harvest {i % 17}"}),
                         ("episodic_recall", {"query": f"kiwi harvest {i % 17}"})):
            t = time.perf_counter()
            r = call(op, args)
            times[op].append(time.perf_counter() - t)
            assert "result" in r and not r["result"].get("isError"), r
    return times

def stdio(gen):
    d = tempfile.mkdtemp()
    p = subprocess.Popen([BIN, "--data-dir", d, "--log", "warn", "--tools", "all", "serve"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    n = [0]
    def rpc(method, params):
        n[0] += 1
        p.stdin.write((json.dumps({"jsonrpc": "2.0", "id": n[0], "method": method, "params": params}) + "\n").encode())
        p.stdin.flush()
        return json.loads(p.stdout.readline())
    if gen == "2025-11-25":
        rpc("initialize", {"protocolVersion": gen, "capabilities": {}, "clientInfo": {"name": "m", "version": "0"}})
        p.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n'); p.stdin.flush()
        call = lambda op, a: rpc("tools/call", {"name": op, "arguments": a})
    else:
        call = lambda op, a: rpc("tools/call", {"name": op, "arguments": a, "_meta": META})
    report(f"stdio {gen}", workload(call))
    p.stdin.close(); p.wait()

def http(gen):
    d = tempfile.mkdtemp()
    p = subprocess.Popen([BIN, "--data-dir", d, "--log", "warn", "--tools", "all", "serve", "--http", "127.0.0.1:0"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while True:
        line = p.stderr.readline().decode()
        if "listening on" in line:
            url = line.split("listening on ")[1].strip()
            break
    host, port = url.split("//")[1].split("/")[0].split(":")
    conn = httpclient.HTTPConnection(host, int(port))
    n = [0]; sid = [None]
    def post(method, params, extra):
        n[0] += 1
        h = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
        h.update(extra)
        if sid[0]: h["mcp-session-id"] = sid[0]
        conn.request("POST", "/mcp", json.dumps({"jsonrpc": "2.0", "id": n[0], "method": method, "params": params}), h)
        r = conn.getresponse()
        if r.getheader("mcp-session-id"): sid[0] = r.getheader("mcp-session-id")
        body = r.read().decode()
        for l in body.splitlines():
            if l.startswith("data:") and l[5:].strip():
                return json.loads(l[5:])
        return json.loads(body) if body.strip() else {}
    if gen == "2025-11-25":
        post("initialize", {"protocolVersion": gen, "capabilities": {}, "clientInfo": {"name": "m", "version": "0"}}, {})
        conn.request("POST", "/mcp", '{"jsonrpc":"2.0","method":"notifications/initialized"}',
                     {"content-type": "application/json", "accept": "application/json, text/event-stream",
                      "mcp-session-id": sid[0], "mcp-protocol-version": gen})
        conn.getresponse().read()
        call = lambda op, a: post("tools/call", {"name": op, "arguments": a}, {"mcp-protocol-version": gen})
    else:
        call = lambda op, a: post("tools/call", {"name": op, "arguments": a, "_meta": META},
                                  {"mcp-protocol-version": V26, "mcp-method": "tools/call", "mcp-name": op,
                                   "x-engram-namespace": "bench"})
    report(f"http {gen}", workload(call))
    p.terminate(); p.wait()

for gen in ("2025-11-25", V26):
    stdio(gen)
for gen in ("2025-11-25", V26):
    http(gen)
