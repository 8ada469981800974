"""A run keeps the configuration frozen at its start (issue 30): `medrl run --run-id X` (or the pipeline's init)
with another configuration is refused, naming each differing setting with the run's value and the new one; the
same configuration resumes."""

from pathlib import Path

import pytest

from medrl import store, study
from medrl.config import ConfigError, config_from_text, load_config
from medrl.pipelines import local
from medrl.store.layout import RunLayout


@pytest.fixture
def started(monkeypatch):
    """The kfp.local pipeline is replaced by a list of the runs it would have started (the refusal must come before
    it): what the pipeline does is tested in tests/integration/test_pipeline.py."""
    runs: list[dict] = []
    monkeypatch.setattr(local, "run_local", lambda params, root, *rest: runs.append(params))
    monkeypatch.setattr(study, "collect", lambda run_uri: [])
    return runs


def test_a_resume_with_another_configuration_is_refused_naming_each_change(tmp_path, started):
    # what the pipeline's init step does at the run's start: freeze the configuration (and build the tiny model)
    uri = study.init_run(preset="demo", store_uri=str(tmp_path), run_id="c1")
    frozen = store.read_text(RunLayout(uri).config)

    def run(*overrides: str) -> None:
        local.run_study(preset="demo", overrides=list(overrides), store_uri=str(tmp_path), run_id="c1",
                        pipeline_root=tmp_path / "kfp")  # fmt: skip

    run()  # the same configuration: a resume
    assert len(started) == 1

    with pytest.raises(ConfigError) as err:
        run("arms.grpo2={method: grpo, init: 'arm:sft'}", "arms.sft.learning_rate=1e-5")
    message = str(err.value)
    assert message.startswith(f"run c1 was started with another configuration ({uri}/config.yaml); changed: ")
    assert "arms.sft.learning_rate: 0.002 -> 1e-05" in message
    assert 'arms.grpo2: (absent) -> {"method": "grpo", "init": "arm:sft",' in message
    assert "give a new --run-id" in message
    assert len(started) == 1 and store.read_text(RunLayout(uri).config) == frozen  # nothing ran, nothing changed

    with pytest.raises(ConfigError, match=r"changed: data.seed: 0 -> 3\. A run keeps"):  # the pipeline's own path
        study.init_run(preset="demo", overrides=["data.seed=3"], store_uri=str(tmp_path), run_id="c1")


FROZEN_BEFORE_THE_JUDGE_SPLIT = Path(__file__).resolve().parents[2] / "data" / "frozen-b31397f"


OPENAI = ["judge.backend=openai", "judge.url=http://judge:8000/v1", "judge.model=BioMistral-7B", "judge.concurrency=4"]


@pytest.mark.parametrize(("name", "overrides"), [("demo.yaml", []), ("demo-openai.yaml", OPENAI)])
def test_a_run_frozen_before_the_judge_split_still_loads_and_resumes(tmp_path, name, overrides):
    """A run started by medrl at b31397f froze every judge backend's settings: its steps (resume, report) load it,
    keeping its backend's settings, and the same configuration given again resumes it."""
    text = (FROZEN_BEFORE_THE_JUDGE_SPLIT / name).read_text()
    run = RunLayout.create(str(tmp_path), "demo", "old")
    store.write_text(run.config, text)
    _, cfg = study.load_run(run.uri)
    assert cfg.judge.backend == ("openai" if overrides else "keyword")
    if overrides:
        assert (cfg.judge.url, cfg.judge.model, cfg.judge.concurrency) == ("http://judge:8000/v1", "BioMistral-7B", 4)
    study.check_same_config(
        run, load_config(preset="demo", overrides=[*overrides, "store=/runs"]).with_seeds()
    )  # resumes
    with pytest.raises(ConfigError, match=r"judge\.no_such_setting"):  # what no judge ever had is still refused
        config_from_text(text.replace("\njudge:\n", "\njudge:\n  no_such_setting: 1\n", 1))
    assert store.read_text(run.config) == text  # the frozen file itself is never rewritten
