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
from medrl.cluster import entrypoint  # noqa: E402
from medrl.config import ConfigError  # noqa: E402


@pytest.mark.parametrize(
    ("failure", "status"),
    [(None, 0), (ConfigError("arms.x.lr: bad"), entrypoint.FINAL), (RuntimeError("CUDA error"), 134)],
    ids=["trained", "config error: final", "crash: retried"],
)
def test_in_place_training_maps_its_failure_to_the_restart_policy(monkeypatch, failure, status):
    from medrl import study

    def train(run_uri, arm):
        if failure:
            raise failure

    monkeypatch.setattr(study, "train", train)
    assert entrypoint.run_node(RUN, ARM, env={}) == status
    assert entrypoint.RANK_CRASHED == 134 and entrypoint.FINAL == 1  # >= 128 is what ExitCode retries


def test_a_rank_with_a_final_error_leaves_a_marker_for_the_supervisor(monkeypatch, tmp_path):
    from medrl import study

    monkeypatch.setattr(study, "train", lambda run_uri, arm: (_ for _ in ()).throw(ConfigError("bad")))
    env = {"LOCAL_RANK": "1", "RANK": "3", entrypoint.FAILURE_DIR_ENV: str(tmp_path)}
    assert entrypoint.run_node(RUN, ARM, env=env) == entrypoint.FINAL
    assert (tmp_path / "rank-3").read_text().strip() == "ConfigError"


@pytest.mark.parametrize(
    ("script", "status"),
    [
        ("import sys; sys.exit(1)", 134),  # a failed rank without a marker: a crash, retried
        ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", 137),  # the launcher itself killed
        ("import os, pathlib, sys; pathlib.Path(os.environ['MEDRL_FAILURE_DIR'], 'rank-0').touch(); sys.exit(1)", 1),
        ("pass", 0),
    ],
    ids=["rank crashed", "launcher killed", "final error marked", "success"],
)
def test_the_supervisor_maps_how_the_launcher_ended(script, status):
    import sys

    assert entrypoint.supervise([sys.executable, "-c", script], {}) == status
