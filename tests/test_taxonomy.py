import gzip
import shutil
from collections import Counter

import pytest

from conftest import FIXTURES
from speed.errors import InputError
from speed.synth.taxonomy import (builtin_path, iter_iab_tsv, iter_odp, iter_paths_file, open_source, sample_topics,
                            topic_text, truncate)

ODP = FIXTURES / "odp" / "structure.rdf.u8"


def test_truncation_keeps_first_two_and_last_two_levels():
    assert truncate("Arts/Movies/Titles/3/36_Hours_-_1964/Cast_and_Crew", 4) == "Arts/Movies/36_Hours_-_1964/Cast_and_Crew"
    assert truncate("A/B/C/D", 4) == "A/B/C/D"
    assert truncate("A/B/C/D/E", 4) == "A/B/D/E"
    assert truncate("A/B/C/D/E/F/G", 5) == "A/B/E/F/G"
    assert topic_text("Arts/Movies/36_Hours_-_1964") == "Arts / Movies / 36 Hours - 1964"


def test_odp_dump_is_parsed_without_top_prefix_and_with_entities():
    paths = list(iter_odp(ODP))
    assert "Arts" in paths and "Top" not in paths and "" not in paths
    assert all(not p.startswith("Top/") for p in paths)
    assert "Business/Food_and_Related_Products/Beverages/Coffee_&_Tea" in paths
    assert "World/Français/Arts" in paths
    assert len(paths) == 30  # 31 <Topic> elements minus the root; the <Alias> is not a topic


def test_odp_gzip_gives_the_same_paths(tmp_path):
    gz = tmp_path / "structure.rdf.u8.gz"
    with open(ODP, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert list(iter_odp(gz)) == list(iter_odp(ODP))


def test_odp_sampling_filters_world_and_adult_and_truncates():
    stats = {}
    topics = sample_topics(iter_odp(ODP), count=1000, seed=0, stats=stats)
    paths = {t.path for t in topics}
    assert not any(p.startswith(("World", "Adult")) for p in paths)
    assert stats["excluded"] == 6  # Adult, Adult/Arts, World, World/Deutsch, .../Musik, World/Français/Arts
    movie = [t for t in topics if t.original_path == "Arts/Movies/Titles/3/36_Hours_-_1964/Cast_and_Crew"]
    assert movie and movie[0].path == "Arts/Movies/36_Hours_-_1964/Cast_and_Crew" and movie[0].depth == 6
    assert movie[0].text == "Arts / Movies / 36 Hours - 1964 / Cast and Crew"
    # multi-grained: nodes of every depth, not only leaves
    assert {t.depth for t in topics} >= {1, 2, 3, 4, 5, 6}
    assert len(paths) == len(topics)  # no duplicates after truncation
    assert max(t.path.count("/") + 1 for t in topics) <= 4


def test_exclusion_is_configurable():
    topics = sample_topics(iter_odp(ODP), count=1000, seed=0, exclude=["Arts", "World"])
    assert any(t.path.startswith("Adult") for t in topics)
    assert not any(t.path.startswith(("Arts", "World")) for t in topics)


def test_sampling_is_seeded_duplicate_free_and_order_independent():
    paths = list(iter_iab_tsv(builtin_path("iab-3.1")))
    a = sample_topics(paths, count=50, seed=1)
    b = sample_topics(list(reversed(paths)), count=50, seed=1)
    c = sample_topics(paths, count=50, seed=2)
    assert [t.path for t in a] == [t.path for t in b]
    assert [t.path for t in a] != [t.path for t in c]
    assert len({t.path for t in a}) == 50


def test_sampling_duplicates_after_truncation_are_dropped():
    paths = ["A/B/X/C/D", "A/B/Y/C/D", "A/B/Z/C/D"]  # all truncate to A/B/C/D
    topics = sample_topics(paths, count=10, seed=0)
    assert [t.path for t in topics] == ["A/B/C/D"]


def test_sampling_is_uniform_over_nodes():
    paths = [f"T{i}" for i in range(100)]
    hits = Counter()
    for seed in range(400):
        for t in sample_topics(paths, count=10, seed=seed):
            hits[t.path] += 1
    # each node is picked with probability 0.1: 40 expected in 400 draws
    assert min(hits.values()) > 15 and max(hits.values()) < 70


def test_balance_depths_spreads_the_sample():
    paths = list(iter_iab_tsv(builtin_path("iab-3.1")))
    topics = sample_topics(paths, count=40, seed=0, balance_depths=True)
    by_depth = Counter(t.depth for t in topics)
    assert len(topics) == 40 and set(by_depth) == {1, 2, 3, 4}
    assert max(by_depth.values()) - min(by_depth.values()) <= 2


def test_builtin_iab_taxonomy_ships_with_attribution():
    path = builtin_path("iab-3.1")
    assert (path.parent / "SOURCE.md").read_text().count("Creative Commons") == 1
    paths = list(iter_iab_tsv(path))
    assert len(paths) == 704 and len(set(paths)) == 704
    assert "Attractions/Amusement and Theme Parks" in paths
    assert max(p.count("/") + 1 for p in paths) == 4


def test_paths_file(tmp_path):
    f = tmp_path / "topics.txt"
    f.write_text("# my topics\nScience/Physics\n\n/Arts/Music/\n")
    assert list(iter_paths_file(f)) == ["Science/Physics", "Arts/Music"]


@pytest.mark.parametrize("kind,body,where", [
    ("paths", "Science//Physics\n", ":1:"),
    ("paths", "ok\nA/ /B\n", ":2:"),
    ("odp", "hello world\n", ":1:"),
    ("odp", '<?xml version="1.0"?>\n<RDF>\n<Topic r:id=Top/Arts>\n', ":3:"),
    ("odp", "\xff\xfe garbage", ":1:"),
])
def test_malformed_taxonomy_names_file_and_line(tmp_path, kind, body, where):
    f = tmp_path / "tax.txt"
    f.write_bytes(body.encode("latin-1"))
    with pytest.raises(InputError) as exc:
        list(open_source(f"{kind}:{f}")[0])
    assert str(f) + where in str(exc.value)


def test_missing_taxonomy_and_bad_source(tmp_path):
    with pytest.raises(InputError, match="not found"):
        open_source(f"odp:{tmp_path}/nope.rdf.u8")
    with pytest.raises(InputError, match="expected odp:PATH"):
        open_source("csv:x")
    with pytest.raises(InputError, match="unknown built-in taxonomy"):
        open_source("builtin:nope")
