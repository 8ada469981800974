"""A run keeps the configuration frozen at its start (issue 30): `medrl run --run-id X` (or the pipeline's init)
with another configuration is refused, naming each differing setting with the run's value and the new one; the
same configuration resumes."""

import pytest

from medrl import store, study
from medrl.config import ConfigError
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
