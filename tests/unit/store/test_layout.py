"""Run ids and experiment names are checked before any path is built from them; a run id is leased while a run
writes it: a second run stops with a message, and a crashed run's lease lapses after its time to live. Real
files and real processes (one killed with SIGKILL)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from medrl import store
from medrl.store.layout import LayoutError, RunLayout, check_name, new_run_id


@pytest.mark.parametrize("bad", ["../../etc", "a/b", "..", "", ".hidden", "run id", "a\\b", "x" * 200, "ü", "a..b"])
def test_bad_run_ids_and_experiments_are_refused(tmp_path, bad):
    with pytest.raises(LayoutError, match="run_id") as err:
        RunLayout.create(str(tmp_path), "exp", bad)
    assert "letters, digits" in str(err.value)
    with pytest.raises(LayoutError, match="experiment"):
        RunLayout.create(str(tmp_path), bad, "run-1")
    assert list(tmp_path.iterdir()) == []


def test_good_names_pass():
    for name in ("20261121-120000-ab12", "paper_table1", "demo.v2", new_run_id()):
        assert check_name(name, "run_id") == name
    assert RunLayout.create("s3://b/medrl", "demo", "r1").uri == "s3://b/medrl/demo/r1"


HOLD = """
import sys, time
from medrl import store
try:
    lease = store.acquire_lease(sys.argv[1], ttl=float(sys.argv[2]))
except store.LeaseError as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)
print("held", flush=True)
time.sleep(float(sys.argv[3]))
lease.release()
"""


def hold(uri: str, ttl: float, seconds: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", HOLD, uri, str(ttl), str(seconds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )


def test_a_second_run_stops_and_a_killed_runs_lease_lapses(tmp_path):
    uri = store.normalize(str(tmp_path / "demo" / "run-1"))
    first = hold(uri, 2.0, 60)
    assert first.stdout.readline().strip() == "held"
    second = hold(uri, 2.0, 0)
    _, err = second.communicate(timeout=30)
    assert second.returncode == 2 and "in use by another run" in err and uri in err and "--run-id" in err, err

    time.sleep(2.5)  # longer than the time to live: only renewals keep the first one's lease
    third = hold(uri, 2.0, 0)
    _, err = third.communicate(timeout=30)
    assert third.returncode == 2, "a live run renews its lease"

    first.send_signal(signal.SIGKILL)
    first.wait(10)
    fourth = hold(uri, 60.0, 0)  # a time to live far beyond this test: nothing lapses meanwhile
    out, err = fourth.communicate(timeout=30)
    assert fourth.returncode == 0 and out.strip() == "held", "a dead holder on this host is taken over at once"
    assert "taking it over" in err
    assert not store.exists(store.join(uri, ".lease")), "a run that ends releases its lease"


def test_a_lease_of_another_host_blocks_until_it_lapses(tmp_path):
    """A holder elsewhere cannot be checked for life: its lease is waited out (at most its time to live)."""
    uri = store.normalize(str(tmp_path / "demo" / "run-1"))
    lease = {"token": "t", "host": "node-elsewhere", "pid": 1, "pid_ns": store.pid_namespace(), "expires": 0}
    store.write_bytes(store.join(uri, ".lease"), json.dumps({**lease, "expires": time.time() + 2.0}).encode())
    second = hold(uri, 2.0, 0)
    _, err = second.communicate(timeout=30)
    assert second.returncode == 2 and "node-elsewhere" in err, err
    time.sleep(2.5)
    third = hold(uri, 2.0, 0)
    assert third.communicate(timeout=30)[0].strip() == "held" and third.returncode == 0, "... by at most its ttl"


def test_a_released_lease_is_free_at_once(tmp_path):
    uri = store.normalize(str(tmp_path / "run"))
    with RunLayout(uri).lease(ttl=30), pytest.raises(store.LeaseError), store.acquire_lease(uri, ttl=30):
        pass
    store.acquire_lease(uri, ttl=30).release()


def test_medrl_run_with_a_run_id_in_use_stops_before_running(tmp_path, monkeypatch):
    """`medrl run --run-id X` while another run holds X: LeaseError (exit 2), and the pipeline never starts."""
    from medrl import study
    from medrl.pipelines import local

    started = []
    monkeypatch.setattr(local, "run_local", lambda params, root, *rest: started.append(params))
    monkeypatch.setattr(study, "collect", lambda run_uri: [])
    run = RunLayout.create(store.normalize(str(tmp_path)), "demo", "busy")
    with run.lease(ttl=30), pytest.raises(store.LeaseError):
        local.run_study(preset="demo", store_uri=str(tmp_path), run_id="busy", pipeline_root=tmp_path / "kfp")
    assert started == []
    local.run_study(preset="demo", store_uri=str(tmp_path), run_id="busy", pipeline_root=tmp_path / "kfp")
    assert len(started) == 1 and not store.exists(store.join(run.uri, ".lease"))
