"""Bad inputs, tried systematically through the real CLI (a subprocess each).

Each case builds its input in a fresh folder, runs one ``speed`` command and expects exit code 2
with exactly one line on stderr (``speed: error: ...``, no traceback) containing the given excerpt,
and no half-written artifact: the run directory is not created, or every file in it is unchanged
(the done stages' outputs, the manifest), or the named output file does not exist. The README
section "Bad inputs and faults" is this table in prose. Cases that are not errors (a teacher that
only writes garbage) are at the end.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from conftest import FIXTURES, run_cli
from fake_openai import FakeOpenAI, garbage_answer
from speed.io import atomic_write_jsonl, sha256_file
from speed.runtime.rundir import RunDir

EVAL = FIXTURES / "eval"
ST = "{backend: sentence-transformers, model: all-minilm-l6-v2}"
DEAD = "http://127.0.0.1:9/v1"  # nothing listens on port 9 (the discard port)
BINARY = bytes(range(256)) * 8


def _topics_cfg(tmp: Path, topics: str = "{count: 5}", extra: str = "") -> str:
    cfg = tmp / "c.yaml"
    cfg.write_text(f"run: {{name: t, until: topics}}\ntopics: {topics}\n{extra}")
    return str(cfg)


def _done(run_dir: Path, stage: str, filename: str, rows: list | bytes) -> None:
    """Record ``stage`` as done in ``run_dir`` with one output file (rows as JSONL, or raw bytes)."""
    path = run_dir / stage / filename
    if isinstance(rows, bytes):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rows)
    else:
        atomic_write_jsonl(path, rows)
    rd = RunDir(run_dir)
    if not rd.manifest_path.exists():
        rd.write_manifest({"run": "t", "stages": {}})
    rd.update_stage(stage, status="done", config_hash="c", input_hash="i", counts={},
                    outputs={filename: {"sha256": sha256_file(path), "bytes": path.stat().st_size}})


def _teacher_cfg(tmp: Path, until: str, teacher: str = f"{{backend: openai, model: m, base_url: '{DEAD}', max_retries: 0}}",
                 extra: str = "") -> str:
    cfg = tmp / "c.yaml"
    cfg.write_text(f"run: {{name: t, until: {until}}}\nmodels:\n  teacher: {teacher}\n  embedder: {ST}\n{extra}")
    return str(cfg)


TOPIC_ROWS = [{"id": f"t{i}", "path": f"Topic{i}", "original_path": f"Topic{i}", "depth": 1, "text": f"Topic {i}"}
              for i in range(3)]
DATA_ROW = {"id": "r0", "kind": "retrieval", "task": "find", "query": "q", "positive": "p", "negative": "n"}


# Each case: tmp -> (argv, excerpt, run_dir or None, output file that must not appear or None, env or None)
def c_config_missing(tmp):
    return ["run", str(tmp / "nope.yaml"), "--run-dir", str(tmp / "run")], "nope.yaml: file not found"


def c_config_bad_yaml(tmp):
    (tmp / "c.yaml").write_text("run: {name: t\ntopics: [count: 5\n")
    return ["run", str(tmp / "c.yaml"), "--run-dir", str(tmp / "run")], "not valid YAML"


def c_config_binary(tmp):
    (tmp / "c.yaml").write_bytes(BINARY)
    return ["run", str(tmp / "c.yaml"), "--run-dir", str(tmp / "run")], "c.yaml"


def c_config_not_mapping(tmp):
    (tmp / "c.yaml").write_text("- run\n- topics\n")
    return ["run", str(tmp / "c.yaml"), "--run-dir", str(tmp / "run")], "expected a mapping of sections"


def c_config_unknown_section(tmp):
    return ["run", _topics_cfg(tmp, extra="topicz: {count: 3}\n"), "--run-dir", str(tmp / "run")], \
        "unknown section 'topicz'"


def c_config_unknown_key(tmp):
    return ["run", _topics_cfg(tmp, "{cuont: 5}"), "--run-dir", str(tmp / "run")], \
        "unknown key 'topics.cuont'"


def c_config_wrong_type(tmp):
    return ["run", _topics_cfg(tmp, "{count: many}"), "--run-dir", str(tmp / "run")], \
        "topics.count = 'many' is not allowed: expected an integer"


def c_config_bad_value(tmp):
    return ["run", _topics_cfg(tmp, "{count: 0}"), "--run-dir", str(tmp / "run")], \
        "topics.count = 0 is not allowed: must be >= 1"


def c_config_unknown_role(tmp):
    return ["run", _topics_cfg(tmp, extra=f"models: {{teachr: {ST}}}\n"), "--run-dir", str(tmp / "run")], \
        "unknown key 'models.teachr'"


def c_config_bad_backend(tmp):
    return ["run", _topics_cfg(tmp, extra="models: {teacher: {backend: ollama, model: x}}\n"),
            "--run-dir", str(tmp / "run")], "models.teacher.backend = 'ollama' is not allowed"


def c_config_bad_circuit(tmp):
    return ["run", _teacher_cfg(tmp, "brainstorm", f"{{backend: openai, model: m, base_url: '{DEAD}', "
                                "options: {circuit_failures: -2}}"), "--run-dir", str(tmp / "run")], \
        "models.teacher.options.circuit_failures = -2 is not allowed"


def c_set_no_equals(tmp):
    return ["run", _topics_cfg(tmp), "--run-dir", str(tmp / "run"), "--set", "topics.count"], \
        "expected SECTION.KEY=VALUE"


def c_set_wrong_type(tmp):
    return ["run", _topics_cfg(tmp), "--run-dir", str(tmp / "run"), "--set", "topics.count=[1"], \
        "topics.count = '[1' is not allowed"


def c_set_not_a_section(tmp):
    return ["run", _topics_cfg(tmp), "--run-dir", str(tmp / "run"), "--set", "topics.count.x=1"], \
        "'count' is not a section"


def c_missing_role(tmp):
    return ["run", _write(tmp / "c.yaml", "run: {name: t, until: brainstorm}\n"), "--run-dir", str(tmp / "run")], \
        "missing key 'models.teacher'"


def c_api_key_env_unset(tmp):
    return ["run", _teacher_cfg(tmp, "brainstorm", f"{{backend: openai, model: m, base_url: '{DEAD}', "
                                "api_key_env: SPEED_NO_SUCH_KEY_VAR}"), "--run-dir", str(tmp / "run")], \
        "SPEED_NO_SUCH_KEY_VAR"


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


# -- taxonomies --
_TRUNCATED_GZ = gzip.compress(b'<RDF xmlns:r="x">\n' + b'<Topic r:id="Top/Arts/Music">\n</Topic>\n' * 2000)

# taxonomy case name: (source kind, file name, its content (None: no file), the excerpt of the error)
TAXONOMY_CASES = {
    "missing": ("paths", "none.txt", None, "none.txt not found"),
    "empty": ("paths", "empty.txt", "", "empty taxonomy"),
    "comments_only": ("paths", "c.txt", "# nothing here\n\n", "empty taxonomy"),
    "empty_level": ("paths", "p.txt", "Arts/Music\nArts//Film\n", "p.txt:2: empty level"),
    "binary_paths": ("paths", "bin.txt", BINARY, "bin.txt"),
    "odp_not_rdf": ("odp", "s.rdf.u8", "hello\nthis is not RDF\n", "not an ODP RDF structure dump"),
    "odp_malformed_topic": ("odp", "s.rdf.u8", '<?xml version="1.0"?>\n<RDF xmlns:r="http://www.w3.org/TR/RDF/">\n'
                            '<Topic r:id="Top/Arts">\n</Topic>\n<Topic r:id=\n', "s.rdf.u8:5: malformed <Topic>"),
    "odp_binary": ("odp", "s.rdf.u8", BINARY, "s.rdf.u8"),
    "odp_bad_gzip": ("odp", "s.rdf.u8.gz", b"not gzip at all" * 10, "s.rdf.u8.gz"),
    "odp_truncated_gzip": ("odp", "s.rdf.u8.gz", _TRUNCATED_GZ[: len(_TRUNCATED_GZ) // 2], "s.rdf.u8.gz"),
    "all_excluded": ("paths", "p.txt", "World/Deutsch\nAdult/Foo\n", "no topics left after exclusion"),
}


def _taxonomy_case(kind, filename, content, excerpt):
    def case(tmp):
        path = tmp / filename
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            path.write_text(content)
        return ["run", _topics_cfg(tmp, f"{{source: '{kind}:{path}'}}"), "--run-dir", str(tmp / "run")], excerpt
    return case


def c_taxonomy_empty_on_redo(tmp):  # a done stage redone with a bad input keeps its old outputs
    _done(tmp / "run", "topics", "topics.jsonl", TOPIC_ROWS)
    (tmp / "empty.txt").write_text("\n")
    return ["run", _topics_cfg(tmp, f"{{source: 'paths:{tmp / 'empty.txt'}'}}"), "--run-dir", str(tmp / "run")], \
        "empty taxonomy", tmp / "run"


def c_taxonomy_bad_source(tmp):
    return ["run", _topics_cfg(tmp, "{source: 'dmoz:/x'}"), "--run-dir", str(tmp / "run")], "topics.source"


# -- eval folders --
def _eval(tmp, *tasks, out=True):
    args = ["eval", "--model", "all-minilm-l6-v2", "--no-cache", "--tasks", *map(str, tasks)]
    return args + (["--output", str(tmp / "out.json")] if out else [])


# eval case name: (task folders, the excerpt of the error); every one must leave no --output file
EVAL_CASES = {
    "missing_folder": ([EVAL / "bad" / "NoSuchTask"], "NoSuchTask"),
    "no_task_json": ([EVAL / "bad" / "NoTaskJson"], "task.json"),
    "broken_task_json": ([EVAL / "bad" / "BrokenTaskJson"], "not valid JSON"),
    "missing_file": ([EVAL / "bad" / "MissingFile"], "file not found"),
    "bad_jsonl_line": ([EVAL / "bad" / "BadJson"], "test.jsonl:"),
    "wrong_columns": ([EVAL / "bad" / "MissingField"], "missing field"),
    "unknown_type": ([EVAL / "bad" / "UnknownType"], "unknown task type"),
    "unknown_doc": ([EVAL / "bad" / "UnknownDoc"], "unknown document"),
    # every folder is checked before anything is encoded
    "valid_then_bad": ([EVAL / "valid" / "TinySTS", EVAL / "bad" / "BadJson"], "BadJson"),
}


def _eval_case(folders, excerpt):
    return lambda tmp: (_eval(tmp, *folders), excerpt, None, tmp / "out.json")


# -- model paths --
def c_model_no_such_name(tmp):
    return ["eval", "--model", "no-such-model", "--tasks", str(EVAL / "valid" / "TinySTS")], \
        "'no-such-model' is neither an offline model"


def c_model_no_such_path(tmp):
    return ["eval", "--model", str(tmp / "missing-model"), "--tasks", str(EVAL / "valid" / "TinySTS")], \
        "missing-model"


def c_model_not_a_model_folder(tmp):
    (tmp / "notamodel").mkdir()
    (tmp / "notamodel" / "README.txt").write_text("hello")
    return ["eval", "--model", str(tmp / "notamodel"), "--tasks", str(EVAL / "valid" / "TinySTS")], "notamodel"


def c_model_garbage_gguf_teacher(tmp):
    (tmp / "model.gguf").write_bytes(BINARY)
    _done(tmp / "run", "topics", "topics.jsonl", TOPIC_ROWS)
    return ["run", _teacher_cfg(tmp, "brainstorm", f"{{backend: llamacpp, model: '{tmp / 'model.gguf'}', n_threads: 1}}"),
            "--run-dir", str(tmp / "run"), "--from", "brainstorm"], "model.gguf", tmp / "run"


def c_model_missing_gguf_teacher(tmp):
    return ["run", _teacher_cfg(tmp, "brainstorm", f"{{backend: llamacpp, model: '{tmp / 'gone.gguf'}'}}"),
            "--run-dir", str(tmp / "run")], "gone.gguf"


def c_model_server_binary_missing(tmp):
    return ["run", _teacher_cfg(tmp, "brainstorm", "{backend: llamacpp, model: smollm2-135m-instruct, "
                                f"options: {{server_binary: '{tmp / 'no' / 'llama-server'}'}}}}"),
            "--run-dir", str(tmp / "run")], "make setup"


def _foreign_adapter(path: Path) -> Path:
    """A GGUF LoRA adapter made for a qwen2 model of width 896 (the base below is SmolLM2: llama, 576)."""
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", 4.0)
    w.add_tensor("blk.0.attn_q.weight.lora_a", np.zeros((2, 896), dtype=np.float32))
    w.add_tensor("blk.0.attn_q.weight.lora_b", np.zeros((896, 2), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def c_model_adapter_for_another_base(tmp):
    _done(tmp / "run", "topics", "topics.jsonl", TOPIC_ROWS)
    adapter = _foreign_adapter(tmp / "qwen-lora.gguf")
    return ["run", _teacher_cfg(tmp, "brainstorm", "{backend: llamacpp, model: smollm2-135m-instruct, n_threads: 1, "
                                f"adapter: '{adapter}'}}"),
            "--run-dir", str(tmp / "run"), "--from", "brainstorm"], "llama-server could not load", tmp / "run"


def c_model_context_too_small(tmp):
    long = [dict(r, text=" ".join(["a long topic description"] * 120)) for r in TOPIC_ROWS]  # > 256 tokens
    _done(tmp / "run", "topics", "topics.jsonl", long)
    return ["run", _teacher_cfg(tmp, "brainstorm", "{backend: llamacpp, model: smollm2-135m-instruct, n_threads: 1, "
                                "slots: 1, ctx_per_slot: 128}"),
            "--run-dir", str(tmp / "run"), "--from", "brainstorm"], "raise ctx_per_slot", tmp / "run"


def c_model_missing_embedder(tmp):
    _done(tmp / "run", "export", "data.jsonl", [DATA_ROW] * 4)
    cfg = _write(tmp / "c.yaml", f"run: {{name: t}}\nmodels: {{embedder: {{backend: sentence-transformers, "
                 f"model: '{tmp / 'no-embedder'}'}}}}\n")
    return ["run", cfg, "--run-dir", str(tmp / "run"), "--from", "train-embedder", "--until", "train-embedder"], \
        "no-embedder", tmp / "run"


# -- JSONL inputs with broken lines, and empty inputs --
def c_stage_input_broken_line(tmp):
    good = "".join(json.dumps(r) + "\n" for r in TOPIC_ROWS)
    _done(tmp / "run", "topics", "topics.jsonl", (good[:-2] + "}\n{broken\n").encode())
    return ["run", _teacher_cfg(tmp, "brainstorm"), "--run-dir", str(tmp / "run"), "--from", "brainstorm"], \
        "topics.jsonl:4: not valid JSON", tmp / "run"


def c_stage_input_not_object(tmp):
    _done(tmp / "run", "topics", "topics.jsonl", b'[1, 2, 3]\n')
    return ["run", _teacher_cfg(tmp, "brainstorm"), "--run-dir", str(tmp / "run"), "--from", "brainstorm"], \
        "topics.jsonl:1: expected a JSON object", tmp / "run"


def c_stage_input_binary(tmp):
    _done(tmp / "run", "topics", "topics.jsonl", BINARY)
    return ["run", _teacher_cfg(tmp, "brainstorm"), "--run-dir", str(tmp / "run"), "--from", "brainstorm"], \
        "topics.jsonl", tmp / "run"


def c_embedder_data_broken_line(tmp):
    _done(tmp / "run", "export", "data.jsonl", (json.dumps(DATA_ROW) + "\n{oops\n").encode())
    cfg = _write(tmp / "c.yaml", f"run: {{name: t}}\nmodels: {{embedder: {ST}}}\ntrain-embedder: {{threads: 1}}\n")
    return ["run", cfg, "--run-dir", str(tmp / "run"), "--from", "train-embedder", "--until", "train-embedder"], \
        "data.jsonl:2: not valid JSON", tmp / "run"


def c_embedder_zero_examples(tmp):
    _done(tmp / "run", "export", "data.jsonl", [])
    cfg = _write(tmp / "c.yaml", f"run: {{name: t}}\nmodels: {{embedder: {ST}}}\ntrain-embedder: {{threads: 1}}\n")
    return ["run", cfg, "--run-dir", str(tmp / "run"), "--from", "train-embedder", "--until", "train-embedder"], \
        "export/data.jsonl: no training rows", tmp / "run"


def c_embedder_wrong_columns(tmp):
    _done(tmp / "run", "export", "data.jsonl", [{"id": "x", "question": "q", "answer": "a"}])
    cfg = _write(tmp / "c.yaml", f"run: {{name: t}}\nmodels: {{embedder: {ST}}}\ntrain-embedder: {{threads: 1}}\n")
    return ["run", cfg, "--run-dir", str(tmp / "run"), "--from", "train-embedder", "--until", "train-embedder"], \
        "data.jsonl:1", tmp / "run"


def c_seed_zero_tasks(tmp):
    _done(tmp / "run", "topics", "topics.jsonl", TOPIC_ROWS)
    _done(tmp / "run", "brainstorm", "tasks.jsonl", [])
    return ["run", _teacher_cfg(tmp, "seed", extra="seed: {count: 4, proportions: {retrieval: 1}}\n"),
            "--run-dir", str(tmp / "run"), "--from", "seed"], "tasks.jsonl: stage seed has nothing to prompt with", \
        tmp / "run"


def c_all_requests_failed(tmp):  # an endpoint that is down: every request fails, the stage is not done
    _done(tmp / "run", "topics", "topics.jsonl", TOPIC_ROWS)
    return ["run", _teacher_cfg(tmp, "brainstorm"), "--run-dir", str(tmp / "run"), "--from", "brainstorm"], \
        "stage brainstorm: all 12 teacher requests failed", tmp / "run"


def c_scaling_data_broken_line(tmp):
    (tmp / "d.jsonl").write_text(json.dumps(DATA_ROW) + "\nnot json\n")
    return ["scaling", str(tmp), "--data", str(tmp / "d.jsonl"), "--sizes", "1,2,3", "--out", str(tmp / "sc")], \
        "d.jsonl:2: not valid JSON", None, tmp / "sc"


def c_scaling_data_empty(tmp):
    (tmp / "d.jsonl").write_text("")
    return ["scaling", str(tmp), "--data", str(tmp / "d.jsonl"), "--out", str(tmp / "sc")], "d.jsonl", None, tmp / "sc"


def c_prices_broken(tmp):
    _done(tmp / "run", "topics", "topics.jsonl", TOPIC_ROWS)
    (tmp / "prices.yaml").write_text("gpt: [1, 2\n")
    return ["cost", str(tmp / "run"), "--prices", str(tmp / "prices.yaml")], "prices.yaml", tmp / "run"


def c_compare_spec_broken(tmp):
    (tmp / "spec.yaml").write_text("variants: {a: [\n")
    return ["compare", str(tmp / "spec.yaml"), "--out", str(tmp / "cmp")], "spec.yaml", None, tmp / "cmp"


# -- run directories and manifests --
def c_manifest_hand_edited(tmp):
    _done(tmp / "run", "topics", "topics.jsonl", TOPIC_ROWS)
    m = tmp / "run" / "manifest.json"
    m.write_text(m.read_text().replace('"status": "done"', '"status": "dome"'))
    return ["run", _topics_cfg(tmp), "--run-dir", str(tmp / "run")], "edited by hand or corrupted", tmp / "run"


def c_manifest_not_json(tmp):
    _done(tmp / "run", "topics", "topics.jsonl", TOPIC_ROWS)
    (tmp / "run" / "manifest.json").write_text("{\"stages\": ")
    return ["status", str(tmp / "run")], "manifest.json is corrupted", tmp / "run"


def c_run_dir_is_a_file(tmp):
    (tmp / "afile").write_text("x")
    return ["run", _topics_cfg(tmp), "--run-dir", str(tmp / "afile")], "afile"


def c_run_dir_under_a_file(tmp):
    (tmp / "afile").write_text("x")
    return ["run", _topics_cfg(tmp), "--run-dir", str(tmp / "afile" / "run")], "afile"


def c_status_not_a_run_dir(tmp):
    return ["status", str(tmp)], "not a run directory"


def c_from_stage_not_done(tmp):
    return ["run", _teacher_cfg(tmp, "brainstorm"), "--run-dir", str(tmp / "run"), "--from", "brainstorm"], \
        "needs stage topics, which is not done"


def c_report_not_a_run_dir(tmp):
    return ["report", str(tmp / "nothing"), "--out", str(tmp / "rep")], "nothing", None, tmp / "rep"


CASES = {name[2:]: fn for name, fn in sorted(globals().items()) if name.startswith("c_")}
CASES.update({f"eval_{name}": _eval_case(*case) for name, case in EVAL_CASES.items()})
CASES.update({f"taxonomy_{name}": _taxonomy_case(*case) for name, case in TAXONOMY_CASES.items()})


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_exit_2_nothing_half_written(case, tmp_path):
    got = CASES[case](tmp_path)
    argv, excerpt = got[0], got[1]
    run_dir = got[2] if len(got) > 2 else None
    output = got[3] if len(got) > 3 else None
    before = None
    if run_dir is not None:
        before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"}
    fresh_run = None
    if run_dir is None and "--run-dir" in argv:
        fresh_run = Path(argv[argv.index("--run-dir") + 1])
    proc = run_cli(*argv, cwd=tmp_path, env={"SPEED_PROGRESS": "0"}, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines[0].startswith("speed: error: ") and excerpt in lines[0], lines[0]
    if before is not None:
        after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"}
        changed = sorted(str(p.relative_to(run_dir)) for p in set(before) | set(after)
                         if before.get(p) != after.get(p))
        # a stage that started may have marked itself running; nothing done may change or vanish
        allowed = {"manifest.json", "config.yaml", "ledger.jsonl", "cache.sqlite"}  # failed calls are counted
        # a managed llama-server's log (logs/) is a diagnostic kept for the user, not an artifact
        assert {c for c in changed if not c.startswith("logs/")} <= allowed, changed
        if "manifest.json" in changed:
            old, new = json.loads(before[run_dir / "manifest.json"]), RunDir(run_dir).read_manifest()
            for name, entry in old["stages"].items():
                assert new["stages"][name] == entry, name
        assert not [p for p in after if p.name.endswith(".tmp")]
    if fresh_run is not None and fresh_run.is_dir():
        assert not any(p.is_file() and p.name not in (".lock",) for p in fresh_run.rglob("*")), \
            sorted(map(str, fresh_run.rglob("*")))
    if output is not None:
        assert not output.exists()


# -- zero examples reaching export; a teacher that only writes garbage ------------------------------

def test_zero_examples_export_completes_then_train_embedder_is_one_line(tmp_path):
    run_dir = tmp_path / "run"
    _done(run_dir, "revise", "examples.jsonl", [])
    cfg = _write(tmp_path / "c.yaml", f"run: {{name: t}}\nmodels: {{embedder: {ST}}}\ntrain-embedder: {{threads: 1}}\n")
    proc = run_cli("run", cfg, "--run-dir", str(run_dir), "--from", "dedup", "--until", "train-embedder")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "export/data.jsonl" in lines[0] and "no training rows" in lines[0], lines[0]
    assert "[export] warning: 0 examples to export" in proc.stdout
    st = RunDir(run_dir).read_manifest()["stages"]
    assert st["dedup"]["status"] == st["export"]["status"] == "done" and "train-embedder" not in st
    assert (run_dir / "export" / "data.jsonl").read_text() == "" and not (run_dir / "train-embedder").exists()


def test_garbage_teacher_rejections_are_recorded_then_one_line_downstream(tmp_path):
    """Every brainstorm and seed answer is unparseable: both stages complete with zero results and
    every answer in their rejected.jsonl (raw text and reason); train-junior then stops with one line."""
    (tmp_path / "topics.txt").write_text("Gardening\nAstronomy\n")
    with FakeOpenAI(garbage_answer) as server:
        cfg = _write(tmp_path / "c.yaml", f"""
run: {{name: g, until: train-junior}}
models:
  teacher: {{backend: openai, model: fake, base_url: '{server.url}', max_retries: 0}}
  junior: {{backend: hf, model: smollm2-135m-instruct}}
topics: {{source: 'paths:{tmp_path / "topics.txt"}', count: 2}}
seed: {{count: 4}}
train-junior: {{threads: 1}}
""")
        run_dir = tmp_path / "run"
        proc = run_cli("run", cfg, "--run-dir", str(run_dir))
        served = len(server.served)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "seed/sft.jsonl" in lines[0] and "no training rows" in lines[0], lines[0]
    assert "tasks.jsonl: 0 rows" in proc.stdout
    bs = [json.loads(x) for x in (run_dir / "brainstorm" / "rejected.jsonl").read_text().splitlines()]
    seed = [json.loads(x) for x in (run_dir / "seed" / "rejected.jsonl").read_text().splitlines()]
    assert len(bs) == 2 * 4 and len(seed) >= 1 and served == len(bs) + len(seed)
    for r in bs + seed:
        assert r["raw"] == garbage_answer("") and r["reason"] in ("no_json", "invalid_json"), r
    st = json.loads(run_cli("status", str(run_dir), "--json").stdout)["stages"]
    assert st["brainstorm"]["state"] == st["seed"]["state"] == "done"
    assert st["brainstorm"]["counts"]["tasks"] == 0 and sum(st["brainstorm"]["counts"]["rejected"].values()) == 8
    assert st["seed"]["counts"]["valid"] == 0 and st["train-junior"]["state"] == "pending"
    assert not (run_dir / "train-junior").exists()
