"""`mis`, the console script the project installs, against a real server on 127.0.0.1.

Every command runs as a user runs it (the installed `mis` in this environment, as a process), so
the exit codes and the output are what scripts get.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.tree import DecisionTreeClassifier

from server.auth import parse_keys
from server.backends.local_catalog import LocalCatalog

from ..processes import REPO, GunicornProcess, free_port, stop_group, wait_until

MIS = str(Path(sys.executable).with_name("mis"))
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


def mis(*args: str, url: str | None = None, key: str | None = None, stdin: str | None = None):
    env = {k: v for k, v in os.environ.items() if k not in ("MIS_URL", "MIS_KEY")}
    env.update({"MIS_URL": url} if url else {}, **({"MIS_KEY": key} if key else {}))
    return subprocess.run([MIS, *args], capture_output=True, text=True, env=env, input=stdin, timeout=120)


def answer(result) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> tuple[Path, DecisionTreeClassifier]:
    X, y = load_iris(return_X_y=True)
    model = DecisionTreeClassifier(random_state=0).fit(X, y)
    path = tmp_path_factory.mktemp("model") / "iris-tree.joblib"
    joblib.dump(model, path)
    return path, model


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, str]:
    path = tmp_path_factory.mktemp("keys") / "keys.json"
    result = mis("keys", "new", "-o", str(path))
    assert result.returncode == 0, result.stderr
    assert path.stat().st_mode & 0o777 == 0o600
    parse_keys(path.read_text())  # the server's own reader takes it
    document = json.loads(path.read_text())
    return {"file": str(path), **{k["name"]: k["key"] for k in document["keys"]}}


@pytest.fixture(scope="module")
def gated(tmp_path_factory, demo_catalog, keys):
    """A qa server with keys from `mis keys new`; metadata re-read at once, so promotions show fast."""
    data_dir = tmp_path_factory.mktemp("gated")
    import shutil

    shutil.copytree(demo_catalog, data_dir / "catalog")
    server = GunicornProcess(data_dir, data_dir / "server.log", MIS_ENV="qa", MIS_WORKERS="2",
                             MIS_API_KEYS_FILE=keys["file"], MIS_METADATA_TTL_S="0.2").start()
    yield server
    server.stop()


@pytest.mark.parametrize("writer", ["--ads", "--no-ads"])
def test_package_upload_score_promote_remove(gated, keys, tree, tmp_path, writer):
    model_path, model = tree
    artifact = tmp_path / "iris-tree.zip"
    built = answer(mis("package", str(model_path), "-o", str(artifact), writer, "--json"))
    assert built["writer"] == ("oracle-ads" if writer == "--ads" else "plain") and built["n_features"] == 4
    assert {"score.py", "runtime.yaml", "model.joblib", "input_schema.json"} <= set(zipfile.ZipFile(artifact).namelist())

    admin = {"url": gated.url, "key": keys["admin"]}
    uploaded = answer(mis("models", "upload", str(artifact), "--name", "iris-tree", "--version", "7", "--json", **admin))
    model_id = uploaded["model_id"]
    assert uploaded["version"] == "7" and uploaded["env"] is None
    listed = answer(mis("models", "list", "--json", url=gated.url, key=keys["scoring"]))
    assert model_id in {m["id"] for m in listed["models"]}

    # gated (qa) and not promoted: 403, shown plainly, with how to fix it
    refused = mis("models", "score", model_id, "-d", json.dumps(ROWS), url=gated.url, key=keys["scoring"])
    assert refused.returncode == 1 and refused.stdout == ""
    assert "env_mismatch, HTTP 403" in refused.stderr and f"mis promote {model_id} --env qa" in refused.stderr

    promoted = mis("promote", model_id, "--env", "qa", **admin)
    assert promoted.returncode == 0 and "promoted" in promoted.stdout
    # The worker that refused it may trust what it read for MIS_METADATA_TTL_S (0.2 s here), as README says.
    score_by_name = ("models", "score", "--name", "iris-tree", "--version", "7", "-d", "-", "--json")
    wait_until(lambda: mis(*score_by_name, url=gated.url, key=keys["scoring"], stdin=json.dumps(ROWS)).returncode == 0,
               timeout=10, interval=0.1)
    scored = answer(mis(*score_by_name, url=gated.url, key=keys["scoring"], stdin=json.dumps(ROWS)))
    assert scored["model_id"] == model_id and scored["prediction"] == model.predict(np.array(ROWS)).tolist()
    plain = mis("models", "score", model_id, "-d", json.dumps(ROWS[0]), url=gated.url, key=keys["scoring"])
    assert plain.returncode == 0 and json.loads(plain.stdout) == model.predict(np.array(ROWS[:1])).tolist()
    narrow = mis("models", "score", model_id, "-d", "[[1, 2]]", url=gated.url, key=keys["scoring"])
    assert narrow.returncode == 1 and "expected 4 features per row, received 2" in narrow.stderr

    removed = mis("models", "remove", model_id, **admin)
    assert removed.returncode == 0 and model_id in removed.stdout
    assert model_id not in {m["id"] for m in answer(mis("models", "list", "--json", **admin))["models"]}
    gone = mis("models", "info", model_id, "--json", **admin)
    assert gone.returncode == 1 and json.loads(gone.stdout)["code"] == "model_not_found"


def test_promote_in_a_local_catalog_reaches_a_running_server(gated, keys):
    scoring = {"url": gated.url, "key": keys["scoring"]}
    assert mis("models", "score", "demo-sklearn-iris", "-d", json.dumps(ROWS), **scoring).returncode == 1  # env dev
    promoted = mis("promote", "demo-sklearn-iris", "--env", "qa", "--catalog", str(gated.data_dir / "catalog"), "--json")
    assert answer(promoted) == {"model_id": "demo-sklearn-iris", "env": "qa", "status": "promoted"}
    assert LocalCatalog(gated.data_dir / "catalog").get("demo-sklearn-iris").env == "qa"
    wait_until(lambda: mis("models", "score", "demo-sklearn-iris", "-d", json.dumps(ROWS), **scoring).returncode == 0,
               timeout=30, interval=0.3)
    withdrawn = mis("promote", "demo-sklearn-iris", "--withdraw", url=gated.url, key=keys["admin"])
    assert withdrawn.returncode == 0 and "withdrew" in withdrawn.stdout
    assert LocalCatalog(gated.data_dir / "catalog").get("demo-sklearn-iris").env is None


def test_keys_and_exit_codes(gated, keys, tmp_path):
    no_key = mis("models", "list", url=gated.url)
    assert no_key.returncode == 1 and "unauthorized, HTTP 401" in no_key.stderr
    scoring_only = mis("models", "remove", "demo-sklearn-iris", url=gated.url, key=keys["scoring"])
    assert scoring_only.returncode == 1 and "HTTP 403" in scoring_only.stderr
    assert mis("models", "list", url=f"http://127.0.0.1:{free_port()}").returncode == 3
    assert mis("models", "upload", str(tmp_path / "missing.zip"), "--name", "x", url=gated.url).returncode == 4
    assert mis("package", str(tmp_path / "missing.joblib")).returncode == 4
    assert mis("models", "score", "-d", "[[1]]").returncode == 2  # no model named
    assert mis("promote", "demo-sklearn-iris").returncode == 2  # neither --env nor --withdraw
    assert mis("models", "frobnicate").returncode == 2
    for command in (["models", "list"], ["models", "upload"], ["package"], ["promote"], ["keys", "new"], ["serve"]):
        helped = mis(*command, "--help")
        assert helped.returncode == 0 and "usage: mis" in helped.stdout


def test_keys_new_force_writes_a_fresh_private_file_and_never_follows_a_link(tmp_path):
    target = tmp_path / "keys.json"
    target.write_text("old")
    target.chmod(0o644)
    assert mis("keys", "new", "-o", str(target)).returncode == 4 and target.read_text() == "old"  # no --force
    old_inode = target.stat().st_ino
    assert mis("keys", "new", "-o", str(target), "--force").returncode == 0
    assert target.stat().st_mode & 0o777 == 0o600 and target.stat().st_ino != old_inode
    parse_keys(target.read_text())
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text("not keys")
    for link, points_to in ((tmp_path / "link.json", elsewhere), (tmp_path / "dangling.json", tmp_path / "nothing.json")):
        link.symlink_to(points_to)
        for force in ([], ["--force"]):
            refused = mis("keys", "new", "-o", str(link), *force)
            assert refused.returncode == 4 and "is a symbolic link" in refused.stderr
            assert link.is_symlink() and link.readlink() == points_to
    assert elsewhere.read_text() == "not keys" and not (tmp_path / "nothing.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling.json", "elsewhere.json", "keys.json", "link.json"]


def test_serve_says_when_it_is_ready(tmp_path, demo_catalog):
    import shutil

    shutil.copytree(demo_catalog, tmp_path / "catalog")
    port = free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "MIS_DATA_DIR": str(tmp_path), "MIS_WORKERS": "1"}
    with open(log, "wb") as out:
        process = subprocess.Popen([MIS, "serve", "--bind", f"127.0.0.1:{port}", "--no-auth"], cwd=REPO, env=env,
                                   stdout=subprocess.DEVNULL, stderr=out, start_new_session=True)
    try:
        line = wait_until(lambda: next((l for l in log.read_text().splitlines() if l.startswith("ready:")), None),
                          timeout=120, interval=0.2)
        assert line.startswith(f"ready: API http://127.0.0.1:{port}/api/v1/  docs http://127.0.0.1:{port}/docs")
        listed = answer(mis("models", "list", "--json", url=f"http://127.0.0.1:{port}"))
        assert all(m["loaded"] for m in listed["models"]) and listed["count"] == 3
        process.send_signal(signal.SIGTERM)  # to `mis`, which hands it to gunicorn
        assert process.wait(timeout=60) == 0
    finally:
        stop_group(process)


def test_serve_on_a_taken_address_exits_and_never_says_ready_for_the_other_server(tmp_path, demo_catalog):
    """Another server answers readiness on the address: `mis serve` must not take it for its own."""
    import shutil

    shutil.copytree(demo_catalog, tmp_path / "catalog")
    other = GunicornProcess(tmp_path / "other", tmp_path / "other.log", MIS_PRELOAD="", MIS_DEMO_MODELS="false").start()
    try:
        env = {**os.environ, "MIS_DATA_DIR": str(tmp_path), "MIS_WORKERS": "1"}
        served = subprocess.Popen([MIS, "serve", "--bind", other.url.removeprefix("http://"), "--no-auth"], cwd=REPO,
                                  env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            _, stderr = served.communicate(timeout=60)
        finally:
            stop_group(served)
        assert served.returncode != 0
        assert "another process already listens on MIS_BIND" in stderr
        assert "ready:" not in stderr and "Traceback" not in stderr
    finally:
        other.stop()
