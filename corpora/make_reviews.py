"""Write corpora/reviews/: a small labelled set of short reviews for the classifier demo.

Every review is built from clauses whose polarity the generator knows, so each label is
exact; but no single word gives it away:
  - sentiment words are negated ("not good", "never boring", "hardly worth the money"),
  - filler sentences about single aspects have a random polarity, unrelated to the label,
  - the label is the polarity of the one verdict sentence ("Overall, ...", "I would not
    recommend ...", "Although the plot was dull, I enjoyed it", "I expected to hate it,
    but I loved it"), which comes first or last.
Test rows use (verdict pattern, item) pairs that never occur in train, and no test text
occurs in train.

    python corpora/make_reviews.py                     # rewrites corpora/reviews/
    python corpora/make_reviews.py --out /tmp/reviews
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

SEED = 4321
LABELS = ("negative", "positive")  # index = polarity: 0 negative, 1 positive

ITEMS = {  # item -> aspects a reviewer talks about
    "film": ["acting", "plot", "soundtrack", "ending", "dialogue", "camera work", "pacing"],
    "book": ["writing", "characters", "ending", "plot", "cover", "first chapter"],
    "kettle": ["lid", "handle", "design", "price", "noise", "switch"],
    "pair of headphones": ["sound", "battery", "fit", "cable", "price", "case"],
    "backpack": ["zip", "straps", "colour", "pockets", "price", "material"],
    "coffee machine": ["coffee", "design", "price", "milk frother", "noise", "manual"],
    "board game": ["rules", "box", "artwork", "pieces", "price", "length"],
    "hotel": ["room", "staff", "breakfast", "view", "price", "bed"],
    "desk lamp": ["light", "switch", "design", "cable", "price", "base"],
    "album": ["songs", "singing", "production", "lyrics", "cover", "last track"],
}
POS = [
    "good",
    "great",
    "excellent",
    "wonderful",
    "enjoyable",
    "impressive",
    "pleasant",
    "brilliant",
    "lovely",
    "solid",
]
NEG = [
    "bad",
    "awful",
    "boring",
    "disappointing",
    "poor",
    "terrible",
    "dull",
    "annoying",
    "weak",
    "cheap",
]
INTENS = ["very", "really", "quite", "truly", "rather", "extremely"]
NEGATORS = ["not", "never", "hardly", "not at all"]  # each flips the polarity of its word


def be(aspect: str) -> str:
    """'the plot was', 'the songs were': every plural aspect here ends in s."""
    return "were" if aspect.endswith("s") else "was"


class Reviewer:
    def __init__(self, rng: random.Random):
        self.rng = rng

    def pick(self, items):
        return items[self.rng.randrange(len(items))]

    def judgement(self, polarity: int) -> str:
        """An adjective phrase meaning `polarity`: either a plain word of that polarity,
        maybe intensified, or a negated word of the opposite polarity."""
        if self.rng.random() < 0.5:
            word = self.pick(POS if polarity else NEG)
            return f"{self.pick(INTENS)} {word}" if self.rng.random() < 0.4 else word
        word = self.pick(NEG if polarity else POS)
        neg = self.pick(NEGATORS)
        return f"not {word} at all" if neg == "not at all" else f"{neg} {word}"

    def aspect_sentence(self, item: str, polarity: int) -> str:
        aspect = self.pick(ITEMS[item])
        j = self.judgement(polarity)
        it = "they were" if aspect.endswith("s") else "it was"
        return self.pick(
            [
                f"The {aspect} {be(aspect)} {j}.",
                f"I found the {aspect} {j}.",
                f"To be honest, the {aspect} {be(aspect)} {j}.",
                f"My friend thought the {aspect} {be(aspect)} {j}.",
                f"As for the {aspect}, {it} {j}.",
            ]
        )


# Verdict patterns: each takes (reviewer, item, label polarity) and returns a sentence
# whose meaning is exactly that polarity.
def v_overall(r: Reviewer, item: str, p: int) -> str:
    return (
        f"{r.pick(['Overall', 'All in all', 'In the end', 'On the whole'])}, "
        f"the {item} was {r.judgement(p)}."
    )


def v_recommend(r: Reviewer, item: str, p: int) -> str:
    if p:
        how = r.pick(
            ["would recommend", "would happily recommend", "would not hesitate to recommend"]
        )
    else:
        how = r.pick(["would not recommend", "would never recommend", "could not recommend"])
    return f"I {how} this {item} to {r.pick(['anyone', 'a friend', 'my family'])}."


def v_worth(r: Reviewer, item: str, p: int) -> str:
    cost = r.pick(["the money", "the price", "the wait"])
    if p:
        return r.pick(
            [
                f"It was well worth {cost}.",
                f"It was worth every penny of {cost}.",
                f"It was certainly worth {cost}.",
            ]
        )
    return r.pick(
        [f"It was hardly worth {cost}.", f"It was not worth {cost}.", f"It was never worth {cost}."]
    )


def v_expected(r: Reviewer, item: str, p: int) -> str:
    expected = r.rng.randrange(2)  # what the reviewer expected; the outcome decides the label
    exp = "love" if expected else "hate"
    if expected == p:
        got = "loved" if p else "hated"
        return f"I expected to {exp} this {item}, and I {got} it."
    got = "loved" if p else "hated"
    return f"I expected to {exp} this {item}, but I {got} it."


def v_although(r: Reviewer, item: str, p: int) -> str:
    aspect = r.pick(ITEMS[item])
    main = r.pick(
        [
            f"the {item} as a whole was {r.judgement(p)}",
            "I " + ("enjoyed it" if p else "did not enjoy it"),
            f"I was {'happy' if p else 'unhappy'} with it",
        ]
    )
    return f"Although the {aspect} {be(aspect)} {r.judgement(1 - p)}, {main}."


def v_but(r: Reviewer, item: str, p: int) -> str:
    aspect = r.pick(ITEMS[item])
    return (
        f"The {aspect} {be(aspect)} {r.judgement(1 - p)}, but in the end the {item} "
        f"was {r.judgement(p)}."
    )


def v_again(r: Reviewer, item: str, p: int) -> str:
    if p:
        return r.pick(
            [
                f"I would buy this {item} again.",
                f"I would gladly choose this {item} again.",
                f"I never regretted choosing this {item}.",
            ]
        )
    return r.pick(
        [
            f"I would never buy this {item} again.",
            f"I would not choose this {item} again.",
            f"I regretted choosing this {item}.",
        ]
    )


VERDICTS = [v_overall, v_recommend, v_worth, v_expected, v_although, v_but, v_again]
ITEM_NAMES = list(ITEMS)


def held_out(verdict: int, item: int) -> bool:
    """(verdict pattern, item) pairs kept for the test set only: one pair in five."""
    return (verdict + 3 * item) % 5 == 0


def review(r: Reviewer, polarity: int, test: bool, fillers: tuple[int, int] = (1, 3)) -> str:
    while True:
        v, i = r.rng.randrange(len(VERDICTS)), r.rng.randrange(len(ITEM_NAMES))
        if held_out(v, i) == test:
            break
    item = ITEM_NAMES[i]
    verdict = VERDICTS[v](r, item, polarity)
    # Fillers: random polarity, independent of the label.
    fill = [r.aspect_sentence(item, r.rng.randrange(2)) for _ in range(r.rng.randint(*fillers))]
    opener = r.pick(
        [
            f"I bought this {item} last month.",
            f"We tried this {item} at the weekend.",
            f"I had heard a lot about this {item}.",
            "",
            "",
            "",
        ]
    )
    parts = [verdict, *fill] if r.rng.random() < 0.3 else [*fill, verdict]
    return " ".join(x for x in [opener, *parts] if x)


def make_rows(r: Reviewer, n: int, test: bool, exclude: set[str]) -> list[tuple[str, str]]:
    """n distinct rows, exactly half of each label, none of whose texts is in `exclude`."""
    rows: list[tuple[str, str]] = []
    seen = set(exclude)
    while len(rows) < n:
        polarity = len(rows) % 2
        text = review(r, polarity, test)
        if text in seen:
            continue
        seen.add(text)
        rows.append((LABELS[polarity], text))
    r.rng.shuffle(rows)
    return rows


def write_tsv(path: Path, rows: list[tuple[str, str]]) -> None:
    lines = ["label\ttext"] + [f"{label}\t{text}" for label, text in rows]
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8"))


def write_reviews(out: Path, seed: int = SEED, n_train: int = 2000, n_test: int = 500) -> None:
    out.mkdir(parents=True, exist_ok=True)
    train = make_rows(Reviewer(random.Random(seed)), n_train, test=False, exclude=set())
    train_texts = {t for _, t in train}
    test = make_rows(Reviewer(random.Random(seed + 1)), n_test, test=True, exclude=train_texts)
    write_tsv(out / "train.tsv", train)
    write_tsv(out / "test.tsv", test)
    # Unlabelled reviews for LM fine-tuning (ULMFiT stage 2): longer, one per paragraph,
    # never a test text.
    r = Reviewer(random.Random(seed + 2))
    test_texts = {t for _, t in test}
    paras: list[str] = []
    size = 0
    while size < 150_000:
        text = review(r, r.rng.randrange(2), test=False, fillers=(2, 5))
        if text in test_texts:
            continue
        paras.append(text)
        size += len(text) + 2
    (out / "unlabelled.txt").write_bytes(("\n\n".join(paras) + "\n").encode("utf-8"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "reviews")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    write_reviews(args.out, args.seed)
    print(f"wrote {args.out}/train.tsv, test.tsv, unlabelled.txt")


if __name__ == "__main__":
    main()
