r"""Generic JSON repair: find the JSON value in raw model text; knows nothing of task kinds or examples.

``extract_json`` never raises. It tolerates code fences, prose around the JSON, a ``\'`` escape, a
missing comma between lines, trailing commas, a truncated text (closed, or cut back to a recent
comma), single quotes and Python literals (``ast.literal_eval``), and names each repair it needed:
code_fence, surrounding_text, bad_escape, missing_comma, trailing_comma, closed_brackets,
closed_string, cut_member, python_literal. Decoded objects list their repeated keys in ``.dups`` and
keep each key's first value in ``.first``.
"""

from __future__ import annotations

import ast
import json
import re
import warnings
from typing import Any

MAX_CHARS = 200_000  # longer inputs are cut before parsing (the raw text is kept whole)

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
    """A decoded JSON object that remembers which of its keys were repeated (a looping model) and the
    first value of each key (``.first``; the dict itself holds the last, as JSON decoders do)."""

    dups: tuple[str, ...] = ()
    first: dict[str, Any] | None = None


def _pairs(pairs: list[tuple[str, Any]]) -> _Obj:
    obj = _Obj(pairs)
    if len(obj) < len(pairs):
        seen: set[str] = set()
        obj.dups = tuple(sorted({k for k, _ in pairs if k in seen or seen.add(k)}))
        first: dict[str, Any] = {}
        for k, v in pairs:
            first.setdefault(k, v)
        obj.first = first
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
