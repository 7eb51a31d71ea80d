"""First scoring measurement: wrk against a real gunicorn on 127.0.0.1, 1-row requests per demo model.

    .venv/bin/python -m benchmarks.score_wrk [--rounds 3] [--duration 10] [--connections 4]

Starts the server (MIS_WORKERS workers, default as configured) on a free loopback port with a
throwaway data dir, runs `wrk --latency` once per model per round, prints the median of the
rounds, and stops the server by PID. Needs wrk (Debian package `wrk`).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.processes import GunicornProcess

ROWS = {
    "demo-sklearn-iris": [[5.1, 3.5, 1.4, 0.2]],
    "demo-xgboost-breast-cancer": [[17.99, 10.38, 122.8, 1001.0, 0.1184, 0.2776, 0.3001, 0.1471, 0.2419, 0.07871,
                                    1.095, 0.9053, 8.589, 153.4, 0.006399, 0.04904, 0.05373, 0.01587, 0.03003,
                                    0.006193, 25.38, 17.33, 184.6, 2019.0, 0.1622, 0.6656, 0.7119, 0.2654, 0.4601,
                                    0.1189]],
    "demo-lightgbm-wine": [[14.23, 1.71, 2.43, 15.6, 127.0, 2.8, 3.06, 0.28, 2.29, 5.64, 1.04, 3.92, 1065.0]],
}
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def run_wrk(url: str, model_id: str, duration: int, connections: int, workdir: Path) -> dict:
    script = workdir / f"{model_id}.lua"
    body = json.dumps(ROWS[model_id])
    script.write_text(f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\n'
                      'wrk.headers["Content-Type"] = "application/json"\n')
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script),
         f"{url}/api/v1/score/?model_id={model_id}"],
        capture_output=True, text=True, check=True, timeout=duration + 60,
    ).stdout
    if "Non-2xx" in out:
        sys.exit(f"wrk saw errors for {model_id}:\n{out}")
    latency = {p: float(v) * UNITS[u] for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)", out, re.M)}
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]), "p50_ms": latency["50"],
            "p99_ms": latency["99"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mis-bench-") as tmp:
        server = GunicornProcess(Path(tmp) / "data", Path(tmp) / "gunicorn.log", MIS_LOG_LEVEL="warning")
        try:
            server.start()
            results = {m: [run_wrk(server.url, m, args.duration, args.connections, Path(tmp))
                           for _ in range(args.rounds)] for m in ROWS}
        finally:
            server.stop()

    print(f"{'model':32} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}   (median of {args.rounds} x {args.duration} s, "
          f"{args.connections} connections)")
    for model_id, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"{model_id:32} {med['rps']:9.0f} {med['p50_ms']:8.2f} {med['p99_ms']:8.2f}")


if __name__ == "__main__":
    main()
