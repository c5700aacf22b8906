#!/usr/bin/env python3
"""What a call costs over stdio before any operation runs, against what a cache
hit costs: p50/p95 of `ping` (answered by the protocol layer, no operation) and
of one `semantic_search` repeated (a query-cache hit after the first), then the
same search with the cache off. One client with blocking reads, calls in
sequence, a fresh store holding N generated facts. Usage:
    python3 benches/stdio_floor.py target/release/engram [N]"""
import json, random, subprocess, sys, tempfile, time

BIN = sys.argv[1]
N = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
CALLS = 2000
WORDS = ("postgres replica failover cache index shard deploy rollback latency queue "
         "worker memory disk network timeout retry").split()
QUERY = {"query": "postgres replica failover", "limit": 10}
# After loading, the index commits and merges what was loaded on other threads:
# measured during that, every call also waits for cores.
SETTLE_S = 5


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def server(extra):
    p = subprocess.Popen([BIN, "--data-dir", tempfile.mkdtemp(), "--log", "warn", "--rate-limit", "0",
                          "--tools", "all", *extra, "serve"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    n = [0]

    def rpc(method, params=None):
        n[0] += 1
        msg = {"jsonrpc": "2.0", "id": n[0], "method": method}
        if params is not None:
            msg["params"] = params
        p.stdin.write((json.dumps(msg) + "\n").encode())
        p.stdin.flush()
        while True:
            answer = json.loads(p.stdout.readline())
            if answer.get("id") == n[0]:
                assert "result" in answer and not answer["result"].get("isError"), answer
                return answer

    rpc("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "stdio_floor", "version": "1"}})
    p.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
    p.stdin.flush()
    rng = random.Random(1)
    for _ in range(0, N, 100):
        facts = [{"content": " ".join(rng.choice(WORDS) for _ in range(12))} for _ in range(100)]
        rpc("tools/call", {"name": "semantic_store_batch", "arguments": {"facts": facts}})
    time.sleep(SETTLE_S)
    return p, rpc


def timed(label, call):
    ms = []
    for _ in range(CALLS):
        t = time.perf_counter()
        call()
        ms.append((time.perf_counter() - t) * 1000)
    print(f"{label:24s} p50 {pct(ms, .5):6.3f} ms  p95 {pct(ms, .95):6.3f} ms  (n={len(ms)})")


for extra, label in (([], "cache on"), (["--cache-capacity", "0"], "cache off")):
    p, rpc = server(extra)
    search = lambda: rpc("tools/call", {"name": "semantic_search", "arguments": QUERY})
    search()
    if not extra:
        timed("ping", lambda: rpc("ping"))
    timed(f"semantic_search ({label})", search)
    p.stdin.close()
    p.wait()
