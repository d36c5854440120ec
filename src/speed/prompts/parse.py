"""Raw model text -> a validated value, or a rejection with a reason code; never raises.

Extraction tolerates code fences, prose around the JSON, trailing commas, a missing closing brace
or bracket, single quotes and Python literals (``ast.literal_eval``). Every result keeps the raw
text and the repairs that were needed. Validation is per kind: the kind's keys present, values
non-empty strings, extra keys dropped (and listed), positive != negative, label !=
misleading_label, S1/S2/S3 distinct. Length rules implied by the sampled attributes are checked
and recorded in ``length_ok`` (never enforced).

Reason codes: no_json, invalid_json, not_an_object, not_a_list, missing_key, not_a_string,
empty_value, placeholder_value, duplicate_key, positive_equals_negative, query_equals_document,
input_equals_positive, bad_label, duplicate_sentences, empty_list, bad_index, best_equals_worst,
bad_revision.
"""

from __future__ import annotations

import ast
import json
import re
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

from .schemas import EXAMPLE_KEYS, canonical_kind

MAX_CHARS = 200_000  # longer inputs are cut before parsing (the raw text is kept whole)


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
# extraction


_FENCE = re.compile(r"```[ \t]*[A-Za-z0-9_+-]*[ \t]*\r?\n?(.*?)(?:```|\Z)", re.S)
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")
# small models' JSON slips, repaired in this order: ``\'`` (not a JSON escape), a missing comma
# between a string value and the next "key": on a new line, a trailing comma
_BAD_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\'")
_MISSING_COMMA = re.compile(r'"([ \t]*\n\s*)("[^"\n]{1,80}"\s*:)')
_TEXT_REPAIRS = (("bad_escape", _BAD_ESCAPE, r"\1'"), ("missing_comma", _MISSING_COMMA, r'",\1\2'),
                 ("trailing_comma", _TRAILING_COMMA, r"\1"))


def _strip_fences(text: str, repairs: list[str]) -> str:
    if "```" not in text:
        return text
    blocks = [b for b in _FENCE.findall(text) if b.strip()]
    if not blocks:
        return text.replace("```", "")
    repairs.append("code_fence")
    # prefer a block that holds a JSON opener
    for b in blocks:
        if "{" in b or "[" in b:
            return b
    return blocks[0]


def _scan(text: str, start: int) -> tuple[int | None, list[str], bool, list[tuple[int, list[str]]]]:
    """From an opener at ``start``: the end index of its balanced close (or None), the open stack
    at the end of the text, whether the text ended inside a string, and the last few commas
    outside strings with the open stack at each (cut points for a truncated text)."""
    stack: list[str] = []
    commas: list[tuple[int, list[str]]] = []
    quote: str | None = None
    esc = False
    pairs = {"{": "}", "[": "]"}
    for i in range(start, len(text)):
        c = text[i]
        if quote:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == quote:
                quote = None
            continue
        if c in "\"'":
            # a single quote inside a word (don't, it's) is an apostrophe, not a string opener
            if c == "'" and i > 0 and text[i - 1].isalnum():
                continue
            quote = c
        elif c in pairs:
            stack.append(pairs[c])
        elif c == ",":
            commas.append((i, list(stack)))
            if len(commas) > 4:
                commas.pop(0)
        elif c in "}]":
            if stack and stack[-1] == c:
                stack.pop()
                if not stack:
                    return i, [], False, commas
            else:
                return None, [], False, commas  # mismatched closer: give up on balance
    return None, stack, quote is not None, commas


class _Obj(dict):
    """A decoded JSON object that remembers which of its keys were repeated (a looping model)."""

    dups: tuple[str, ...] = ()


def _pairs(pairs: list[tuple[str, Any]]) -> _Obj:
    obj = _Obj(pairs)
    if len(obj) < len(pairs):
        seen: set[str] = set()
        obj.dups = tuple(sorted({k for k, _ in pairs if k in seen or seen.add(k)}))
    return obj


def _json(text: str) -> Any:
    return json.loads(text, object_pairs_hook=_pairs)


def _loads(candidate: str, repairs: list[str]) -> tuple[bool, Any]:
    try:
        return True, _json(candidate)
    except (ValueError, RecursionError):
        pass
    fixed, done = candidate, []
    for name, pattern, repl in _TEXT_REPAIRS:  # cumulative: a text may need several
        out = pattern.sub(repl, fixed)
        if out == fixed:
            continue
        fixed = out
        done.append(name)
        try:
            val = _json(fixed)
            repairs.extend(done)
            return True, val
        except (ValueError, RecursionError):
            pass
    for lit in _python_variants(fixed):
        try:
            with warnings.catch_warnings():  # odd escapes in model text are not our warnings
                warnings.simplefilter("ignore")
                val = ast.literal_eval(lit.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(val, (dict, list, tuple)):
            repairs.append("python_literal")
            return True, _jsonable(val)
    return False, None


def _python_variants(text: str) -> list[str]:
    out = [text]
    lit = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", re.sub(r"\bnull\b", "None", text)))
    if lit != text:
        out.append(lit)
    return out


def _jsonable(val: Any) -> Any:
    if isinstance(val, tuple):
        val = list(val)
    if isinstance(val, list):
        return [_jsonable(v) for v in val]
    if isinstance(val, dict):
        return {str(k) if not isinstance(k, str) else k: _jsonable(v) for k, v in val.items()}
    if isinstance(val, (set, frozenset, bytes, complex)):
        return str(val)
    return val


def _truncated_candidates(frag: str, stack: list[str], in_string: bool,
                          commas: list[tuple[int, list[str]]], start: int) -> list[str]:
    """Ways to complete a truncated JSON text: close it as is, or cut back to a recent comma."""
    out = [frag + ('"' if in_string else "") + "".join(reversed(stack))]
    for pos, st in reversed(commas):
        out.append(frag[:pos - start] + "".join(reversed(st)))
    return out


def _candidates(body: str, opener: str):
    """Parsed values for successive occurrences of ``opener``: (position, value, repairs)."""
    start = body.find(opener)
    tries = 0
    while start >= 0 and tries < 6:
        tries += 1
        end, stack, in_string, commas = _scan(body, start)
        r: list[str] = []
        if end is not None:
            if start > 0 or body[end + 1:].strip():
                r.append("surrounding_text")
            ok, val = _loads(body[start:end + 1], r)
            if ok:
                yield start, val, r
        elif stack:
            frag = body[start:].rstrip()
            for k, cand in enumerate(_truncated_candidates(frag, stack, in_string, commas, start)):
                r2 = (["surrounding_text"] if start > 0 else [])
                ok, val = _loads(cand, r2)
                if ok:
                    # closed_string: the last value was cut mid-string and kept; cut_member: dropped
                    extra = ["closed_string"] if (k == 0 and in_string) else (["cut_member"] if k else [])
                    yield start, val, r2 + ["closed_brackets"] + extra
                    break
        start = body.find(opener, start + 1)


def _wanted(val: Any, want: str) -> bool:
    if want == "object":
        return isinstance(val, dict) or (isinstance(val, list) and bool(val) and isinstance(val[0], dict))
    return isinstance(val, list) or (isinstance(val, dict) and any(isinstance(v, list) for v in val.values()))


def extract_json(text: str, want: str = "object") -> tuple[Any, str | None, str, list[str]]:
    """Find the JSON value in ``text``: (value, reason, detail, repairs).

    ``want`` ("object" or "list") picks, among the values found, the first of the wanted shape
    (else the first value). reason is None on success, else "no_json" (no '{' or '[' at all) or
    "invalid_json".
    """
    repairs: list[str] = []
    if not isinstance(text, str):
        return None, "no_json", f"not a string: {type(text).__name__}", repairs
    body = _strip_fences(text[:MAX_CHARS], repairs)
    if "{" not in body and "[" not in body:
        return None, "no_json", "no '{' or '[' in the output", repairs
    found = []
    for opener in "{[":
        for pos, val, r in _candidates(body, opener):
            found.append((pos, val, r))
            if _wanted(val, want):
                break
    if not found:
        i = min(p for p in (body.find("{"), body.find("[")) if p >= 0)
        snippet = " ".join(body[i:i + 60].split())
        return None, "invalid_json", f"cannot parse JSON starting at {snippet!r}", repairs
    found.sort(key=lambda f: f[0])
    for pos, val, r in found:
        if _wanted(val, want):
            return val, None, "", repairs + r
    pos, val, r = found[0]
    return val, None, "", repairs + r


# --------------------------------------------------------------------------------------------
# validation helpers

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
    n = word_count(text)
    op, a, b = rule
    if op == "range":
        return a <= n <= (b if b is not None else a)
    if op == "lt":
        return n < a
    if op == "le":
        return n <= a
    return n >= a


def _lengths(kind: str, ex: dict[str, str], attributes: dict[str, Any] | None) -> dict[str, bool]:
    attrs = attributes or {}
    out: dict[str, bool] = {}

    def put(key: str, spec: Any) -> None:
        if spec is None:
            return
        ok = _length_ok(ex[key], str(spec))
        if ok is not None:
            out[key] = ok

    if kind == "retrieval":
        put("user_query", attrs.get("query_length"))
        put("positive_document", attrs.get("num_words"))
        put("hard_negative_document", attrs.get("num_words"))
    elif kind == "classification":
        put("input_text", attrs.get("num_words"))
    elif kind == "long-long":
        put("input", "at least 300")
        put("positive_document", "at least 300")
    elif kind == "short-short":
        put("input", "at most 40")
        put("positive_document", "at most 40")
    return out


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
        return _reject(raw, "duplicate_key", "repeated " + ", ".join(dups), repairs, dropped_keys=dropped)
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
    kw = {"dropped_keys": dropped}
    if kind == "retrieval":
        if _norm(ex["positive_document"]) == _norm(ex["hard_negative_document"]):
            return _reject(raw, "positive_equals_negative", "positive and hard negative are the same", repairs, **kw)
        if _norm(ex["user_query"]) in (_norm(ex["positive_document"]), _norm(ex["hard_negative_document"])):
            return _reject(raw, "query_equals_document", "the query repeats a document", repairs, **kw)
    elif kind == "classification":
        if _norm(ex["label"]) == _norm(ex["misleading_label"]):
            return _reject(raw, "bad_label", "label equals misleading_label", repairs, **kw)
    elif kind == "sts":
        s = [_norm(ex[k]) for k in ("S1", "S2", "S3")]
        if len(set(s)) < 3:
            return _reject(raw, "duplicate_sentences", "S1, S2 and S3 are not all different", repairs, **kw)
    else:
        if _norm(ex["input"]) == _norm(ex["positive_document"]):
            return _reject(raw, "input_equals_positive", "input and positive_document are the same", repairs, **kw)
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
            t = " ".join(item.split())
            if _norm(t) in seen:
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


def parse_revision(kind: str, text: str, attributes: dict[str, Any] | None = None) -> Parsed:
    """{reason, revision}; the revision (a dict or a JSON string) is validated as a ``kind`` example.

    On success ``value`` is {"reason": str, "revision": <validated example dict>}.
    """
    raw = text if isinstance(text, str) else repr(text)
    try:
        val, repairs, rejected = _object_with_keys(text, raw, ("reason", "revision"))
        if rejected is not None:
            return rejected
        dropped = sorted(str(k) for k in val if k not in ("reason", "revision"))
        why = val["reason"]
        if not isinstance(why, str):
            why = json.dumps(why, ensure_ascii=False)  # a per-criterion dict is fine as a reason
            repairs.append("reason_to_string")
        rev = val["revision"]
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
