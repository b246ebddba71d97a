"""Write corpora/dates/: source/target pairs for the sequence-to-sequence demo, dates
written as people write them ("the 3rd of March, 2021", "Mar 3 2021", "3.3.21") and
their ISO form ("2021-03-03"). A transduction a tiny encoder–decoder learns in CPU
minutes, which needs the whole source (the year comes last, the month first).
Test dates never occur in train.

    python corpora/make_dates.py                   # rewrites corpora/dates/
    python corpora/make_dates.py --out /tmp/dates
"""

from __future__ import annotations

import argparse
import datetime
import random
from pathlib import Path

SEED = 1717
TRAIN, TEST = 3000, 300
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def written(d: datetime.date, style: int) -> str:
    month, short = MONTHS[d.month - 1], MONTHS[d.month - 1][:3]
    return [
        f"{d.day} {month} {d.year}",
        f"{month} {d.day}, {d.year}",
        f"the {ordinal(d.day)} of {month}, {d.year}",
        f"{short} {d.day} {d.year}",
        f"{d.day}.{d.month}.{d.year % 100:02d}",
        f"{month} {ordinal(d.day)} {d.year}",
    ][style]


def write_dates(out: Path) -> None:
    rng = random.Random(SEED)
    start = datetime.date(1950, 1, 1).toordinal()
    days = rng.sample(range(start, datetime.date(2049, 12, 31).toordinal()), TRAIN + TEST)
    out.mkdir(parents=True, exist_ok=True)
    for name, chunk in (("train.tsv", days[:TRAIN]), ("test.tsv", days[TRAIN:])):
        rows = ["source\ttarget"]
        for day in chunk:
            d = datetime.date.fromordinal(day)
            rows.append(f"{written(d, rng.randrange(6))}\t{d.isoformat()}")
        (out / name).write_text("\n".join(rows) + "\n", encoding="utf-8")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "dates")
    write_dates(parser.parse_args().out)
