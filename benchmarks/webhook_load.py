"""Admission webhook under load: requests/s and latency per endpoint, beside a ceiling.

Starts ``apportion serve`` (standalone, TLS, the embedded ~500-GPU default cluster, all
namespaces managed) and, in the same run, a trivial allow-all aiohttp handler over TLS
with uvloop — the most any Python webhook could do on this machine. ``wrk`` (a separate
process; Debian package ``wrk``) drives each with realistic AdmissionReviews built from
the captured ones in tests/fixtures/admission: 70% pods without GPUs, 30% GPU pods
(whole GPUs, MIG slices, memory needs), every request with its own uid and pod name.

    .venv/bin/python benchmarks/webhook_load.py [--seconds 30] [--connections 64]

The last line is one JSON object:
{"mutate_rps", "mutate_p50_ms", "mutate_p99_ms", "validate_rps", "validate_p99_ms",
 "ceiling_rps"}. Target (issue 3): /mutate >= 5,000 req/s with p99 <= 10 ms on 2 cores,
load generator included, i.e. at least a third of the ceiling.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import trustme

ROOT = Path(__file__).resolve().parent.parent
ADMISSION = ROOT / "tests" / "fixtures" / "admission"

LUA = r"""
local bodies = {}
local count = 0
local sent = 0
local id = 0
local threads = 0

setup = function(thread)
  thread:set("id", threads)
  threads = threads + 1
end

init = function(args)
  for line in io.lines(args[1]) do
    count = count + 1
    bodies[count] = line
  end
end

request = function()
  sent = sent + 1
  local body = bodies[(sent % count) + 1]:gsub("__N__", id .. "x" .. sent)
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
"""

ALLOW_ALL = r"""
import asyncio, ssl, sys, json
import uvloop
from aiohttp import web

async def handle(request):
    review = json.loads(await request.read())
    uid = review["request"]["uid"]
    return web.json_response({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                              "response": {"uid": uid, "allowed": True}})

async def main(port, cert, key):
    app = web.Application()
    app.router.add_post("/mutate", handle)
    app.router.add_get("/healthz", lambda r: web.Response(text="ok"))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx, backlog=1024).start()
    await asyncio.Event().wait()

uvloop.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _bodies(endpoint: str) -> list[str]:
    """One request body per line, ``__N__`` replaced per request by a unique suffix."""
    gpu = []
    for name, change in (
        ("create-pod-gpu-1", None),
        ("create-pod-gpu-8", None),
        ("create-pod-mig-1g-10gb", None),
        ("create-pod-gpu-1", {"apportion.io/gpu-memory": "18Gi"}),
    ):
        kind = "mutate-create" if endpoint == "mutate" else "validate-create"
        gpu.append(_templated(json.loads((ADMISSION / f"{name}.{kind}.json").read_text()), change))
    plain = []
    for body in gpu[:2]:
        data = json.loads(body)
        for container in data["request"]["object"]["spec"]["containers"]:
            for part in ("requests", "limits"):
                container["resources"][part].pop("nvidia.com/gpu", None)
        data["request"]["object"]["metadata"]["annotations"] = {}
        plain.append(json.dumps(data))
    # 7 of 10 without GPUs, 3 of 10 with: interleaved so every window has the mix.
    mix = [plain[0], gpu[0], plain[1], plain[0], gpu[1], plain[1], plain[0], gpu[2], plain[1]]
    return [*mix, gpu[3]]


def _templated(data: dict[str, Any], annotations: dict[str, str] | None) -> str:
    request = data["request"]
    request["uid"] = "uid-__N__"
    request["namespace"] = "team-a"  # the default cluster's queue team-a is open to it
    pod = request["object"]
    pod["metadata"]["namespace"] = "team-a"
    pod["metadata"]["name"] = pod["metadata"].get("name", "pod") + "-__N__"
    request["name"] = pod["metadata"]["name"]
    if annotations:
        for container in pod["spec"]["containers"]:
            for part in ("requests", "limits"):
                container["resources"][part].pop("nvidia.com/gpu", None)
        pod["metadata"]["annotations"] = {**pod["metadata"].get("annotations", {}), **annotations}
    return json.dumps(data, separators=(",", ":"))


def _wait_ready(url: str, process: subprocess.Popen[bytes], context: Any = None) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited early with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1, context=context):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} not ready in 60 s")


_LATENCY = re.compile(r"^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _wrk(url: str, bodies: Path, script: Path, seconds: int, connections: int) -> dict[str, float]:
    result = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
            "--",
            str(bodies),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    out = result.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    latencies = {p: float(v) * _UNIT[u] for p, v, u in _LATENCY.findall(out)}
    max_match = re.search(r"Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"{url}: {errors.group(1)} error responses\n{out}")
    return {
        "rps": rps,
        "p50_ms": latencies["50"],
        "p99_ms": latencies["99"],
        "max_ms": float(max_match.group(1)) * _UNIT[max_match.group(2)] if max_match else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("this benchmark needs wrk (Debian: apt-get install wrk)")
    work = Path(tempfile.mkdtemp(prefix="apportion-bench-"))
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    cert, key = work / "tls.crt", work / "tls.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    script = work / "bodies.lua"
    script.write_text(LUA)
    port, probe, ceiling_port = _free_port(), _free_port(), _free_port()
    env = {
        **os.environ,
        "APPORTION_CERT_FILE": str(cert),
        "APPORTION_KEY_FILE": str(key),
        "APPORTION_PORT": str(port),
        "APPORTION_PROBE_PORT": str(probe),
        "APPORTION_HOST": "127.0.0.1",
        "APPORTION_LOG_LEVEL": "warning",
        "KUBECONFIG": "",
    }
    env.pop("KUBERNETES_SERVICE_HOST", None)
    server = subprocess.Popen([sys.executable, "-m", "scheduler", "serve"], env=env)
    ceiling = subprocess.Popen(
        [sys.executable, "-c", ALLOW_ALL, str(ceiling_port), str(cert), str(key)]
    )
    try:
        _wait_ready(f"http://127.0.0.1:{probe}/readyz", server)
        insecure = __import__("ssl")._create_unverified_context()
        _wait_ready(f"https://127.0.0.1:{ceiling_port}/healthz", ceiling, insecure)
        results: dict[str, dict[str, float]] = {}
        for name, url, endpoint in (
            ("ceiling", f"https://127.0.0.1:{ceiling_port}/mutate", "mutate"),
            ("mutate", f"https://127.0.0.1:{port}/mutate", "mutate"),
            ("validate", f"https://127.0.0.1:{port}/validate", "validate"),
        ):
            bodies = work / f"{name}.jsonl"
            bodies.write_text("\n".join(_bodies(endpoint)) + "\n")
            print(f"== {name}: wrk -t2 -c{args.connections} -d{args.seconds}s {url}", flush=True)
            results[name] = _wrk(url, bodies, script, args.seconds, args.connections)
            r = results[name]
            print(
                f"   {r['rps']:,.0f} req/s   p50 {r['p50_ms']:.2f} ms   p99 {r['p99_ms']:.2f} ms"
                f"   max {r['max_ms']:.1f} ms",
                flush=True,
            )
    finally:
        for process in (server, ceiling):
            process.terminate()
            process.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    mutate, validate, top = results["mutate"], results["validate"], results["ceiling"]
    share = mutate["rps"] / top["rps"]
    verdict = "PASS" if mutate["rps"] >= 5000 and mutate["p99_ms"] <= 10 else "MISS"
    print(
        f"mutate/ceiling = {share:.2f} (target >= 0.33); target >= 5,000 req/s and p99 <= 10 ms:"
        f" {verdict}"
    )
    print(
        json.dumps(
            {
                "mutate_rps": round(mutate["rps"]),
                "mutate_p50_ms": mutate["p50_ms"],
                "mutate_p99_ms": mutate["p99_ms"],
                "validate_rps": round(validate["rps"]),
                "validate_p99_ms": validate["p99_ms"],
                "ceiling_rps": round(top["rps"]),
            }
        )
    )


if __name__ == "__main__":
    main()
