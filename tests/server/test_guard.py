"""The predict guard in-process: deadlines, stuck threads, in-flight records, captured output."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading

import pytest

from server import guard as guard_module
from server.errors import PredictTimeout
from server.guard import (
    Inflight,
    PredictGuard,
    captured_output,
    inflight_path,
    make_run_dir,
    models_in_flight,
    remove_run_dir,
    run_dir,
    watched,
)


@pytest.fixture
def release():
    """An event the hung calls wait on; set at teardown so no thread outlives the test for long."""
    event = threading.Event()
    yield event
    event.set()


def test_a_call_within_the_deadline_returns_its_value_or_raises_its_error():
    guard = PredictGuard(timeout_s=5, threads=2, output_bytes=100, recycle_after_s=60)
    assert guard.run("m", lambda x: x * 2, 21) == 42
    with pytest.raises(ZeroDivisionError):
        guard.run("m", lambda: 1 / 0)
    assert guard.stuck == 0


def test_a_call_past_the_deadline_raises_predict_timeout_and_recycles_once_half_are_stuck(release):
    recycled = []
    guard = PredictGuard(timeout_s=0.2, threads=4, output_bytes=100, recycle_after_s=60,
                         on_stuck=lambda: recycled.append(True))
    with pytest.raises(PredictTimeout) as caught:
        guard.run("slow-model", release.wait)
    assert caught.value.status == 504 and caught.value.details == {"model_id": "slow-model", "timeout_s": 0.2}
    assert guard.stuck == 1 and recycled == []
    with pytest.raises(PredictTimeout):
        guard.run("slow-model", release.wait)
    assert guard.stuck == 2 and recycled == [True]  # half of 4 threads stuck: ask for a recycle
    assert guard.run("other", lambda: "fine") == "fine"  # the free threads still serve
    release.set()
    for _ in range(100):
        if guard.stuck == 0:
            break
        threading.Event().wait(0.05)
    assert guard.stuck == 0


def test_in_flight_records_name_the_running_model_and_are_blank_after(tmp_path, release):
    path = tmp_path / "123.inflight"
    guard = PredictGuard(timeout_s=0.2, threads=2, output_bytes=100, recycle_after_s=60, inflight_file=path)
    guard.run("done-model", lambda: None)
    with pytest.raises(PredictTimeout):
        guard.run("hung-model", release.wait)
    assert models_in_flight(path) == ["hung-model"]  # what the master reads after a worker died
    assert not path.exists()


def test_an_orderly_exit_leaves_nothing_to_blame(tmp_path, release):
    path = tmp_path / "123.inflight"
    guard = PredictGuard(timeout_s=0.2, threads=2, output_bytes=100, recycle_after_s=60, inflight_file=path)
    with pytest.raises(PredictTimeout):
        guard.run("hung-model", release.wait)
    guard.close()
    assert models_in_flight(path) == []


def test_the_run_directory_is_fresh_private_and_never_written_through_a_symlink(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(guard_module, "_run_dir", None)
    assert inflight_path(7) is None and run_dir() is None  # outside gunicorn: no records
    leftover = tmp_path / f"mis-{os.getpid()}"  # a killed server's, or a trap: pids repeat
    leftover.mkdir(mode=0o777)
    made = make_run_dir()
    assert run_dir() == made
    assert made.parent == tmp_path and made != leftover and made.stat().st_mode & 0o777 == 0o700
    assert inflight_path(7) == made / "7.inflight"
    victim = tmp_path / "victim"
    victim.write_text("precious")
    inflight_path(7).symlink_to(victim)
    with pytest.raises(OSError):
        Inflight(inflight_path(7), records=2)
    assert victim.read_text() == "precious"
    second = make_run_dir()  # a re-executed master gets its own
    assert second != made
    remove_run_dir()
    assert not second.exists() and leftover.is_dir()


def test_model_output_is_logged_capped_with_the_model_id(caplog):
    guard = PredictGuard(timeout_s=5, threads=2, output_bytes=10, recycle_after_s=60)

    def noisy():
        print("a" * 1000)
        sys.stderr.write("to stderr")
        return 1

    with caplog.at_level(logging.INFO, logger="server.guard"):
        assert guard.run("noisy-model", noisy) == 1
        with captured_output("loader", 50, "load"):
            print("loading")
    assert [r.getMessage() for r in caplog.records] == [
        "model noisy-model wrote during predict: 'aaaaaaaaaa' (1000 more characters dropped)",
        "model loader wrote during load: 'loading\\n'",
    ]


def test_other_threads_still_print_to_the_real_stream(capsys):
    PredictGuard(timeout_s=5, threads=1, output_bytes=10, recycle_after_s=60)
    print("the server's own output")
    assert "the server's own output" in capsys.readouterr().out


def test_one_predict_stuck_past_recycle_after_s_recycles_the_worker(release):
    recycled = threading.Event()
    guard = PredictGuard(timeout_s=0.1, threads=8, output_bytes=10, recycle_after_s=0.3, on_stuck=recycled.set)
    with pytest.raises(PredictTimeout):
        guard.run("spinning-model", release.wait)
    assert not recycled.is_set()  # one of 8 threads stuck: not yet
    assert recycled.wait(5)


def test_a_predict_that_finishes_late_does_not_recycle(release):
    recycled = threading.Event()
    guard = PredictGuard(timeout_s=0.1, threads=8, output_bytes=10, recycle_after_s=0.5, on_stuck=recycled.set)
    with pytest.raises(PredictTimeout):
        guard.run("slow-model", lambda: release.wait(0.3))
    assert not recycled.wait(1)


class ClockInHand:
    """A Watchdog whose clock the test runs out by hand (the worker's event loop does it for real)."""

    def __init__(self):
        self.armed = None

    def arm(self, seconds, on_expiry):
        self.armed = on_expiry

    def disarm(self):
        armed, self.armed = self.armed, None
        return armed is not None

    def run_out(self):
        on_expiry, self.armed = self.armed, None
        return on_expiry()


def test_under_a_watchdog_predict_runs_on_the_callers_thread_and_a_missed_deadline_strikes_once(release):
    guard = PredictGuard(timeout_s=0.2, threads=4, output_bytes=100, recycle_after_s=60)
    clock, struck, threads = ClockInHand(), [], []

    def predict():
        threads.append(threading.current_thread())
        release.wait()
        return "late"

    with watched(clock):
        assert guard.run("fast", lambda: threading.current_thread()) is threading.current_thread()
        assert clock.armed is None  # disarmed when predict returned

    result = []
    caller = threading.Thread(target=lambda: watched_run(guard, clock, predict, struck, result))
    caller.start()
    wait_for(lambda: clock.armed is not None)
    error = clock.run_out()  # what the worker answers the client with
    assert isinstance(error, PredictTimeout) and error.details["model_id"] == "slow" and guard.stuck == 1
    wait_for(lambda: struck == ["slow"])  # the strike runs off the caller's thread, once
    release.set()
    caller.join(5)
    assert result == ["late"] and threads == [caller] and guard.stuck == 0 and struck == ["slow"]


def watched_run(guard, clock, predict, struck, result):
    with watched(clock):
        result.append(guard.run("slow", predict, on_timeout=lambda: struck.append("slow")))


def wait_for(condition, timeout=5.0):
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        threading.Event().wait(0.01)
    raise AssertionError("condition not met")


def test_a_model_raising_timeout_error_itself_is_no_timeout():
    guard = PredictGuard(timeout_s=5, threads=2, output_bytes=100, recycle_after_s=60)

    def predict():
        raise TimeoutError("the model's own")

    with pytest.raises(TimeoutError, match="the model's own"):
        guard.run("m", predict, on_timeout=lambda: pytest.fail("struck"))
    assert guard.stuck == 0


def test_output_of_exactly_the_limit_is_logged_whole_and_one_character_more_is_cut(caplog):
    guard = PredictGuard(timeout_s=5, threads=2, output_bytes=10, recycle_after_s=60)
    with caplog.at_level(logging.INFO, logger="server.guard"):
        guard.run("exact-model", lambda: sys.stdout.write("b" * 10))
        guard.run("over-model", lambda: sys.stdout.write("c" * 11))
    assert [r.getMessage() for r in caplog.records] == [
        "model exact-model wrote during predict: 'bbbbbbbbbb'",
        "model over-model wrote during predict: 'cccccccccc' (1 more characters dropped)",
    ]


def test_a_model_that_prints_nothing_logs_nothing(caplog):
    guard = PredictGuard(timeout_s=5, threads=2, output_bytes=10, recycle_after_s=60)
    with caplog.at_level(logging.INFO, logger="server.guard"):
        assert guard.run("quiet-model", lambda: 3) == 3
    assert caplog.records == []
