"""The shipped corpora: reproducible from their generators, the right shape, and a labelled
set whose labels a keyword rule cannot read off."""

from __future__ import annotations

import hashlib
import importlib.util
import re
from pathlib import Path

import pytest

CORPORA = Path(__file__).resolve().parent.parent / "corpora"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, CORPORA / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _rows(path: Path) -> list[tuple[str, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "label\ttext"
    rows = [tuple(line.split("\t")) for line in lines[1:]]
    assert all(len(r) == 2 for r in rows), "every row is label<TAB>text"
    return rows  # type: ignore[return-value]


def test_demo_script_reproduces_committed_files(tmp_path):
    _load("make_demo").write_demo(tmp_path / "demo")
    fresh, committed = _digests(tmp_path / "demo"), _digests(CORPORA / "demo")
    assert fresh == committed, "corpora/demo is stale: run python corpora/make_demo.py"


def test_reviews_script_reproduces_committed_files(tmp_path):
    _load("make_reviews").write_reviews(tmp_path / "reviews")
    fresh, committed = _digests(tmp_path / "reviews"), _digests(CORPORA / "reviews")
    assert fresh == committed, "corpora/reviews is stale: run python corpora/make_reviews.py"


def test_dates_script_reproduces_committed_files(tmp_path):
    _load("make_dates").write_dates(tmp_path / "dates")
    fresh, committed = _digests(tmp_path / "dates"), _digests(CORPORA / "dates")
    assert fresh == committed, "corpora/dates is stale: run python corpora/make_dates.py"


def test_dates_test_pairs_are_held_out():
    def targets(name):
        lines = (CORPORA / "dates" / name).read_text(encoding="utf-8").splitlines()
        assert lines[0] == "source\ttarget"
        return {line.split("\t")[1] for line in lines[1:]}

    assert len(targets("train.tsv")) == 3000 and len(targets("test.tsv")) == 300
    assert not targets("train.tsv") & targets("test.tsv")


def test_demo_corpus_shape():
    files = sorted((CORPORA / "demo").rglob("*.txt"))
    assert len(files) >= 100
    total = sum(f.stat().st_size for f in files)
    assert 400_000 <= total <= 800_000
    texts = [f.read_bytes() for f in files]
    assert all(t.isascii() for t in texts)
    # Documents have several paragraphs (the default document unit), and vary.
    paragraphs = [p for t in texts for p in t.decode().split("\n\n") if p.strip()]
    assert len(paragraphs) >= 3 * len(files)
    long = [p for p in paragraphs if len(p) > 200]
    assert len(long) > len(files) and len(set(long)) > 0.95 * len(long)
    words = re.findall(r"[a-z]+", b" ".join(texts).decode().lower())
    assert len(set(words)) > 800, "a vocabulary big enough to be interesting"


def test_reviews_are_balanced_and_test_is_held_out():
    train = _rows(CORPORA / "reviews" / "train.tsv")
    test = _rows(CORPORA / "reviews" / "test.tsv")
    assert len(train) == 2000 and len(test) == 500
    for rows in (train, test):
        labels = [label for label, _ in rows]
        assert labels.count("positive") == labels.count("negative")
        assert len({text for _, text in rows}) == len(rows)
    assert not {t for _, t in train} & {t for _, t in test}
    unlabelled = (CORPORA / "reviews" / "unlabelled.txt").read_text(encoding="utf-8")
    assert 100_000 <= len(unlabelled) <= 200_000
    assert not {t for _, t in test} & set(unlabelled.split("\n\n"))


@pytest.mark.parametrize("split", ["train", "test"])
def test_a_keyword_rule_cannot_read_the_labels(split):
    """Sentiment words occur in both classes (negated, in fillers), so "positive iff a
    positive word occurs" and "more positive than negative words" are near chance."""
    gen = _load("make_reviews")
    pos, neg = set(gen.POS), set(gen.NEG) | {"not", "never", "hardly"}
    rows = _rows(CORPORA / "reviews" / f"{split}.tsv")

    def accuracy(rule) -> float:
        hits = 0
        for label, text in rows:
            words = re.findall(r"[a-z]+", text.lower())
            hits += rule(words) == (label == "positive")
        return hits / len(rows)

    any_positive = accuracy(lambda ws: any(w in pos for w in ws))
    majority = accuracy(lambda ws: sum(w in pos for w in ws) > sum(w in neg for w in ws))
    assert any_positive < 0.7 and majority < 0.7
    # Yet the words are there in both classes: the same positive words occur in negatives.
    negative_words = {w for label, t in rows if label == "negative" for w in t.lower().split()}
    assert pos & negative_words


def _judgement(phrase: str, pos: set[str], neg: set[str]) -> bool:
    """Polarity of 'very good', 'not bad at all', 'hardly boring': the word, flipped once
    by a negator."""
    words = phrase.split()
    word = next(w for w in words if w in pos or w in neg)
    return (word in pos) != any(w in ("not", "never", "hardly") for w in words)


def _read_verdict(text: str, pos: set[str], neg: set[str]) -> bool:
    """A reader of the generator's grammar: find the verdict sentence, work out its meaning."""
    for s in re.split(r"(?<=\.) ", text):
        s = s.rstrip(".")
        if m := re.match(r"I expected to \w+ this .+?, (?:and|but) I (loved|hated) it", s):
            return m.group(1) == "loved"
        if "recommend" in s:
            return "not hesitate" in s or not re.search(r"not recommend|never recommend", s)
        if " worth " in s:
            return not re.search(r"(hardly|not|never) worth", s)
        if s.endswith(" again") or "regretted" in s:
            return not re.search(r"never buy|not choose|^I regretted", s)
        if s.startswith("Although"):
            main = s.split(", ", 1)[1]
            if main.startswith("the "):
                return _judgement(main.split(" was ", 1)[1], pos, neg)
            return main in ("I enjoyed it", "I was happy with it")
        if m := re.match(r"(?:.* but in the end|Overall,|All in all,|In the end,|On the whole,)"
                         r" the .+? was (.+)$", s):
            return _judgement(m.group(1), pos, neg)
    raise AssertionError(f"no verdict in {text!r}")


@pytest.mark.parametrize("split", ["train", "test"])
def test_labels_follow_from_the_meaning_of_the_verdict(split):
    """Where keywords fail, reading the sentences as the grammar means them gives every
    label: the labels are exact, and learnable."""
    gen = _load("make_reviews")
    pos, neg = set(gen.POS), set(gen.NEG)
    rows = _rows(CORPORA / "reviews" / f"{split}.tsv")
    wrong = [(label, t) for label, t in rows if _read_verdict(t, pos, neg) != (label == "positive")]
    assert not wrong, wrong[:3]
