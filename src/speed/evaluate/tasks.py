"""Evaluation task folders: reading and validation (the format of ``shared/eval/README.md``).

A task folder holds ``task.json`` (name, type, main_score, split, language, instruction; for STS
min_score / max_score) and its data files:

============================  =========================================================  ==============
type                          files, row fields                                          main score
============================  =========================================================  ==============
``sts``                       ``test.jsonl``: sentence1, sentence2, score                cosine_spearman
``classification``            ``train.jsonl``, ``test.jsonl``: text, label               accuracy
``pair_classification``       ``test.jsonl``: sentence1, sentence2, label (0/1)          max_ap
``retrieval``                 ``corpus.jsonl`` (_id, title, text), ``queries.jsonl``     ndcg_at_10
                              (_id, text), ``qrels/test.tsv`` (query-id corpus-id score)
``reranking``                 ``test.jsonl``: query, positive [..], negative [..]        map
``clustering``                ``test.jsonl``: sentences [..], labels [..]                v_measure
============================  =========================================================  ==============

Every problem (a missing file, a broken JSON line, a missing or ill-typed field, an unknown type,
qrels naming an unknown document) is an ``InputError`` naming the file and line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..errors import InputError
from ..io import read_jsonl_numbered

TASK_TYPES: dict[str, str] = {
    "sts": "cosine_spearman",
    "classification": "accuracy",
    "pair_classification": "max_ap",
    "retrieval": "ndcg_at_10",
    "reranking": "map",
    "clustering": "v_measure",
}

# mteb 1.12's per-task classification settings (its task metadata); 8 per label otherwise.
SAMPLES_PER_LABEL: dict[str, int] = {
    "AmazonCounterfactualClassification": 32,
    "TweetSentimentExtractionClassification": 32,
    "EmotionClassification": 16,
}


@dataclass
class Task:
    name: str
    type: str
    main_score: str
    path: Path
    instruction: str | None = None
    split: str = "test"
    language: str = "en"
    meta: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def samples_per_label(self) -> int:
        return int(self.meta.get("samples_per_label") or SAMPLES_PER_LABEL.get(self.name, 8))

    @property
    def n_experiments(self) -> int:
        return int(self.meta.get("n_experiments") or 10)

    def size(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.data.items() if isinstance(v, (list, dict))}


TYPE_KEY, INSTRUCTION_KEY = '"type"', '"instruction"'


def _line_of(text: str, needle: str) -> int:
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return i
    return 1


def _rows(path: Path) -> Iterator[tuple[int, dict]]:
    return read_jsonl_numbered(path)


def _field(path: Path, lineno: int, row: dict, key: str, kinds: tuple, what: str):
    if key not in row:
        raise InputError(f"{path}:{lineno}: missing field '{key}' ({what})")
    value = row[key]
    if isinstance(value, bool) and bool not in kinds:
        raise InputError(f"{path}:{lineno}: field '{key}' = {value!r} is not {what}")
    if not isinstance(value, kinds):
        raise InputError(f"{path}:{lineno}: field '{key}' = {value!r} is not {what}")
    return value


def _str_list(path: Path, lineno: int, row: dict, key: str) -> list[str]:
    value = _field(path, lineno, row, key, (list,), "a list of strings")
    if not all(isinstance(v, str) for v in value):
        raise InputError(f"{path}:{lineno}: field '{key}' is not a list of strings")
    return value


def _nonempty(path: Path, rows: list) -> None:
    if not rows:
        raise InputError(f"{path}:1: no rows (empty file)")


def read_task_json(folder: Path) -> dict:
    path = folder / "task.json"
    if not path.is_file():
        raise InputError(f"{path}: file not found (a task folder needs task.json)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}:1: not UTF-8 text (task.json is a JSON object)") from None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(meta, dict):
        raise InputError(f"{path}:1: expected a JSON object")
    for key in ("name", "type"):
        if not isinstance(meta.get(key), str) or not meta.get(key):
            raise InputError(f"{path}:1: missing or empty key '{key}'")
    if meta["type"] not in TASK_TYPES:
        raise InputError(f"{path}:{_line_of(text, TYPE_KEY)}: unknown task type {meta['type']!r} "
                         f"(allowed: {', '.join(TASK_TYPES)})")
    if meta.get("instruction") is not None and not isinstance(meta["instruction"], str):
        raise InputError(f"{path}:{_line_of(text, INSTRUCTION_KEY)}: 'instruction' must be a string")
    return meta


def load_task(folder: str | Path) -> Task:
    """Read and validate one task folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder (expected a task folder with task.json)")
    meta = read_task_json(folder)
    ttype = meta["type"]
    task = Task(name=meta["name"], type=ttype, main_score=meta.get("main_score") or TASK_TYPES[ttype], path=folder,
                instruction=meta.get("instruction"), split=meta.get("split") or "test",
                language=meta.get("language") or "en", meta=meta)
    split = task.split
    if ttype == "sts":
        lo, hi = meta.get("min_score", 0), meta.get("max_score", 5)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi)) or lo >= hi:
            raise InputError(f"{folder / 'task.json'}:1: min_score / max_score must be numbers with min < max")
        path = folder / f"{split}.jsonl"
        s1, s2, gold = [], [], []
        for ln, row in _rows(path):
            s1.append(_field(path, ln, row, "sentence1", (str,), "a string"))
            s2.append(_field(path, ln, row, "sentence2", (str,), "a string"))
            score = _field(path, ln, row, "score", (int, float), "a number")
            if not lo - 1e-9 <= score <= hi + 1e-9:
                raise InputError(f"{path}:{ln}: score {score} is outside [{lo}, {hi}] (task.json min_score/max_score)")
            gold.append(float(score))
        _nonempty(path, gold)
        task.data = {"sentence1": s1, "sentence2": s2, "score": gold}
    elif ttype == "classification":
        for part in ("train", split):
            path = folder / f"{part}.jsonl"
            texts, labels = [], []
            for ln, row in _rows(path):
                texts.append(_field(path, ln, row, "text", (str,), "a string"))
                labels.append(_field(path, ln, row, "label", (str, int), "a string or an integer"))
            _nonempty(path, texts)
            if len(set(map(type, labels))) > 1:
                raise InputError(f"{path}:1: labels mix strings and integers")
            task.data[f"{'train' if part == 'train' else 'test'}_text"] = texts
            task.data[f"{'train' if part == 'train' else 'test'}_label"] = labels
        if len(set(task.data["train_label"])) < 2:
            raise InputError(f"{folder / 'train.jsonl'}:1: needs at least two distinct labels")
    elif ttype == "pair_classification":
        path = folder / f"{split}.jsonl"
        s1, s2, lab = [], [], []
        for ln, row in _rows(path):
            s1.append(_field(path, ln, row, "sentence1", (str,), "a string"))
            s2.append(_field(path, ln, row, "sentence2", (str,), "a string"))
            label = _field(path, ln, row, "label", (int,), "0 or 1")
            if label not in (0, 1):
                raise InputError(f"{path}:{ln}: field 'label' = {label!r} is not 0 or 1")
            lab.append(label)
        _nonempty(path, lab)
        task.data = {"sentence1": s1, "sentence2": s2, "label": lab}
    elif ttype == "retrieval":
        task.data = _load_retrieval(folder, split)
    elif ttype == "reranking":
        path = folder / f"{split}.jsonl"
        rows = []
        for ln, row in _rows(path):
            rows.append({"query": _field(path, ln, row, "query", (str,), "a string"),
                         "positive": _str_list(path, ln, row, "positive"),
                         "negative": _str_list(path, ln, row, "negative")})
        _nonempty(path, rows)
        task.data = {"instances": rows}
    elif ttype == "clustering":
        path = folder / f"{split}.jsonl"
        sets = []
        for ln, row in _rows(path):
            sents = _str_list(path, ln, row, "sentences")
            labels = _field(path, ln, row, "labels", (list,), "a list of labels")
            if len(sents) != len(labels):
                raise InputError(f"{path}:{ln}: {len(sents)} sentences but {len(labels)} labels")
            if not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in labels):
                raise InputError(f"{path}:{ln}: field 'labels' is not a list of strings or integers")
            sets.append({"sentences": sents, "labels": labels})
        _nonempty(path, sets)
        task.data = {"sets": sets}
    return task


def _load_retrieval(folder: Path, split: str) -> dict:
    cpath, qpath, rpath = folder / "corpus.jsonl", folder / "queries.jsonl", folder / "qrels" / f"{split}.tsv"
    corpus: dict[str, dict] = {}
    for ln, row in _rows(cpath):
        did = _field(cpath, ln, row, "_id", (str, int), "a document id")
        text = _field(cpath, ln, row, "text", (str,), "a string")
        title = row.get("title", "")
        if title is None:
            title = ""
        if not isinstance(title, str):
            raise InputError(f"{cpath}:{ln}: field 'title' = {title!r} is not a string")
        if str(did) in corpus:
            raise InputError(f"{cpath}:{ln}: duplicate document id {did!r}")
        corpus[str(did)] = {"title": title, "text": text}
    _nonempty(cpath, list(corpus))
    queries: dict[str, str] = {}
    for ln, row in _rows(qpath):
        qid = _field(qpath, ln, row, "_id", (str, int), "a query id")
        if str(qid) in queries:
            raise InputError(f"{qpath}:{ln}: duplicate query id {qid!r}")
        queries[str(qid)] = _field(qpath, ln, row, "text", (str,), "a string")
    _nonempty(qpath, list(queries))
    if not rpath.is_file():
        raise InputError(f"{rpath}: file not found")
    qrels: dict[str, dict[str, int]] = {}
    with open(rpath, encoding="utf-8") as fh:
        for ln, line in enumerate(fh, 1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("\t")
            if ln == 1 and parts[:2] == ["query-id", "corpus-id"]:
                continue
            if ln == 1:
                raise InputError(f"{rpath}:1: expected the header 'query-id<TAB>corpus-id<TAB>score'")
            if len(parts) != 3:
                raise InputError(f"{rpath}:{ln}: expected 3 tab-separated fields (query-id, corpus-id, score), "
                                 f"got {len(parts)}")
            qid, did, score = parts
            try:
                rel = int(float(score))
            except ValueError:
                raise InputError(f"{rpath}:{ln}: score {score!r} is not a number") from None
            if qid not in queries:
                raise InputError(f"{rpath}:{ln}: unknown query {qid!r} (not in queries.jsonl)")
            if did not in corpus:
                raise InputError(f"{rpath}:{ln}: unknown document {did!r} (not in corpus.jsonl)")
            qrels.setdefault(qid, {})[did] = rel
    if not qrels:
        raise InputError(f"{rpath}:1: no relevance judgements")
    return {"corpus": corpus, "queries": queries, "qrels": qrels}


def is_task_folder(path: Path) -> bool:
    return (path / "task.json").is_file()


def discover(paths) -> list[Path]:
    """Task folders from ``paths``: each a task folder, or a folder whose sub-folders are tasks."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise InputError(f"{p}: no such task folder")
        if is_task_folder(p):
            out.append(p)
            continue
        if not p.is_dir():
            raise InputError(f"{p}: not a task folder")
        subs = sorted(d for d in p.iterdir() if d.is_dir() and not d.name.startswith((".", "_")))
        tasks = [d for d in subs if is_task_folder(d)]
        if not tasks:
            raise InputError(f"{p / 'task.json'}: file not found (neither a task folder nor a folder of tasks)")
        for d in subs:
            if d not in tasks and any(d.glob("*.jsonl")):
                raise InputError(f"{d / 'task.json'}: file not found (a task folder needs task.json)")
        out.extend(tasks)
    return out


def builtin_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "data" / "eval"


def builtin_tasks() -> list[Path]:
    return discover([builtin_dir()])


def load_tasks(paths=None) -> list[Task]:
    """Validate every folder first (so a malformed one fails before any encoding), then return them."""
    folders = discover(paths) if paths else builtin_tasks()
    tasks = [load_task(f) for f in folders]
    names: dict[str, Path] = {}
    for t in tasks:
        if t.name in names:
            raise InputError(f"{t.path / 'task.json'}:1: task name {t.name!r} is also used by {names[t.name]}")
        names[t.name] = t.path
    return tasks
