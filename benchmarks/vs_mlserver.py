"""Side by side with MLServer 1.7.1: the same four models, the same 1-row load, one table.

    .venv/bin/python -m benchmarks.vs_mlserver [--rounds 3] [--duration 10] [--workers 2] [--json out.json]
    .venv/bin/python -m benchmarks.vs_mlserver --memory    # PSS of 20 models x 4 workers vs 1 worker

Trains LogisticRegression, RandomForest (100 trees, depth 8), XGBoost and LightGBM (100 trees each)
on scikit-learn's breast cancer data (30 features), serves them with our server as production runs
it (gunicorn, our worker, every model preloaded) and with MLServer (installed on first use into its
own virtual environment, --venv; about a minute), checks that both answer what the models predict
in this process, then drives each with wrk (one thread, 1 and 16 connections, --duration seconds,
median of --rounds). MLServer gets its best settings: no debug or access log, no metrics, no gzip,
httptools, one OpenMP thread, and each parallel_workers value of --mlserver-parallel-workers, the
better one per row. The floor is one predict in this process (the library's call, and our runtime's
with its fast path); the ceiling our empty endpoint.
Everything listens on 127.0.0.1; every process started is stopped by its process group.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

# As gunicorn.conf.py does for our workers: one OpenMP thread. Set before xgboost / lightgbm load
# (libgomp reads it once), and inherited by both servers, so MLServer gets the same, its best, setting.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import joblib  # noqa: E402
import lightgbm  # noqa: E402
import numpy as np  # noqa: E402
import requests  # noqa: E402
import xgboost  # noqa: E402
from sklearn.datasets import load_breast_cancer  # noqa: E402
from sklearn.ensemble import RandomForestClassifier  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from server.frameworks import open_runtime  # noqa: E402
from tests.processes import GunicornProcess, free_port, stop_group, wait_until  # noqa: E402

MODELS = ("lr", "rf", "xgb", "lgbm")
ARTIFACT = {"lr": "model.joblib", "rf": "model.joblib", "xgb": "model.json", "lgbm": "model.txt"}
FRAMEWORK = {"lr": "scikit-learn", "rf": "scikit-learn", "xgb": "xgboost", "lgbm": "lightgbm"}
MLSERVER_IMPL = {"lr": "mlserver_sklearn.SKLearnModel", "rf": "mlserver_sklearn.SKLearnModel",
                 "xgb": "mlserver_xgboost.XGBoostModel", "lgbm": "mlserver_lightgbm.LightGBMModel"}
C16_RATIO_TARGET = {"lr": 5, "rf": 15, "xgb": 5, "lgbm": 5}
CHECK_ROWS = 25  # rows each server must label as this process does before anything is timed
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}
DEFAULT_VENV = Path.home() / ".cache" / "mis-bench" / "mlserver-venv"


# -- models ----------------------------------------------------------------------------------

def train() -> tuple[dict, np.ndarray]:
    x, y = load_breast_cancer(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs on unscaled features: convergence chatter only
        models = {
            "lr": LogisticRegression(max_iter=10000).fit(x, y),
            "rf": RandomForestClassifier(n_estimators=100, max_depth=8, random_state=0).fit(x, y),
            "xgb": xgboost.XGBClassifier(n_estimators=100, random_state=0, n_jobs=1).fit(x, y),
            "lgbm": lightgbm.LGBMClassifier(n_estimators=100, random_state=0, n_jobs=1, verbose=-1).fit(x, y),
        }
    return models, x


def save(models: dict, folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {name: folder / f"{name}-{ARTIFACT[name]}" for name in MODELS}
    joblib.dump(models["lr"], files["lr"])
    joblib.dump(models["rf"], files["rf"])
    # The classifier's save_model: the booster's JSON plus the wrapper's attributes, so MLServer (which
    # loads it into XGBClassifier) answers labels too; our runtime reads the same file as a Booster.
    models["xgb"].save_model(files["xgb"])
    models["lgbm"].booster_.save_model(files["lgbm"])
    return files


def write_catalog(catalog: Path, files: dict[str, Path], copies: int = 1) -> dict[str, str]:
    """Native catalog entries (server/backends/local_catalog.py); with copies > 1, `<name>-<i>` each. {id: model name}."""
    ids = {}
    for name in MODELS:
        for i in range(copies):
            model_id = f"bc-{name}" if copies == 1 else f"bc-{name}-{i}"
            entry = catalog / model_id
            entry.mkdir(parents=True)
            shutil.copyfile(files[name], entry / ARTIFACT[name])
            (entry / "metadata.json").write_text(json.dumps({
                "id": model_id, "name": f"breast cancer {name}", "version": "1", "framework": FRAMEWORK[name],
                "lifecycle_state": "ACTIVE", "custom_metadata": [], "artifact": ARTIFACT[name]}))
            ids[model_id] = name
    return ids


def floor_us(files: dict[str, Path], row: np.ndarray, calls: int = 2000) -> dict[str, float]:
    """Median time of one predict in this process, per (1, 30) row: the library's own call, and the
    call our server makes (its runtime with the exact fast path, from a parsed JSON row)."""
    library = {
        "lr": joblib.load(files["lr"]).predict,
        "rf": joblib.load(files["rf"]).predict,
        "xgb": xgboost.Booster(model_file=str(files["xgb"])).inplace_predict,
        "lgbm": lightgbm.Booster(model_file=str(files["lgbm"])).predict,
    }
    result = {}
    for name, predict in library.items():
        runtime = open_runtime(name, files[name])
        runtime.prepare()
        result[name] = {"library": _median_us(lambda: predict(row), calls),
                        "ours": _median_us(lambda: runtime.predict(row.tolist()), calls)}
    return result


def _median_us(call, calls: int) -> float:
    for _ in range(50):  # first calls allocate caches
        call()
    times = []
    for _ in range(calls):
        started = time.perf_counter_ns()
        call()
        times.append(time.perf_counter_ns() - started)
    return statistics.median(times) / 1000


# -- servers ---------------------------------------------------------------------------------

def ours_url(server: GunicornProcess, model_id: str) -> str:
    return f"{server.url}/api/v1/score/?model_id={model_id}"


def ours_body(row: list[float]) -> str:
    return json.dumps([row])


def ours_labels(answer: dict) -> list[int]:
    return [int(v) for v in answer["prediction"]]


def mls_url(base: str, name: str) -> str:
    return f"{base}/v2/models/{name}/infer"


def mls_body(row: list[float]) -> str:
    return json.dumps({"inputs": [{"name": "input-0", "shape": [1, len(row)], "datatype": "FP64", "data": row}]})


def mls_labels(answer: dict) -> list[int]:
    # LightGBM's runtime answers Booster.predict, the positive class's probability; LGBMClassifier
    # labels it 1 above 0.5, as our runtime does. The others answer labels already.
    output = answer["outputs"][0]
    if output["datatype"].startswith("FP"):
        return [int(v > 0.5) for v in output["data"]]
    return [int(v) for v in output["data"]]


def mlserver_venv(venv: Path) -> Path:
    """MLServer in its own environment (its pins clash with ours), reused while the pins are the same."""
    pins = [f"{p}=={importlib.metadata.version(p)}" for p in
            ("numpy", "scipy", "joblib", "scikit-learn", "lightgbm", "xgboost-cpu", "httptools")]
    # mlserver-xgboost requires `xgboost`, whose Linux wheel pulls ~470 MB of NVIDIA libraries:
    # xgboost-cpu provides the same module, and mlserver-xgboost goes in with --no-deps.
    wanted = ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "mlserver-lightgbm==1.7.1", "uvloop<0.22", *pins]
    stamp = venv / ".mis-bench-installed"
    if stamp.is_file() and stamp.read_text() == "\n".join(wanted):
        return venv / "bin" / "mlserver"
    shutil.rmtree(venv, ignore_errors=True)
    started = time.monotonic()
    print(f"installing MLServer 1.7.1 into {venv} ...", flush=True)
    pip = [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check"]
    for command, limit in (([sys.executable, "-m", "venv", str(venv)], 120), (pip + wanted, 900),
                           (pip + ["--no-deps", "mlserver-xgboost==1.7.1"], 300)):
        done = subprocess.run(command, capture_output=True, text=True, timeout=limit)
        if done.returncode:
            sys.exit(f"installing MLServer failed: {' '.join(command)}\n{done.stderr[-3000:]}")
    stamp.write_text("\n".join(wanted))
    print(f"installed in {time.monotonic() - started:.0f} s", flush=True)
    return venv / "bin" / "mlserver"


class MLServerProcess:
    def __init__(self, mlserver: Path, files: dict[str, Path], workdir: Path, parallel_workers: int):
        self.mlserver, self.workdir = mlserver, workdir
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log_path = workdir / "mlserver.log"
        self.process: subprocess.Popen | None = None
        repo = workdir / "models"
        for name in MODELS:
            (repo / name).mkdir(parents=True)
            shutil.copyfile(files[name], repo / name / ARTIFACT[name])
            (repo / name / "model-settings.json").write_text(json.dumps({
                "name": name, "implementation": MLSERVER_IMPL[name], "parameters": {"uri": f"./{ARTIFACT[name]}"}}))
        # Its best settings, not its defaults: no debug (which also turns the access log off), no
        # Prometheus middleware or metrics server, no gzip middleware; gRPC cannot be turned off, so it
        # gets a free loopback port and no traffic.
        (repo / "settings.json").write_text(json.dumps({
            "debug": False, "host": "127.0.0.1", "http_port": int(self.url.rsplit(":", 1)[1]),
            "grpc_port": free_port(), "metrics_port": free_port(), "metrics_endpoint": None,
            "gzip_enabled": False, "parallel_workers": parallel_workers, "load_models_at_startup": True}))
        self.repo = repo

    def start(self) -> "MLServerProcess":
        with open(self.log_path, "ab") as log:  # cwd: its .metrics / .envs folders land in workdir
            self.process = subprocess.Popen([str(self.mlserver), "start", str(self.repo)], cwd=self.workdir,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(self._ready, timeout=180, interval=0.25)
        return self

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"MLServer exited: {self.log_path.read_text()[-3000:]}")
        try:
            return requests.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process, grace_s=15)


def tree_memory_mib(pid: int) -> dict[str, float]:
    """RSS and PSS summed over a process and its descendants (smaps_rollup; PSS splits shared pages)."""
    pids, queue = [], [pid]
    while queue and len(pids) < 500:
        current = queue.pop()
        pids.append(current)
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                queue.extend(int(c) for c in children.read_text().split())
            except OSError:  # exited meanwhile
                pass
    totals = {"rss_mib": 0.0, "pss_mib": 0.0, "processes": 0}
    for current in pids:
        try:
            rollup = Path(f"/proc/{current}/smaps_rollup").read_text()
        except OSError:
            continue
        totals["rss_mib"] += int(re.search(r"^Rss:\s+(\d+) kB", rollup, re.M)[1]) / 1024
        totals["pss_mib"] += int(re.search(r"^Pss:\s+(\d+) kB", rollup, re.M)[1]) / 1024
        totals["processes"] += 1
    return totals


# -- load ------------------------------------------------------------------------------------

def wrk(url: str, duration: float, connections: int, workdir: Path, body: str | None = None) -> dict:
    script = workdir / "wrk.lua"
    script.write_text(f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\n'
                      'wrk.headers["Content-Type"] = "application/json"\n' if body else 'wrk.method = "GET"\n')
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
                         capture_output=True, text=True, check=True, timeout=duration + 60).stdout
    latency = {p: float(v) * UNITS[u] for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\b", out, re.M)}
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = (int(non_2xx[1]) if non_2xx else 0) + (sum(map(int, socket_errors.groups())) if socket_errors else 0)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]), "p50_ms": latency.get("50", 0.0),
            "p99_ms": latency.get("99", 0.0), "errors": errors}


def measure(urls: dict[str, str], body: str, args, workdir: Path) -> dict:
    """{(name, connections): median over rounds}, each model warmed by a 1 s run first."""
    results = {}
    for name, url in urls.items():
        wrk(url, 1, 16, workdir, body)
        for connections in (1, 16):
            runs = [wrk(url, args.duration, connections, workdir, body) for _ in range(args.rounds)]
            results[(name, connections)] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            results[(name, connections)]["errors"] = sum(r["errors"] for r in runs)
    return results


def check_labels(post, rows: np.ndarray, expected: dict[str, list[int]], who: str) -> None:
    """Both servers must answer, row by row, what the trained model predicts here."""
    for name in MODELS:
        got = [post(name, row.tolist()) for row in rows]
        if got != expected[name]:
            bad = next(i for i, (g, e) in enumerate(zip(got, expected[name])) if g != e)
            sys.exit(f"{who} disagrees on {name}: row {bad} answered {got[bad]}, the model predicts "
                     f"{expected[name][bad]} ({sum(g != e for g, e in zip(got, expected[name]))} of {len(rows)} "
                     "rows differ); not timing servers that do not compute the same thing")


def session_post(session: requests.Session, url: str, body: str) -> dict:
    answer = session.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=10)
    if answer.status_code != 200:
        sys.exit(f"{url} answered {answer.status_code}: {answer.text[:500]}")
    return answer.json()


# -- the two modes ---------------------------------------------------------------------------

def side_by_side(args, tmp: Path) -> dict:
    mlserver = mlserver_venv(args.venv)
    models, x = train()
    files = save(models, tmp / "files")
    rows = x[np.linspace(0, len(x) - 1, CHECK_ROWS).astype(int)]
    expected = {name: [int(v) for v in models[name].predict(rows)] for name in MODELS}
    row = x[:1]
    body_row = row[0].tolist()
    floor = floor_us(files, row)
    report: dict = {"floor_us": floor, "workers": args.workers, "rounds": args.rounds, "duration_s": args.duration}

    ids = write_catalog(tmp / "ours" / "catalog", files)
    server = GunicornProcess(tmp / "ours", tmp / "ours.log", MIS_DEMO_MODELS="false", MIS_AUTH="off",
                             MIS_PRELOAD="all", MIS_LOG_LEVEL="warning", MIS_WORKERS=str(args.workers))
    try:
        server.start()
        with requests.Session() as session:
            check_labels(lambda n, r: ours_labels(session_post(session, ours_url(server, f"bc-{n}"), ours_body(r)))[0],
                         rows, expected, "our server")
        ours = measure({name: ours_url(server, mid) for mid, name in ids.items()}, ours_body(body_row), args, tmp)
        ceiling = statistics.median(wrk(f"{server.url}/api/v1/healthcheck/", args.duration, 16, tmp)["rps"]
                                    for _ in range(args.rounds))
        report["ours_memory"] = tree_memory_mib(server.process.pid)
    finally:
        server.stop()

    theirs, report["mlserver_memory"] = {}, {}
    for workers in args.mlserver_parallel_workers:
        workdir = tmp / f"mlserver-{workers}"
        workdir.mkdir()
        peer = MLServerProcess(mlserver, files, workdir, workers)
        try:
            started = time.monotonic()
            peer.start()
            print(f"MLServer parallel_workers={workers} ready in {time.monotonic() - started:.1f} s", flush=True)
            with requests.Session() as session:
                check_labels(lambda n, r: mls_labels(session_post(session, mls_url(peer.url, n), mls_body(r)))[0],
                             rows, expected, f"MLServer (parallel_workers={workers})")
            for key, value in measure({n: mls_url(peer.url, n) for n in MODELS}, mls_body(body_row), args,
                                      workdir).items():
                if key not in theirs or value["rps"] > theirs[key]["rps"]:  # its better setting, per row
                    theirs[key] = {**value, "parallel_workers": workers}
            report["mlserver_memory"][workers] = tree_memory_mib(peer.process.pid)
        except BaseException:
            print(f"MLServer log tail:\n{peer.log_path.read_text()[-3000:] if peer.log_path.exists() else ''}")
            raise
        finally:
            peer.stop()

    report["ceiling_rps"] = ceiling
    report["rows"] = [{"model": n, "connections": c, "ours": ours[(n, c)], "mlserver": theirs[(n, c)],
                       "ratio": ours[(n, c)]["rps"] / theirs[(n, c)]["rps"] if theirs[(n, c)]["rps"] else None}
                      for n in MODELS for c in (1, 16)]
    print_side_by_side(report)
    return report


def print_side_by_side(report: dict) -> None:
    print(f"\nmedian of {report['rounds']} x {report['duration_s']} s wrk runs per row (one thread); our server: "
          f"{report['workers']} workers; MLServer: the better parallel_workers setting per row (pw)\n")
    print("| model | conn | ours req/s | MLServer req/s (pw) | ratio | ours p50 / p99 ms | MLServer p50 / p99 ms "
          "| errors ours / MLServer | floor us: library / ours |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in report["rows"]:
        o, m, floor = r["ours"], r["mlserver"], report["floor_us"][r["model"]]
        print(f"| {r['model']} | {r['connections']} | {o['rps']:.0f} | {m['rps']:.0f} ({m['parallel_workers']}) "
              f"| {r['ratio']:.1f}x | {o['p50_ms']:.2f} / {o['p99_ms']:.2f} | {m['p50_ms']:.2f} / {m['p99_ms']:.2f} "
              f"| {o['errors']:.0f} / {m['errors']:.0f} | {floor['library']:.0f} / {floor['ours']:.0f} |")
    mem = report["ours_memory"]
    print(f"\nour server:  RSS {mem['rss_mib']:.0f} MiB, PSS {mem['pss_mib']:.0f} MiB ({mem['processes']} processes)")
    for workers, mem in report["mlserver_memory"].items():
        print(f"MLServer pw={workers}: RSS {mem['rss_mib']:.0f} MiB, PSS {mem['pss_mib']:.0f} MiB "
              f"({mem['processes']} processes)")
    print(f"ceiling (our empty endpoint, 16 connections): {report['ceiling_rps']:.0f} req/s")

    by = {(r["model"], r["connections"]): r for r in report["rows"]}
    checks = [(f"{n} c16 ratio >= {t}x", by[(n, 16)]["ratio"] >= t, f"{by[(n, 16)]['ratio']:.1f}x")
              for n, t in C16_RATIO_TARGET.items()]
    for n in MODELS:
        o, m = by[(n, 1)]["ours"], by[(n, 1)]["mlserver"]
        checks.append((f"{n} c1 p50 <= 1/3 MLServer's", o["p50_ms"] * 3 <= m["p50_ms"],
                       f"{o['p50_ms']:.2f} vs {m['p50_ms']:.2f} ms"))
        checks.append((f"{n} c1 p99 <= 1/2 MLServer's", o["p99_ms"] * 2 <= m["p99_ms"],
                       f"{o['p99_ms']:.2f} vs {m['p99_ms']:.2f} ms"))
    lgbm = by[("lgbm", 16)]["ours"]["rps"]
    checks.append(("lgbm c16 >= 60% of the empty endpoint", lgbm >= 0.6 * report["ceiling_rps"],
                   f"{100 * lgbm / report['ceiling_rps']:.0f}%"))
    errors = sum(r["ours"]["errors"] + r["mlserver"]["errors"] for r in report["rows"])
    checks.append(("no errors", errors == 0, f"{errors:.0f}"))
    print("\ntargets:")
    for what, ok, value in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {what:40} {value}")
    report["targets"] = [{"target": w, "met": ok, "value": v} for w, ok, v in checks]


def memory(args, tmp: Path) -> dict:
    """20 models (5 copies of each) in MIS_WORKERS=4 against MIS_WORKERS=1: PSS of the whole tree."""
    models, x = train()
    files = save(models, tmp / "files")
    report = {}
    for workers in (4, 1):
        data = tmp / f"ours-{workers}"
        ids = write_catalog(data / "catalog", files, copies=5)
        server = GunicornProcess(data, tmp / f"ours-{workers}.log", MIS_DEMO_MODELS="false", MIS_AUTH="off",
                                 MIS_PRELOAD="all", MIS_LOG_LEVEL="warning", MIS_WORKERS=str(workers))
        try:
            server.start()
            seen: dict[int, int] = {}

            def every_worker_loaded() -> bool:
                # A fresh connection per call, so the kernel spreads them over the workers.
                info = requests.get(f"{server.url}/api/v1/serverinfo/", headers={"Connection": "close"},
                                    timeout=5).json()
                seen[info["worker_pid"]] = len(info["models"])
                return len(seen) >= workers and all(n >= len(ids) for n in seen.values())

            wait_until(every_worker_loaded, timeout=120, interval=0.02)
            for model_id in ids:  # each model scores; fresh connections reach every worker in turn
                for _ in range(2 * workers):
                    answer = requests.post(ours_url(server, model_id), data=ours_body(x[0].tolist()),
                                           headers={"Connection": "close"}, timeout=10)
                    answer.raise_for_status()
            report[workers] = tree_memory_mib(server.process.pid)
        finally:
            server.stop()
    print("\n20 models (5 copies of each of the four), our server, after every worker loaded them:")
    for workers, mem in report.items():
        print(f"  MIS_WORKERS={workers}: PSS {mem['pss_mib']:.0f} MiB, RSS {mem['rss_mib']:.0f} MiB "
              f"({mem['processes']} processes)")
    print(f"  PSS 4 workers / 1 worker: {report[4]['pss_mib'] / report[1]['pss_mib']:.2f}x")
    return {"memory_20_models": report}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--workers", type=int, default=2, help="MIS_WORKERS of our server (the machines have 2 cores)")
    parser.add_argument("--mlserver-parallel-workers", default="0,2",
                        type=lambda s: [int(v) for v in s.split(",")], help="settings tried; the better one is kept")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="MLServer's virtual environment (reused)")
    parser.add_argument("--memory", action="store_true", help="only the 20 models x 4 workers vs 1 worker PSS")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if shutil.which("wrk") is None and not args.memory:
        sys.exit("wrk is needed (Debian package `wrk`)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mis-vs-mlserver-") as tmp:
        report = memory(args, Path(tmp)) if args.memory else side_by_side(args, Path(tmp))
    print(f"\ntook {time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
