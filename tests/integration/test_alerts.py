"""The PrometheusRule's alerts, checked and unit-tested by Debian's `promtool` on synthetic series: each fires
when its condition holds and stays quiet for a healthy arm; every metric they read is one medrl exports."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml
from prometheus_client import generate_latest

from medrl import metrics
from tests.support.servers import binary

RULE_FILE = Path(__file__).resolve().parents[2] / "k8s" / "base" / "alerts" / "prometheusrule.yaml"


def rules() -> dict:
    doc = yaml.safe_load(RULE_FILE.read_text())
    assert doc["apiVersion"] == "monitoring.coreos.com/v1" and doc["kind"] == "PrometheusRule"
    return doc


def alert(name: str) -> dict:
    return next(r for g in rules()["spec"]["groups"] for r in g["rules"] if r.get("alert") == name)


def expected(name: str, **labels: str) -> dict:
    """The alert as promtool reports it: its labels plus the series', annotations with labels filled in."""
    rule = alert(name)

    def fill(text: str) -> str:
        return re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), text)

    return {
        "exp_labels": {**rule["labels"], **labels},
        "exp_annotations": {k: fill(v) for k, v in rule["annotations"].items()},
    }


def quiet_then_firing(name: str, quiet_at: str, firing_at: str, **labels: str) -> list[dict]:
    """promtool checks: no `name` alert at `quiet_at`; at `firing_at`, one, for the series with `labels` only."""
    return [
        {"eval_time": quiet_at, "alertname": name, "exp_alerts": []},
        {"eval_time": firing_at, "alertname": name, "exp_alerts": [expected(name, **labels)]},
    ]


def test_alerts_read_only_metrics_medrl_exports():
    rec = metrics.TrainingRecorder("names")
    rec.begin(10)
    rec.log({"rewards/accuracy_reward/mean": 1.0, "completions/mean_length": 3.0})
    exported = {line.split("{")[0].split(" ")[0] for line in generate_latest(metrics.REGISTRY).decode().splitlines()}
    names = {r["alert"] for g in rules()["spec"]["groups"] for r in g["rules"]}
    assert names == {"MedrlLengthHacking", "MedrlTrainingStalled", "MedrlJudgeUnscorable"}
    for group in rules()["spec"]["groups"]:
        for rule in group["rules"]:
            for used in re.findall(r"medrl_[a-z0-9_]+", rule["expr"]):
                assert used in exported or used.startswith("medrl_evaluate"), f"{rule['alert']} reads {used}"


def test_promtool_checks_and_unit_tests_the_alerts(tmp_path):
    promtool = binary("promtool", "apt-get install prometheus (.ci/run does)")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rules()["spec"]["groups"]}))
    check = subprocess.run([promtool, "check", "rules", str(tmp_path / "rules.yaml")], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

    length_hacking = {
        "interval": "1m",
        "input_series": [
            # "hack": completions +2 tokens/min, accuracy reward -0.003/min. "long-good": longer and better.
            # "fine": flat length, rising accuracy.
            *series("completion_length_mean_tokens", "hack", "100+2x90"),
            *series("reward_function", "hack", "0.8-0.003x90", reward="accuracy_reward"),
            *series("reward_function", "hack", "0.2+0.003x90", reward="format_reward"),
            *series("running", "hack", "1x90"),
            *series("completion_length_mean_tokens", "long-good", "100+2x90"),
            *series("reward_function", "long-good", "0.3+0.003x90", reward="accuracy_reward"),
            *series("running", "long-good", "1x90"),
            *series("completion_length_mean_tokens", "fine", "100+0x90"),
            *series("reward_function", "fine", "0.3+0.003x90", reward="accuracy_reward"),
            *series("running", "fine", "1x90"),
        ],
        # still pending at 10m (for: 15m)
        "alert_rule_test": quiet_then_firing("MedrlLengthHacking", "10m", "60m", arm="hack", pod="pod-hack"),
    }
    stalled = {
        "interval": "1m",
        "input_series": [
            # promtool's clock starts at 0: "stuck" last stepped at t=60 s; "healthy" steps every minute;
            # "done" is stuck too but has finished (running 0).
            *series("last_step_timestamp_seconds", "stuck", "60x30"),
            *series("running", "stuck", "1x30"),
            *series("last_step_timestamp_seconds", "healthy", "0+60x30"),
            *series("running", "healthy", "1x30"),
            *series("last_step_timestamp_seconds", "done", "60x30"),
            *series("running", "done", "0x30"),
        ],
        "alert_rule_test": quiet_then_firing("MedrlTrainingStalled", "9m", "15m", arm="stuck", pod="pod-stuck"),
    }
    judge = {
        "interval": "1m",
        "input_series": [
            # live: 20% unscorable in pod-a, 1% in pod-b; pushed evaluations: run r1 17%, run r2 2%.
            verdicts("scored", "0+80x30", job="medrl-train", pod="pod-a"),
            verdicts("unscorable", "0+20x30", job="medrl-train", pod="pod-a"),
            verdicts("scored", "0+99x30", job="medrl-train", pod="pod-b"),
            verdicts("unscorable", "0+1x30", job="medrl-train", pod="pod-b"),
            verdicts("scored", "50x30", job="medrl_evaluate", run_id="r1", arm="grpo"),
            verdicts("unscorable", "10x30", job="medrl_evaluate", run_id="r1", arm="grpo"),
            verdicts("scored", "98x30", job="medrl_evaluate", run_id="r2", arm="grpo"),
            verdicts("unscorable", "2x30", job="medrl_evaluate", run_id="r2", arm="grpo"),
        ],
        "alert_rule_test": [
            {
                "eval_time": "20m",
                "alertname": "MedrlJudgeUnscorable",
                "exp_alerts": [
                    expected("MedrlJudgeUnscorable", job="medrl-train", pod="pod-a"),
                    expected("MedrlJudgeUnscorable", job="medrl_evaluate", run_id="r1", arm="grpo"),
                ],
            }
        ],
    }
    tests = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": [length_hacking, stalled, judge]}
    (tmp_path / "alerts_test.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    run = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stdout + run.stderr


def series(name: str, arm: str, values: str, **labels: str) -> list[dict]:
    extra = "".join(f',{k}="{v}"' for k, v in labels.items())
    return [{"series": f'medrl_train_{name}{{arm="{arm}",pod="pod-{arm}"{extra}}}', "values": values}]


def verdicts(outcome: str, values: str, **labels: str) -> dict:
    text = ",".join(f'{k}="{v}"' for k, v in {**labels, "outcome": outcome}.items())
    return {"series": f"medrl_judge_verdicts_total{{{text}}}", "values": values}
