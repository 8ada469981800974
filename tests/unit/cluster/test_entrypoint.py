"""The PyTorchJob entrypoint turns the operator's environment into the command that starts every rank; the
commands are parsed by accelerate's and torchrun's own argument parsers, so a flag they do not know fails here."""

from __future__ import annotations

from pathlib import Path

import pytest
from accelerate.commands.launch import launch_command_parser
from torch.distributed.run import get_args_parser

from medrl.cluster.entrypoint import rank_command

RUN, ARM = "s3://medrl/runs/paper/r1", "grpo"
DS = Path("/opt/medrl/zero2.json")
OPERATOR = {"PET_NNODES": "2", "PET_NPROC_PER_NODE": "4", "PET_NODE_RANK": "1", "MASTER_ADDR": "job-master-0",
            "MASTER_PORT": "23456", "WORLD_SIZE": "8", "RANK": "1"}  # fmt: skip


@pytest.mark.parametrize(
    "env",
    [{}, {"PET_NNODES": "1", "PET_NPROC_PER_NODE": "1"}, {**OPERATOR, "LOCAL_RANK": "3"}],
    ids=["no operator", "one process", "already a rank"],
)
def test_one_process_or_a_started_rank_trains_in_place(env):
    assert rank_command(env, RUN, ARM, DS) is None


def test_gpu_nodes_launch_deepspeed_zero2_through_accelerate():
    cmd = rank_command(OPERATOR, RUN, ARM, DS)
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"]
    args = launch_command_parser().parse_args(cmd[3:])
    assert args.use_deepspeed and args.deepspeed_config_file == str(DS)
    assert args.deepspeed_multinode_launcher == "standard"  # each node starts its own ranks, no ssh/pdsh
    assert (args.num_machines, args.num_processes, args.machine_rank) == (2, 8, 1)
    assert (args.main_process_ip, args.main_process_port) == ("job-master-0", 23456)
    assert args.module and args.training_script == "medrl"
    assert args.training_script_args == ["train-arm", "--run-uri", RUN, "--arm", ARM]


def test_cpu_ranks_launch_through_torchrun():
    cmd = rank_command({**OPERATOR, "PET_NPROC_PER_NODE": "2"}, RUN, ARM, None)
    assert cmd[1:3] == ["-m", "torch.distributed.run"]
    args = get_args_parser().parse_args(cmd[3:])
    assert (args.nnodes, args.nproc_per_node, args.node_rank) == ("2", "2", 1)
    assert (args.master_addr, args.master_port) == ("job-master-0", 23456)
    assert args.module and args.training_script == "medrl"
    assert args.training_script_args == ["train-arm", "--run-uri", RUN, "--arm", ARM]


def test_operator_master_address_variants_are_read():
    env = {"PET_NNODES": "1", "PET_NPROC_PER_NODE": "2", "PET_MASTER_ADDR": "m", "PET_MASTER_PORT": "1234"}
    args = get_args_parser().parse_args(rank_command(env, RUN, ARM, None)[3:])
    assert (args.master_addr, args.master_port) == ("m", 1234)


def test_a_bad_operator_variable_is_named():
    with pytest.raises(ValueError, match="PET_NPROC_PER_NODE='gpu'"):
        rank_command({"PET_NNODES": "1", "PET_NPROC_PER_NODE": "gpu"}, RUN, ARM, DS)


# ---------------------------------------------------------------- exit status for the ExitCode restart policy
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402

from medrl import store  # noqa: E402
from medrl.cluster import entrypoint  # noqa: E402
from medrl.config import ConfigError, dump_config, load_config  # noqa: E402
from medrl.store.layout import RunLayout  # noqa: E402
from medrl.study import arm as arm_steps  # noqa: E402


@pytest.fixture
def run_uri(tmp_path):
    """A run folder in a local store: its frozen config (the demo preset's arms) and committed prepared data.
    Training itself is replaced in each test (monkeypatched `study.train`): these tests are about exit statuses."""
    cfg = load_config(preset="demo", overrides=["model.base=/nowhere"])
    run = RunLayout.create(str(tmp_path / "store"), cfg.experiment, "r1")
    store.write_text(run.config, dump_config(cfg))
    with store.commit_dir(run.data) as out:
        (out / "train.jsonl").write_text("")
    return run.uri


def _train_raising(monkeypatch, failure):

    def train(run_uri, arm):
        if failure:
            raise failure

    monkeypatch.setattr(arm_steps, "train_in_run", train)


@pytest.mark.parametrize(
    ("failure", "status"),
    [(None, 0), (ConfigError("arms.x.lr: bad"), entrypoint.FINAL), (RuntimeError("CUDA error"), 134)],
    ids=["trained", "config error: final", "crash: retried"],
)
def test_in_place_training_maps_its_failure_to_the_restart_policy(monkeypatch, run_uri, failure, status):
    _train_raising(monkeypatch, failure)
    assert entrypoint.run_node(run_uri, "sft-grpo", env={}) == status
    assert entrypoint.RANK_CRASHED == 134 and entrypoint.FINAL == 1  # >= 128 is what ExitCode retries


def _final_errors():
    from medrl.data.prep import PrepError
    from medrl.models.load import ModelError
    from medrl.train.common import NonFiniteError
    from medrl.train.rollout import EngineStartError

    return [
        ConfigError("arms.grpo.learning_rate: bad"),
        PrepError("data.source: bad"),
        NonFiniteError("arm grpo: loss is nan at step 3"),
        ModuleNotFoundError("No module named 'flash_attn'"),
        EngineStartError("arms.grpo: the colocated vLLM engine did not start"),
        ModelError("model /m: no weights"),
    ]


@pytest.mark.parametrize("failure", _final_errors(), ids=lambda e: type(e).__name__)
def test_each_error_a_restart_cannot_fix_exits_1_at_once_without_a_restart_line(monkeypatch, run_uri, caplog, failure):
    _train_raising(monkeypatch, failure)
    with caplog.at_level(logging.INFO, logger="medrl"):
        assert entrypoint.run_node(run_uri, "sft-grpo", env={}) == entrypoint.FINAL
    assert "a restart cannot fix" in caplog.text and type(failure).__name__ in caplog.text
    assert "restarts it" not in caplog.text and "restarts from" not in caplog.text


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("no run", "no run there"),
        ("no data", "no committed prepared data"),
        ("unknown arm", "--arm 'nope'"),
    ],
)
def test_a_missing_run_data_or_arm_is_final_before_training(monkeypatch, run_uri, caplog, change, named):

    monkeypatch.setattr(arm_steps, "train_in_run", lambda *a: pytest.fail("training must not start"))
    uri, arm = run_uri, "sft-grpo"
    if change == "no run":
        uri = run_uri + "-missing"
    elif change == "no data":
        store.delete(RunLayout(run_uri).data)
    else:
        arm = "nope"
    with caplog.at_level(logging.INFO, logger="medrl"):
        assert entrypoint.run_node(uri, arm, env={}) == entrypoint.FINAL
    assert named in caplog.text and "restarts" not in caplog.text


def test_a_rank_with_a_final_error_leaves_a_note_for_the_supervisor(monkeypatch, tmp_path):
    _train_raising(monkeypatch, ConfigError("bad"))
    env = {"LOCAL_RANK": "1", "RANK": "3", entrypoint.FAILURE_DIR_ENV: str(tmp_path)}
    assert entrypoint.run_node(RUN, ARM, env=env) == entrypoint.FINAL
    assert json.loads((tmp_path / "rank-3.json").read_text()) == {"final": True, "cause": "ConfigError: bad"}


NOTE = "import json, os, pathlib, sys; pathlib.Path(os.environ['MEDRL_FAILURE_DIR'], 'rank-0.json').write_text("


@pytest.mark.parametrize(
    ("script", "status", "cause"),
    [
        ("import sys; sys.exit(1)", 134, "without an error of its own"),  # no note: a crash, retried
        ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", 137, "killed by signal 9"),
        (NOTE + "json.dumps({'final': True, 'cause': 'ConfigError: x'})); sys.exit(1)", 1, "ConfigError: x"),
        (NOTE + "json.dumps({'final': False, 'cause': 'OutOfMemoryError: y'})); sys.exit(1)", 134, "OutOfMemoryError"),
        ("pass", 0, ""),
    ],
    ids=["rank crashed", "launcher killed", "final error noted", "crash noted", "success"],
)
def test_the_supervisor_maps_how_the_launcher_ended(script, status, cause):
    got, why = entrypoint.supervise_ranks([sys.executable, "-c", script], {})
    assert got == status and cause in why


# ---------------------------------------------------------------- the restart budget
def _history(run_uri: str, node: int = 0) -> list[dict]:
    return json.loads(store.read_text(RunLayout(run_uri).arm("sft-grpo").uri + f"/attempts/node-{node}.json"))


def test_a_rank_that_fails_the_same_way_every_time_ends_after_the_budget_with_the_history(monkeypatch, run_uri, caplog):
    _train_raising(monkeypatch, RuntimeError("CUDA error: an illegal memory access was encountered"))
    env = {entrypoint.BUDGET_ENV: "3"}
    statuses = []
    with caplog.at_level(logging.INFO, logger="medrl"):
        for _ in range(3):  # each call is a recreated pod: only the store carries what the last one did
            statuses.append(entrypoint.run_node(run_uri, "sft-grpo", env=env))
    assert statuses == [134, 134, entrypoint.FINAL]
    assert "3 attempts in a row failed without a newer committed checkpoint" in caplog.text
    assert caplog.text.count("(exit 134): RuntimeError: CUDA error: an illegal memory access") == 3
    assert [(r["attempt"], r["status"]) for r in _history(run_uri)] == [(1, 134), (2, 134), (3, 134)]


def test_the_budget_default_is_stated_and_a_bad_setting_is_final(monkeypatch, run_uri):
    _train_raising(monkeypatch, RuntimeError("boom"))
    assert entrypoint.DEFAULT_BUDGET == 3
    assert [entrypoint.run_node(run_uri, "sft-grpo", env={}) for _ in range(3)] == [134, 134, 1]
    assert entrypoint.run_node(run_uri, "sft-grpo", env={entrypoint.BUDGET_ENV: "zero"}) == entrypoint.FINAL


def test_a_newer_committed_checkpoint_starts_a_new_count(monkeypatch, run_uri):
    """Crashes that each get further (a checkpoint committed in between) are retried past the budget."""

    arm = RunLayout(run_uri).arm("sft-grpo")
    step = iter(range(10, 100, 10))

    def train(run_uri, arm_name):
        with store.commit_dir(arm.checkpoint(next(step))) as out:
            (out / "model.safetensors").write_bytes(b"x")
        raise RuntimeError("NCCL timeout")

    monkeypatch.setattr(arm_steps, "train_in_run", train)
    env = {entrypoint.BUDGET_ENV: "2"}
    assert [entrypoint.run_node(run_uri, "sft-grpo", env=env) for _ in range(4)] == [134] * 4
    assert [r["checkpoint"] for r in _history(run_uri)] == [10, 20, 30, 40]


def test_an_attempt_killed_without_a_word_counts_and_a_preemption_does_not(monkeypatch, run_uri):
    uri = RunLayout(run_uri).arm("sft-grpo").uri + "/attempts/node-0.json"
    # Two earlier pods were OOM-killed: each left its start record and no end.
    store.write_text(uri, json.dumps([{"attempt": 1, "status": None, "checkpoint": -1}]))
    _train_raising(monkeypatch, SystemExit(143))  # a preemption's SIGTERM
    assert entrypoint.run_node(run_uri, "sft-grpo", env={entrypoint.BUDGET_ENV: "2"}) == 143
    _train_raising(monkeypatch, RuntimeError("boom"))
    assert entrypoint.run_node(run_uri, "sft-grpo", env={entrypoint.BUDGET_ENV: "2"}) == entrypoint.FINAL
    assert [r["status"] for r in _history(run_uri)] == [134, 143, 134]
    assert "killed" in _history(run_uri)[0]["cause"]


def test_a_rank_killed_once_resumes_and_finishes(monkeypatch, run_uri):

    calls = []

    def train(run_uri, arm):
        calls.append(arm)
        if len(calls) == 1:
            raise RuntimeError("rank 1 killed")

    monkeypatch.setattr(arm_steps, "train_in_run", train)
    assert [entrypoint.run_node(run_uri, "sft-grpo", env={}) for _ in range(2)] == [134, 0]
    assert [r["status"] for r in _history(run_uri)] == [134, 0]


def test_a_new_job_starts_a_new_count(monkeypatch, run_uri):
    """The launcher gives each job it creates a new MEDRL_LAUNCH_ID; the budget counts one job's attempts."""
    _train_raising(monkeypatch, RuntimeError("boom"))
    first = {entrypoint.BUDGET_ENV: "2", entrypoint.LAUNCH_ENV: "job-a"}
    assert [entrypoint.run_node(run_uri, "sft-grpo", env=first) for _ in range(2)] == [134, 1]
    second = {**first, entrypoint.LAUNCH_ENV: "job-b"}
    assert entrypoint.run_node(run_uri, "sft-grpo", env=second) == 134


def test_the_operators_retry_the_same_codes_the_entrypoint_means_as_retried():
    """PyTorchJob (ExitCode: >= 128 retried) and the TrainJob runtime's pod failure policy (final codes fail the
    JobSet) read train-arm's statuses the same way, and every pod gets the budget setting."""
    from medrl.cluster.launch import TrainSpec
    from medrl.cluster.trainjob import FINAL_EXIT_CODES, build_runtime

    runtime = build_runtime()["spec"]["template"]["spec"]
    rjob = runtime["replicatedJobs"][0]["template"]["spec"]
    (rule,) = rjob["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob" and entrypoint.FINAL in rule["onExitCodes"]["values"]
    assert all(code < 128 for code in FINAL_EXIT_CODES) and rjob["backoffLimit"] == 0
    assert runtime["failurePolicy"]["rules"][0] == {
        "name": "final-exit", "action": "FailJobSet", "onJobFailureReasons": ["PodFailurePolicy"]
    }  # fmt: skip
    assert runtime["failurePolicy"]["maxRestarts"] > TrainSpec(run_uri=RUN, arm=ARM).attempts_without_progress
    spec = TrainSpec(run_uri=RUN, arm=ARM, attempts_without_progress=5).launched()
    assert spec.restart_env() == {entrypoint.BUDGET_ENV: "5", entrypoint.LAUNCH_ENV: spec.launch_id}
    assert spec.launched().launch_id != spec.launch_id
