"""Per-kind validation of model outputs: raw text -> a validated value, or a rejection with a reason code.

The JSON is found by ``json_repair.extract_json``; every result keeps the raw text and the repairs
that were needed, and parsing never raises. An example is checked against its kind: the kind's
keys present, values non-empty strings, extra keys dropped (and listed), then the kind's own rules
in ``_KINDS`` (positive != negative, label != misleading_label, S1/S2/S3 distinct, ...). Length
rules implied by the sampled attributes are checked and recorded in ``length_ok``; only a
classification input shorter than half the minimum its sampled length asks for is rejected
(``too_short``). Brainstorm task lists (numbering such as "Task 1:" stripped; a question offered as a
task is rejected by ``task_problem``), judge verdicts and revisions are parsed here too.

Reason codes: no_json, invalid_json, not_an_object, not_a_list, missing_key, not_a_string,
empty_value, placeholder_value, positive_equals_negative, query_equals_document,
input_equals_positive, bad_label, duplicate_sentences, too_short, empty_list, bad_index,
best_equals_worst, bad_revision; for brainstormed tasks: question_not_task.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, NamedTuple

from .json_repair import extract_json
from .schemas import EXAMPLE_KEYS, canonical_kind


@dataclass
class Parsed:
    """The outcome of parsing one raw text."""

    ok: bool
    raw: str
    value: Any = None  # the validated dict (or list of tasks) when ok
    reason: str | None = None  # rejection code when not ok
    detail: str = ""
    repairs: list[str] = field(default_factory=list)
    dropped_keys: list[str] = field(default_factory=list)
    length_ok: dict[str, bool] = field(default_factory=dict)
    inner: "Parsed | None" = None  # revision: the revised example's own result

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# validation helpers, and each kind's rules (kind -> _Rules)

_PLACEHOLDER = re.compile(r"^\s*(?:\.{2,}|…|<[^<>]{0,40}>|\{[^{}]{0,40}\}|\[[^\[\]]{0,40}\]|n/?a|none|null|"
                          r"string|a string|text|todo|tbd|xxx+|your [a-z _]+ here)\s*$", re.I)


def _norm(s: str) -> str:
    return " ".join(s.lower().split())


def word_count(s: str) -> int:
    return len(s.split())


def _length_rule(spec: str) -> tuple[str, int, int | None] | None:
    """'less than 5 words' -> ('lt', 5, None); 'at least 10' -> ('ge', 10, None);
    '5 to 15 words' -> ('range', 5, 15); '200' -> ('ge', 200, None)."""
    s = str(spec).lower()
    m = re.search(r"(\d+)\s*(?:to|-)\s*(\d+)", s)
    if m:
        return "range", int(m.group(1)), int(m.group(2))
    m = re.search(r"(less than|fewer than|under|at most)\s*(\d+)", s)
    if m:
        return ("lt" if m.group(1) != "at most" else "le"), int(m.group(2)), None
    m = re.search(r"(\d+)", s)
    if m:
        return "ge", int(m.group(1)), None
    return None


def _length_ok(text: str, spec: str) -> bool | None:
    rule = _length_rule(spec)
    if rule is None:
        return None
    n, (op, a, b) = word_count(text), rule
    return {"range": a <= n <= (b if b is not None else a), "lt": n < a, "le": n <= a}.get(op, n >= a)


class _Rules(NamedTuple):
    checks: tuple[tuple[str, str, Callable[[dict[str, str]], bool]], ...]  # (reason, detail, rejects(example))
    lengths: Callable[[dict[str, Any]], dict[str, Any]]  # sampled attributes -> {key: length spec or None}
    enforced: tuple[str, ...] = ()  # keys rejected as too_short below half the minimum their spec asks for


def too_short(text: str, spec: Any) -> bool:
    """``text`` has fewer than half the words that an "at least N" (or "N to M") ``spec`` asks for."""
    rule = _length_rule(str(spec)) if spec is not None else None
    return rule is not None and rule[0] in ("ge", "range") and word_count(text) * 2 < rule[1]


_SAME_INPUT = (("input_equals_positive", "input and positive_document are the same",
                lambda e: _norm(e["input"]) == _norm(e["positive_document"])),)
_KINDS: dict[str, _Rules] = {  # kind -> its rules, checked in order after the generic ones
    "retrieval": _Rules((("positive_equals_negative", "positive and hard negative are the same",
                          lambda e: _norm(e["positive_document"]) == _norm(e["hard_negative_document"])),
                         ("query_equals_document", "the query repeats a document",
                          lambda e: _norm(e["user_query"]) in (_norm(e["positive_document"]),
                                                               _norm(e["hard_negative_document"])))),
                        lambda a: {"user_query": a.get("query_length"), "positive_document": a.get("num_words"),
                                   "hard_negative_document": a.get("num_words")}),
    "classification": _Rules((("bad_label", "label equals misleading_label",
                               lambda e: _norm(e["label"]) == _norm(e["misleading_label"])),),
                             lambda a: {"input_text": a.get("num_words")}, enforced=("input_text",)),
    "sts": _Rules((("duplicate_sentences", "S1, S2 and S3 are not all different",
                    lambda e: len({_norm(e[k]) for k in ("S1", "S2", "S3")}) < 3),), lambda a: {}),
    "short-short": _Rules(_SAME_INPUT, lambda a: dict.fromkeys(("input", "positive_document"), "at most 40")),
    "long-long": _Rules(_SAME_INPUT, lambda a: dict.fromkeys(("input", "positive_document"), "at least 300")),
}


def _lengths(kind: str, ex: dict[str, str], attributes: dict[str, Any] | None) -> dict[str, bool]:
    specs = _KINDS[kind].lengths(attributes or {})
    checked = {k: _length_ok(ex[k], str(spec)) for k, spec in specs.items() if spec is not None}
    return {k: ok for k, ok in checked.items() if ok is not None}


def _reject(raw: str, reason: str, detail: str, repairs: list[str], **kw: Any) -> Parsed:
    return Parsed(ok=False, raw=raw, reason=reason, detail=detail, repairs=repairs, **kw)


# --------------------------------------------------------------------------------------------
# examples


def validate_example(kind: str, obj: Any, raw: str = "", attributes: dict[str, Any] | None = None,
                     repairs: list[str] | None = None) -> Parsed:
    """Check an already-decoded value against the kind's schema and rules."""
    kind = canonical_kind(kind)
    repairs = list(repairs or [])
    if not isinstance(obj, dict):
        return _reject(raw, "not_an_object", f"expected a JSON object, got {type(obj).__name__}", repairs)
    keys = EXAMPLE_KEYS[kind]
    missing = [k for k in keys if k not in obj]
    if missing:
        # a single wrapping object ({"example": {...}}) is unwrapped once
        inner = [v for v in obj.values() if isinstance(v, dict)]
        if len(obj) == 1 and len(inner) == 1 and all(k in inner[0] for k in keys):
            return validate_example(kind, inner[0], raw, attributes, repairs + ["unwrapped"])
        return _reject(raw, "missing_key", "missing " + ", ".join(missing), repairs,
                       dropped_keys=sorted(k for k in obj if k not in keys))
    dropped = sorted(str(k) for k in obj if k not in keys)
    dups = [k for k in getattr(obj, "dups", ()) if k in keys]
    if dups:
        # a small model that loops writes the object again ("user_query" ... "user_query" ...): its first
        # complete set of keys is the example it meant, the repeats are the loop
        obj = {k: obj.first[k] for k in keys} if getattr(obj, "first", None) else obj
        repairs = repairs + ["repeated_keys_first_kept"]
    ex: dict[str, str] = {}
    for k in keys:
        v = obj[k]
        if not isinstance(v, str):
            return _reject(raw, "not_a_string", f"{k} is {type(v).__name__}", repairs, dropped_keys=dropped)
        if not v.strip():
            return _reject(raw, "empty_value", f"{k} is empty", repairs, dropped_keys=dropped)
        if _PLACEHOLDER.match(v) or _norm(v) == _norm(k) or _norm(v).replace(" ", "_") == k.lower():
            return _reject(raw, "placeholder_value", f"{k} = {v.strip()[:40]!r}", repairs, dropped_keys=dropped)
        ex[k] = v.strip()
    rules = _KINDS[kind]
    for reason, detail, rejects in rules.checks:
        if rejects(ex):
            return _reject(raw, reason, detail, repairs, dropped_keys=dropped)
    specs = rules.lengths(attributes or {})
    for k in rules.enforced:
        if too_short(ex[k], specs.get(k)):
            return _reject(raw, "too_short", f"{k} has {word_count(ex[k])} words; asked: {specs[k]}", repairs,
                           dropped_keys=dropped)
    return Parsed(ok=True, raw=raw, value=ex, repairs=repairs, dropped_keys=dropped,
                  length_ok=_lengths(kind, ex, attributes))


def parse_example(kind: str, text: str, attributes: dict[str, Any] | None = None) -> Parsed:
    """Parse one synthesis output of ``kind`` (attributes: the prompt's, for the length flags)."""
    raw = text if isinstance(text, str) else repr(text)
    try:
        val, reason, detail, repairs = extract_json(text, "object")
        if reason:
            return _reject(raw, reason, detail, repairs)
        if isinstance(val, list) and len(val) >= 1 and isinstance(val[0], dict):
            repairs.append("first_of_list")
            val = val[0]
        return validate_example(kind, val, raw, attributes, repairs)
    except Exception as exc:  # pragma: no cover - a safety net; parsing must never raise
        return _reject(raw, "invalid_json", f"parser error: {type(exc).__name__}", [])


# --------------------------------------------------------------------------------------------
# brainstorm, judge, revision


_BULLET = re.compile(r"^(?:[-*\u2022]|\d{1,3}[.)])\s+(.+)$")


def _markdown_items(text: str) -> list[str]:
    """Top-level items of a Markdown bulleted or numbered list (bold markers and trailing ':' removed)."""
    out = []
    for line in str(text).splitlines():
        m = _BULLET.match(line.rstrip())
        if m:
            item = m.group(1).replace("**", "").replace("__", "").strip().strip('"').strip()
            if item.endswith(":"):
                item = item[:-1].strip()
            if item:
                out.append(item)
    return out


_TASK_NUMBER = re.compile(r"^\s*(?:(?:task|example)\s*#?\s*\d*\s*[:.)\-]|#?\d{1,3}\s*[:.)\-]|\(\d{1,3}\))\s*", re.I)
_QUESTION_START = re.compile(r"^(?:what|how|why|when|where|which|who|whom|whose|is|are|can|could|does|do|did|"
                             r"should|would|will|was|were|has|have)\b", re.I)


def clean_task(text: str) -> str:
    """A brainstormed task without its list numbering ("Task 1: ...", "2. ...", "(3) ...") or quotes."""
    t = " ".join(str(text).split()).strip().strip('"').strip()
    return _TASK_NUMBER.sub("", t, count=1).strip()


def task_problem(task: str) -> tuple[str, str] | None:
    """(reason, detail) when a brainstormed task is not a task description: a question is an example
    query, not the task the example belongs to."""
    t = task.strip()
    if t.endswith("?") or _QUESTION_START.match(t):
        return "question_not_task", "a question, not a task description"
    return None


def parse_brainstorm(text: str) -> Parsed:
    """A list of task strings (possibly wrapped in an object); non-strings dropped, duplicates removed."""
    raw = text if isinstance(text, str) else repr(text)
    try:
        val, reason, detail, repairs = extract_json(text, "list")
        if reason == "no_json":
            items = _markdown_items(text)
            if len(items) >= 2:  # a bulleted / numbered list instead of JSON: take its top-level items
                val, reason = items, None
                repairs.append("markdown_list")
        if reason:
            return _reject(raw, reason, detail, repairs)
        if isinstance(val, dict):
            lists = [v for v in val.values() if isinstance(v, list)]
            if len(lists) != 1:
                return _reject(raw, "not_a_list", "expected a JSON list of strings", repairs)
            repairs.append("unwrapped")
            val = lists[0]
        if not isinstance(val, list):
            return _reject(raw, "not_a_list", f"expected a JSON list, got {type(val).__name__}", repairs)
        tasks: list[str] = []
        seen: set[str] = set()
        dropped = 0
        for item in val:
            if isinstance(item, dict) and len(item) == 1 and isinstance(next(iter(item.values())), str):
                item = next(iter(item.values()))
            if not isinstance(item, str) or not item.strip() or _PLACEHOLDER.match(item):
                dropped += 1
                continue
            t = clean_task(item)
            if not t or _norm(t) in seen:
                dropped += 1
                continue
            seen.add(_norm(t))
            tasks.append(t)
        if dropped:
            repairs.append(f"dropped_items:{dropped}")
        if not tasks:
            return _reject(raw, "empty_list", "no usable task strings", repairs)
        return Parsed(ok=True, raw=raw, value=tasks, repairs=repairs)
    except Exception as exc:  # pragma: no cover
        return _reject(raw, "invalid_json", f"parser error: {type(exc).__name__}", [])


def _as_index(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str) and re.fullmatch(r"\s*\[?\s*(\d+)\s*\]?\s*", v):
        return int(re.sub(r"\D", "", v))
    return None


def _object_with_keys(text: str, raw: str, keys: tuple[str, ...]) -> tuple[Any, list[str], Parsed | None]:
    """Extract a JSON object that has ``keys``: (value, repairs, None) or (None, repairs, rejection)."""
    val, reason, detail, repairs = extract_json(text, "object")
    if reason:
        return None, repairs, _reject(raw, reason, detail, repairs)
    if not isinstance(val, dict):
        return None, repairs, _reject(raw, "not_an_object", f"expected a JSON object, got {type(val).__name__}",
                                      repairs)
    missing = [k for k in keys if k not in val]
    if missing:
        return None, repairs, _reject(raw, "missing_key", "missing " + ", ".join(missing), repairs)
    return val, repairs, None


def parse_judge(text: str, n_candidates: int) -> Parsed:
    """{reason, best, worst}: integer indices in [0, n_candidates), best != worst."""
    raw = text if isinstance(text, str) else repr(text)
    try:
        val, repairs, rejected = _object_with_keys(text, raw, ("reason", "best", "worst"))
        if rejected is not None:
            return rejected
        dropped = sorted(str(k) for k in val if k not in ("reason", "best", "worst"))
        if not isinstance(val["reason"], str):
            return _reject(raw, "not_a_string", "reason is " + type(val["reason"]).__name__, repairs)
        out: dict[str, Any] = {"reason": val["reason"].strip()}
        for k in ("best", "worst"):
            idx = _as_index(val[k])
            if idx is None or not 0 <= idx < n_candidates:
                return _reject(raw, "bad_index", f"{k} = {val[k]!r} is not an index in 0..{n_candidates - 1}",
                               repairs, dropped_keys=dropped)
            out[k] = idx
        if out["best"] == out["worst"]:
            return _reject(raw, "best_equals_worst", f"best = worst = {out['best']}", repairs, dropped_keys=dropped)
        return Parsed(ok=True, raw=raw, value=out, repairs=repairs, dropped_keys=dropped)
    except Exception as exc:  # pragma: no cover
        return _reject(raw, "invalid_json", f"parser error: {type(exc).__name__}", [])


_REASON_AT = re.compile(r'"reason"\s*:\s*"')
_REVISION_AT = re.compile(r'"revision"\s*:\s*[\'"]?\s*(?=\{)')


def _split_revision(text: str) -> dict[str, str] | None:
    """``reason`` and ``revision`` read by where their keys stand, for an answer whose outer JSON is broken by
    the example written unescaped inside the revision string (``"revision": "{ "S1": "..." }"``: 17 of 56
    revisions by Qwen2.5-Coder-0.5B in the study). The revision is the text from its first ``{``; the
    example parser then takes the first complete object there."""
    if not isinstance(text, str):
        return None
    rev = list(_REVISION_AT.finditer(text))
    why = _REASON_AT.search(text)
    if not rev or not why or why.end() > rev[-1].start():
        return None
    reason = text[why.end():rev[-1].start()].rstrip().rstrip(",").rstrip().rstrip('"')
    return {"reason": reason, "revision": text[rev[-1].end():]}


def parse_revision(kind: str, text: str, attributes: dict[str, Any] | None = None) -> Parsed:
    """{reason, revision}; the revision (a dict or a JSON string) is validated as a ``kind`` example.

    On success ``value`` is {"reason": str, "revision": <validated example dict>}.
    """
    raw = text if isinstance(text, str) else repr(text)
    try:
        val, repairs, rejected = _object_with_keys(text, raw, ("reason", "revision"))
        if rejected is not None:
            val = _split_revision(text) if rejected.reason in ("missing_key", "invalid_json") else None
            if val is None:
                return rejected
            repairs = [*repairs, "revision_by_key_position"]
        rev = val["revision"]
        if isinstance(rev, dict) and len(rev) == 1 and isinstance(next(iter(rev.values())), dict):
            rev = next(iter(rev.values()))  # {"example": {...}}: the example one level down
            repairs.append("revision_unwrapped")
            val = {**val, "revision": rev}
        dropped = sorted(str(k) for k in val if k not in ("reason", "revision"))
        why = val["reason"]
        if not isinstance(why, str):
            why = json.dumps(why, ensure_ascii=False)  # a per-criterion dict is fine as a reason
            repairs.append("reason_to_string")
        if isinstance(rev, str):
            inner = parse_example(kind, rev, attributes)
        else:
            inner = validate_example(kind, rev, json.dumps(rev, ensure_ascii=False), attributes)
        if not inner.ok:
            return _reject(raw, "bad_revision", f"{inner.reason}: {inner.detail}".rstrip(": "), repairs,
                           dropped_keys=dropped, inner=inner)
        return Parsed(ok=True, raw=raw, value={"reason": why.strip(), "revision": inner.value}, repairs=repairs,
                      dropped_keys=dropped, length_ok=inner.length_ok, inner=inner)
    except Exception as exc:  # pragma: no cover
        return _reject(raw, "invalid_json", f"parser error: {type(exc).__name__}", [])


def parse_rubric(text: str, keys: tuple[str, ...] | None = None) -> Parsed:
    """The 1-5 rubric scores ``keys`` (default ``prompts.rubric.RUBRIC_KEYS``); a score outside 1-5 or
    missing rejects the answer."""
    from .rubric import RUBRIC_KEYS

    keys = keys or RUBRIC_KEYS
    raw = text if isinstance(text, str) else repr(text)
    try:
        val, repairs, bad = _object_with_keys(text, raw, keys)
        if bad is not None:
            return bad
        scores = {}
        for k in keys:
            v = _as_index(val[k])
            if v is None or not 1 <= v <= 5:
                return _reject(raw, "bad_score", f"{k} = {val[k]!r} (expected an integer 1-5)", repairs)
            scores[k] = v
        return Parsed(ok=True, raw=raw, value=scores, repairs=repairs)
    except Exception as exc:  # pragma: no cover
        return _reject(raw, "invalid_json", f"parser error: {type(exc).__name__}", [])
