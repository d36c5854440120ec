from pathlib import Path

import pytest

from conftest import ROOT, run_cli
from speed.runtime.config import ModelRef, build_config, load_config
from speed.errors import ConfigError

# every speed run config, recursively (configs/accelerate/ holds accelerate launch configs instead)
CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if "accelerate" not in p.relative_to(ROOT).parts)


def test_there_are_configs():
    names = {p.name for p in CONFIGS}
    assert {"demo.yaml", "smoke.yaml", "topics.yaml", "paper.yaml", "untrained.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_config_loads_and_validates(path):
    cfg = load_config(path)
    assert cfg.run.name
    for name in cfg.stages:
        cfg.stage(name)


def test_defaults_and_override():
    cfg = load_config(ROOT / "configs" / "topics.yaml", ["topics.count=7", "run.seed=3", "topics.exclude=[A, B]"])
    assert cfg.stage("topics").count == 7 and cfg.run.seed == 3
    assert cfg.stage("topics").exclude == ["A", "B"]
    assert cfg.stage("topics").max_depth == 4  # default kept


def test_model_refs():
    cfg = build_config({"models": {"teacher": "qwen2.5-coder-1.5b-instruct",
                                   "junior": {"backend": "openai", "model": "m", "base_url": ["http://127.0.0.1:1/v1"],
                                              "api_key_env": "MY_KEY"}}})
    assert cfg.models["teacher"].model == "qwen2.5-coder-1.5b-instruct"
    assert cfg.models["teacher"].backend == "llamacpp"
    assert cfg.models["junior"].base_urls == ["http://127.0.0.1:1/v1"]


@pytest.mark.parametrize("data,needle", [
    ({"topics": {"cuont": 3}}, "unknown key 'topics.cuont' (allowed: balance_depths, count, exclude, max_depth, "
                               "min_depth, source); did you mean 'count'?"),
    ({"topics": {"count": -1}}, "topics.count = -1 is not allowed: must be >= 1"),
    ({"topics": {"count": "many"}}, "topics.count = 'many' is not allowed: expected an integer"),
    ({"topics": {"count": True}}, "topics.count = True is not allowed: expected an integer"),
    ({"topics": {"exclude": "World"}}, "topics.exclude = 'World' is not allowed: expected a list of a string"),
    ({"topics": {"source": "web:x"}}, "topics.source = 'web:x' is not allowed"),
    ({"run": {"executor": "slurm"}}, "run.executor = 'slurm' is not allowed: expected one of 'local', 'ray'"),
    ({"run": {"until": "nope"}}, "run.until = 'nope' is not allowed"),
    ({"models": {"chef": "x"}}, "unknown key 'models.chef'"),
    ({"models": {"teacher": {"backend": "gpt", "model": "x"}}}, "models.teacher.backend = 'gpt' is not allowed"),
    ({"models": {"teacher": {"backend": "openai", "model": "x"}}}, "models.teacher.base_url = None"),
    ({"models": {"teacher": {"model": "x", "api_key_env": "sk-123-abc"}}}, "models.teacher.api_key_env"),
    ({"models": {"teacher": {"backend": "llamacpp"}}}, "models.teacher.model = '' is not allowed"),
    ({"models": {"teacher": {"model": "x", "engine": "gpu"}}},
     "models.teacher.engine = 'gpu' is not allowed: expected one of 'server', 'in-process'"),
    ({"models": {"teacher": {"model": "x", "slots": 0}}}, "models.teacher.slots = 0 is not allowed: must be >= 1"),
    ({"models": {"teacher": {"model": "x", "ctx_per_slot": 64}}}, "models.teacher.ctx_per_slot = 64 is not allowed"),
    ({"models": {"teacher": {"model": "x", "options": {"repack": "maybe"}}}},
     "models.teacher.options.repack = 'maybe' is not allowed: auto, true or false"),
    ({"models": {"teacher": {"model": "x", "options": {"cache_prompt": "yes"}}}}, "models.teacher.options.cache_prompt"),
    ({"models": {"teacher": {"model": "x", "options": {"server_args": "--foo"}}}}, "models.teacher.options.server_args"),
    ({"evaluat": {}}, "unknown section 'evaluat'"),
    ({"scaling": {"sizes": [64, 32]}}, "scaling.sizes = [64, 32] is not allowed: increasing, without repeats"),
    ({"scaling": {"factor": 1}}, "scaling.factor = 1.0 is not allowed: must be > 1"),
    ({"brainstorm": {"tasks_per_topc": 1}}, "unknown key 'brainstorm.tasks_per_topc'"),
    ({"train-junior": {"lr": 1}}, "unknown key 'train-junior.lr'"),
])
def test_bad_config_names_key_value_and_allowed(data, needle):
    with pytest.raises(ConfigError) as exc:
        build_config(data)
    assert needle in str(exc.value)
    assert "\n" not in str(exc.value)


def test_bad_override():
    with pytest.raises(ConfigError, match="expected SECTION.KEY=VALUE"):
        load_config(ROOT / "configs" / "topics.yaml", ["count"])


def _assert_one_line_error(proc, needle):
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("speed: error: ") and needle in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("body,extra,needle", [
    ("topics:\n  cuont: 3\n", [], "unknown key 'topics.cuont'"),
    ("topics:\n  count: zero\n", [], "topics.count = 'zero'"),
    ("topics:\n  source: paths:/does/not/exist.txt\n", [], "taxonomy file /does/not/exist.txt not found"),
    ("topics: [1, 2\n", [], "not valid YAML"),
    ("topics:\n  count: 3\n", ["--set", "topics.max_depth=1"], "topics.max_depth = 1 is not allowed: must be >= 2"),
])
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, body, extra, needle):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("run: {name: bad, until: topics}\n" + body)
    run_dir = tmp_path / "run"
    proc = run_cli("run", str(cfg), "--run-dir", str(run_dir), *extra)
    _assert_one_line_error(proc, needle)
    assert not run_dir.exists()


def test_cli_missing_config_file(tmp_path):
    proc = run_cli("run", str(tmp_path / "nope.yaml"))
    _assert_one_line_error(proc, "nope.yaml: file not found")


def test_a_section_for_a_stage_not_built_is_refused(monkeypatch):
    import speed.stages as stages

    monkeypatch.setitem(stages._DECLARED, "report", None)
    with pytest.raises(ConfigError, match="section 'report' is for stage report, which is not implemented yet"):
        build_config({"report": {"x": 1}})
    assert build_config({"report": {}}).stages["report"] is not None
