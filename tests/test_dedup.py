"""Near-duplicate removal: the library (speed.synth.dedup) on planted real-text duplicates, and the stage."""

from __future__ import annotations

import json
import random
import re
import string
import unicodedata

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from speed.runtime.config import build_config
from speed.synth.dedup import (MinHasher, band_params, collision_probability, dedup, normalize,
                         shingle_hashes)
from speed.synth.records import Example
from speed.runtime.rundir import RunDir, StageContext
from speed.stages import dedup as stage

# -- helpers -----------------------------------------------------------------------------------------


def true_jaccard(a: str, b: str, k: int = 5) -> float:
    """Exact Jaccard of the char k-gram sets of the normalised texts (what MinHash estimates)."""
    na, nb = normalize(a), normalize(b)
    sa = {na[i:i + k] for i in range(len(na) - k + 1)} or {na}
    sb = {nb[i:i + k] for i in range(len(nb) - k + 1)} or {nb}
    return len(sa & sb) / len(sa | sb)


def _rows(path):
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def real_texts(eval_dir, min_words: int = 16, pairs: bool = False) -> list[str]:
    """Distinct (after normalisation) real texts of at least ``min_words`` words.

    Without ``pairs``: SciFact abstracts, Banking77 and Amazon texts, and only the first sentence of
    each MRPC / STSBenchmark pair (the second is by design often a close paraphrase of the first).
    With ``pairs``: both sentences of MRPC, STSBenchmark and SICK-R pairs too.
    """
    texts = [r["text"] for r in _rows(eval_dir / "SciFact" / "corpus.jsonl")[:1200]]
    for name in ("MRPC", "STSBenchmark") + (("SICK-R",) if pairs else ()):
        for r in _rows(eval_dir / name / "test.jsonl"):
            texts += [r["sentence1"], r["sentence2"]] if pairs else [r["sentence1"]]
    for name in ("Banking77Classification", "AmazonCounterfactualClassification"):
        texts += [r["text"] for r in _rows(eval_dir / name / "test.jsonl")]
    seen, out = set(), []
    for t in texts:
        key = normalize(t)
        if len(t.split()) >= min_words and key not in seen:
            seen.add(key)
            out.append(t)
    return out


EDITS = ("swap", "substitute", "delete", "insert", "case_punct", "append")


def small_edit(text: str, kind: str, rng: random.Random, vocab: list[str], short: list[str]) -> str:
    words = text.split()
    i = rng.randrange(len(words) - 1)
    if kind == "swap":  # two adjacent words swapped
        words[i], words[i + 1] = words[i + 1], words[i]
    elif kind == "substitute":
        words[i] = rng.choice(vocab)
    elif kind == "delete":
        del words[i]
    elif kind == "insert":
        words.insert(i, rng.choice(vocab))
    elif kind == "case_punct":
        words = [w.upper() if rng.random() < 0.2 else w for w in words]
        words = [w.strip(".,;:!?") + (rng.choice(",;!") if rng.random() < 0.1 else "") for w in words]
    elif kind == "append":  # a short real sentence appended to a long text (<= 10% of its words)
        fit = [s for s in short if len(s.split()) <= len(words) // 10]
        words += rng.choice(fit).split()
    return " ".join(words)


@pytest.fixture(scope="module")
def planted(request):
    """(texts, source, kind): originals in order, each planted copy after its original."""
    from conftest import SHARED

    eval_dir = SHARED / "eval"
    if not eval_dir.is_dir():
        pytest.skip(f"{eval_dir} is absent: the real evaluation sets live in ../shared/eval/")
    rng = random.Random(7)
    originals = real_texts(eval_dir)
    vocab = sorted({w for t in originals for w in t.split() if w.isalpha()})
    short = [r["text"] for r in _rows(eval_dir / "Banking77Classification" / "train.jsonl")[:3000]]
    chosen = rng.sample(range(len(originals)), 600)
    after: dict[int, list[tuple[str, int, str]]] = {}
    for n, o in enumerate(chosen):
        words = len(originals[o].split())
        kinds = EDITS if words >= 80 else EDITS[:-1]
        kind = kinds[n % len(kinds)]
        after.setdefault(rng.randrange(o, len(originals)), []).append(
            (small_edit(originals[o], kind, rng, vocab, short), o, kind))
    texts, source, kinds, pos = [], [], [], {}
    for i, t in enumerate(originals):
        pos[i] = len(texts)
        texts.append(t)
        source.append(-1)
        kinds.append("")
        for text, o, kind in after.get(i, ()):
            texts.append(text)
            source.append(pos[o])
            kinds.append(kind)
    return texts, source, kinds


# -- the library on real texts -------------------------------------------------------------------------


def test_planted_near_duplicates_are_found_and_distinct_real_texts_kept(planted):
    texts, source, kinds = planted
    res = dedup(texts)
    removed = {d.index: d for d in res.duplicates}
    plant = [i for i, s in enumerate(source) if s >= 0]
    recall = sum(i in removed for i in plant) / len(plant)
    missed = {}
    for i in plant:
        if i not in removed:
            missed[kinds[i]] = missed.get(kinds[i], 0) + 1
    assert recall >= 0.95, f"recall {recall:.3f}, missed by edit kind: {missed}"
    # each removed planted copy points to its original, or to what its original was a duplicate of
    anchor = {i: removed[i].duplicate_of_index if i in removed else i for i in range(len(texts))}
    for i in plant:
        if i in removed:
            assert removed[i].duplicate_of_index in (source[i], anchor[source[i]])
            assert res.keep[removed[i].duplicate_of_index]
    # precision: the distinct real texts removed are few, and each is a genuine near duplicate
    originals = [i for i, s in enumerate(source) if s < 0]
    lost = [removed[i] for i in originals if i in removed]
    assert len(lost) <= 0.01 * len(originals), [(texts[d.index], texts[d.duplicate_of_index]) for d in lost]
    for d in lost:  # e.g. MRPC/SICK pairs that differ by a word or two: real near duplicates
        assert true_jaccard(texts[d.index], texts[d.duplicate_of_index]) >= 0.55, (
            texts[d.index], texts[d.duplicate_of_index], d.jaccard)
    # the reported Jaccard is the MinHash estimate, close to the exact one
    for d in res.duplicates:
        if d.reason == "near":
            assert d.jaccard >= 0.7
            assert abs(d.jaccard - true_jaccard(texts[d.index], texts[d.duplicate_of_index])) < 0.2


def test_distinct_real_texts_removed_are_genuine_near_duplicates(shared_eval):
    """Real sets do hold near duplicates (MRPC / SICK-R / STS pairs, Banking77 paraphrases).

    Every removal among ~16K distinct real texts of any length must be one of those: exact Jaccard
    of the char 5-grams >= 0.5 with the kept text (MinHash noise alone never removes a text).
    """
    texts = real_texts(shared_eval, min_words=1, pairs=True)
    res = dedup(texts)
    assert res.duplicates and all(d.reason == "near" for d in res.duplicates)  # distinct after normalising
    for d in res.duplicates:
        assert true_jaccard(texts[d.index], texts[d.duplicate_of_index]) >= 0.5, (
            texts[d.index], texts[d.duplicate_of_index])


def test_minhash_estimate_tracks_true_jaccard(shared_eval):
    texts = real_texts(shared_eval)[:300]
    rng = random.Random(3)
    pairs, errors = [], []
    for t in texts:
        words = t.split()
        cut = rng.randrange(len(words) // 3, len(words))  # a prefix: Jaccard spread over 0..1
        pairs.append((t, " ".join(words[:cut])))
    h = MinHasher(128, seed=0)
    for a, b in pairs:
        hs, c = shingle_hashes([normalize(a), normalize(b)])
        sig = h.signatures(hs, c)
        errors.append(float((sig[0] == sig[1]).mean()) - true_jaccard(a, b))
    errors = np.array(errors)
    assert abs(errors.mean()) < 0.01  # unbiased
    assert np.abs(errors).max() < 0.2 and errors.std() < 0.06  # ~sqrt(J(1-J)/128)


# -- semantics ------------------------------------------------------------------------------------------

BASE = ("The mitochondrial membrane potential collapsed within minutes of exposure to the toxin, "
        "and the cells entered apoptosis shortly afterwards in every replicate.")
OTHER = "How do I change the PIN of my card before I travel abroad next month with my family?"


def test_exact_duplicates_point_to_first_occurrence():
    texts = [BASE, OTHER, BASE.upper(), "  " + BASE.replace(" ", "\n  ") + "!!", OTHER.replace("?", " ?"), BASE]
    res = dedup(texts, ids=["a", "b", "c", "d", "e", "f"])
    assert res.kept == [0, 1]
    assert [(d.id, d.duplicate_of, d.reason, d.jaccard) for d in res.duplicates] == [
        ("c", "a", "exact", 1.0), ("d", "a", "exact", 1.0), ("e", "b", "exact", 1.0), ("f", "a", "exact", 1.0)]
    assert res.counts == {"input": 6, "kept": 2, "removed_exact": 4, "removed_near": 0}


def test_near_duplicates_point_to_first_kept_occurrence():
    near1 = BASE.replace("within minutes", "within seconds")
    near2 = BASE.replace("every replicate", "each replicate")
    res = dedup([OTHER, near1, BASE, near2])
    assert res.kept == [0, 1]
    assert [(d.index, d.duplicate_of_index, d.reason) for d in res.duplicates] == [(2, 1, "near"), (3, 1, "near")]
    assert all(0.7 <= d.jaccard < 1.0 for d in res.duplicates)


def test_exact_and_near_switches():
    texts = [BASE, BASE.lower(), BASE.replace("toxin", "poison"), OTHER]
    assert dedup(texts, near=False).counts == {"input": 4, "kept": 3, "removed_exact": 1, "removed_near": 0}
    res = dedup(texts, exact=False)  # exact copies still go, as near duplicates with Jaccard 1
    assert res.counts == {"input": 4, "kept": 2, "removed_exact": 0, "removed_near": 2}
    assert res.duplicates[0].jaccard == 1.0
    assert dedup(texts, exact=False, near=False).kept == [0, 1, 2, 3]


def test_deterministic_and_seeded(planted):
    texts = planted[0][:1500]
    a, b = dedup(texts, seed=0), dedup(texts, seed=0)
    assert a.duplicates == b.duplicates and (a.keep == b.keep).all()
    h1, c1 = shingle_hashes([normalize(t) for t in texts[:50]])
    s1, s2 = MinHasher(64, seed=1).signatures(h1, c1), MinHasher(64, seed=2).signatures(h1, c1)
    assert not (s1 == s2).all()
    # known values: hashes and signatures do not depend on the process (no Python hash())
    assert int(shingle_hashes(["hello world"])[0][0]) == int(shingle_hashes(["hello world", "x"])[0][0])


def test_empty_input_and_degenerate_texts():
    res = dedup([])
    assert res.kept == [] and res.duplicates == []
    assert res.counts == {"input": 0, "kept": 0, "removed_exact": 0, "removed_near": 0}
    res = dedup(["", "!!!", "a", "b", "ab", "a"])  # empty after normalisation, shorter than a shingle
    assert [(d.index, d.duplicate_of_index, d.reason) for d in res.duplicates] == [(1, 0, "exact"), (5, 2, "exact")]
    assert dedup(["only one"]).kept == [0]
    odd = ["lone \ud800 surrogate in a text", "emoji \U0001F600 and \u00e9\u0301 accents, ﬁ ligature",
           "EMOJI \U0001F600 AND \u00c9\u0301 ACCENTS  fi LIGATURE"]
    assert [(d.index, d.reason) for d in dedup(odd).duplicates] == [(2, "exact")]


def test_bad_parameters_are_errors():
    for kw in ({"threshold": 0}, {"threshold": 1.5}, {"num_perm": 0}, {"shingle": "byte"},
               {"shingle_size": 0}, {"bands": 4}, {"bands": 64, "rows": 4}):
        with pytest.raises(ValueError):
            dedup(["x"], **kw)
    with pytest.raises(ValueError):
        dedup(["x", "y"], ids=["a"])


def test_band_params_catch_pairs_at_the_threshold():
    for t in (0.5, 0.7, 0.8, 0.9):
        b, r = band_params(t, 128)
        assert b * r <= 128 and collision_probability(t, b, r) >= 0.99
        assert collision_probability(t - 0.5, b, r) < 0.1
    assert band_params(0.7, 128) == (32, 4)


def test_word_shingles_work_too(planted):
    texts, source, _ = planted
    res = dedup(texts[:1500], shingle="word", shingle_size=3, threshold=0.5)
    plant = [i for i, s in enumerate(source[:1500]) if s >= 0]
    assert sum(not res.keep[i] for i in plant) / len(plant) >= 0.9


def test_explicit_bands():
    near1 = BASE.replace("within minutes", "within seconds")
    assert dedup([BASE, near1, OTHER], bands=16, rows=8).kept == [0, 2]


# -- properties -------------------------------------------------------------------------------------------

_ASCII_TEXT = st.text(alphabet=st.characters(max_codepoint=127), max_size=60)


@given(_ASCII_TEXT)
def test_fast_ascii_normalisation_matches_the_general_one(text):
    slow = unicodedata.normalize("NFKC", text).casefold()
    slow = re.sub(r"\s+", " ", re.sub(r"[^\w\s]+", " ", slow)).strip()
    assert normalize(text) == slow


@given(st.lists(st.text(alphabet="ab cdé.", max_size=25), min_size=1, max_size=6),
       st.sampled_from([("char", 5), ("char", 1), ("word", 3), ("word", 1)]))
def test_shingle_hashes_of_a_text_do_not_depend_on_its_batch(texts, kind):
    texts = [normalize(t) for t in texts]
    h, c = shingle_hashes(texts, *kind)
    alone = [shingle_hashes([t], *kind) for t in texts]
    assert c.tolist() == [int(a[1][0]) for a in alone]
    assert h.tolist() == [int(x) for a in alone for x in a[0]]


def _variant(text: str, rng: random.Random) -> str:
    """The same text after normalisation: case, spacing and punctuation changed."""
    out = []
    for w in text.split(" "):
        w = w.upper() if rng.random() < 0.3 else w
        out.append(w + rng.choice(["", "", ",", "!", " ..."]))
    return rng.choice(["", " ", "\t"]) + rng.choice([" ", "  ", "\n"]).join(out)


_WORD = st.text(alphabet=string.ascii_lowercase, min_size=2, max_size=9)
_DOC = st.lists(_WORD, min_size=6, max_size=30).map(" ".join)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_DOC, min_size=1, max_size=25, unique_by=normalize),
       st.lists(st.integers(1, 4), min_size=25, max_size=25), st.randoms(use_true_random=False))
def test_one_kept_per_exact_group_and_no_removal_without_a_similar_partner(docs, copies, rng):
    # groups of exact duplicates (after normalisation), shuffled together
    texts, group = [], []
    for g, d in enumerate(docs):
        for c in range(copies[g]):
            texts.append(d if c == 0 else _variant(d, rng))
            group.append(g)
    order = list(range(len(texts)))
    rng.shuffle(order)
    texts, group = [texts[i] for i in order], [group[i] for i in order]
    res = dedup(texts)
    kept_groups = [group[i] for i in res.kept]
    firsts = {}
    for i, g in enumerate(group):
        firsts.setdefault(g, i)
    for d in res.duplicates:
        if d.reason == "exact":
            assert group[d.index] == group[d.duplicate_of_index] and d.duplicate_of_index == firsts[group[d.index]]
        else:  # a near removal needs a kept partner that really is similar
            assert true_jaccard(texts[d.index], texts[d.duplicate_of_index]) >= 0.4
    # every exact group keeps exactly its first member, unless that member is a near duplicate
    near_removed = {group[d.index] for d in res.duplicates if d.reason == "near"}
    assert sorted(kept_groups) == sorted(set(range(len(docs))) - near_removed)
    assert all(res.keep[firsts[g]] for g in kept_groups)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_random_distinct_texts_are_all_kept(seed):
    rng = random.Random(seed)
    texts = [" ".join("".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9)))
                      for _ in range(rng.randint(5, 40))) for _ in range(300)]
    assert dedup(texts, seed=seed % 7).kept == list(range(300))


# -- the stage -----------------------------------------------------------------------------------------


def _example(i: int, query: str, pos: str, neg: str) -> dict:
    return Example(id=f"ex-{i}", kind="retrieval", task="t", topic="Science",
                   fields={"user_query": query, "positive_document": pos,
                           "hard_negative_document": neg}).to_dict()


def _ctx(tmp_path, rows, cfg=None, seed=3):
    rd = RunDir(tmp_path / "run")
    path = rd.stage_dir("revise") / "examples.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = build_config({"run": {"name": "t", "seed": seed}})
    return StageContext(name="dedup", config=config, cfg=cfg or stage.Config(), rundir=rd)


def test_stage_writes_kept_and_removed_rows_with_counts(tmp_path):
    rows = [
        _example(0, "mitochondria toxin", BASE, OTHER),
        _example(1, "card pin travel", OTHER, "Cards can be frozen in the app at any time."),
        _example(2, "mitochondria toxin", BASE.upper(), OTHER + "!"),  # exact (after normalisation)
        _example(3, "mitochondria toxins", BASE.replace("minutes", "seconds"), OTHER),  # near
        _example(4, "something else entirely", "A quite different positive document about cooking rice.",
                 "And a negative one about tax returns."),
    ]
    ctx = _ctx(tmp_path, rows)
    stage.run(ctx)
    kept = _rows(ctx.dir / "examples.jsonl")
    removed = _rows(ctx.dir / "removed.jsonl")
    assert kept == [json.loads(json.dumps(rows[i], sort_keys=True)) for i in (0, 1, 4)]
    assert [(r["id"], r["duplicate_of"], r["reason"]) for r in removed] == [
        ("ex-2", "ex-0", "exact"), ("ex-3", "ex-0", "near")]
    assert removed[0]["jaccard"] == 1.0 and 0.7 <= removed[1]["jaccard"] < 1.0
    assert Example.from_dict(removed[1]).full_text() == Example.from_dict(rows[3]).full_text()
    assert {k: ctx.counts[k] for k in ("input", "kept", "removed_exact", "removed_near")} == {
        "input": 5, "kept": 3, "removed_exact": 1, "removed_near": 1}
    assert ctx.outputs["examples.jsonl"]["rows"] == 3 and ctx.outputs["removed.jsonl"]["rows"] == 2


def test_stage_on_empty_input_writes_empty_outputs(tmp_path):
    ctx = _ctx(tmp_path, [])
    stage.run(ctx)
    assert (ctx.dir / "examples.jsonl").read_text() == "" and (ctx.dir / "removed.jsonl").read_text() == ""
    assert ctx.counts["input"] == ctx.counts["kept"] == ctx.counts["removed_exact"] == ctx.counts["removed_near"] == 0


def test_stage_is_deterministic_and_honours_switches(tmp_path, planted):
    texts = planted[0][:400]
    rows = [_example(i, "q", t, "") for i, t in enumerate(texts)]
    outs = []
    for n in range(2):
        ctx = _ctx(tmp_path / str(n), rows)
        stage.run(ctx)
        outs.append(((ctx.dir / "examples.jsonl").read_bytes(), (ctx.dir / "removed.jsonl").read_bytes()))
    assert outs[0] == outs[1] and outs[0][1]
    ctx = _ctx(tmp_path / "off", rows, cfg=stage.Config(near=False, exact=False))
    stage.run(ctx)
    assert ctx.counts["kept"] == 400


def test_stage_rejects_rows_that_are_not_examples(tmp_path):
    from speed.errors import InputError

    ctx = _ctx(tmp_path, [_example(0, "q", BASE, ""), {"id": "x", "text": "no kind"}])
    with pytest.raises(InputError, match="row 2 is not an example"):
        stage.run(ctx)


def test_stage_config_validation():
    from speed.errors import ConfigError

    stage.Config().validate("stages.dedup")
    for bad in (stage.Config(threshold=0.0), stage.Config(num_perm=4), stage.Config(shingle_size=0),
                stage.Config(bands=8), stage.Config(bands=64, rows=4)):
        with pytest.raises(ConfigError, match="stages.dedup"):
            bad.validate("stages.dedup")
    assert stage.STAGE.requires == ("revise",) and stage.STAGE.roles == ()
    from speed.runtime.configschema import from_dict

    cfg = from_dict(stage.Config, {"threshold": 0.8, "shingle": "word", "shingle_size": 3,
                                   "bands": 16, "rows": 8, "near": False}, "stages.dedup")
    assert (cfg.threshold, cfg.shingle, cfg.bands, cfg.near) == (0.8, "word", 16, False)
    for bad in ({"shingle": "byte"}, {"exact": "yes"}, {"thresold": 0.5}):
        with pytest.raises(ConfigError, match="stages.dedup"):
            from_dict(stage.Config, bad, "stages.dedup")
