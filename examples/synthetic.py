"""A deterministic synthetic dataset with the challenge's exact schema, generated in about a second.

Run ``python examples/synthetic.py DIR`` to write ``train.csv``, ``test.csv`` and
``challenge_data.csv`` into ``DIR``; ``examples/challenge.py`` without ``--data`` trains on it.

The structure imitates what makes the real data learnable:

- **series**: most challenges belong to a series (``challenge_series_ID``) and users who solve one
  challenge of a series often go on with the next one;
- **popularity skew**: series popularity follows a Zipf law, and earlier challenges of a series are
  more popular than later ones (``total_submissions`` is a noisy count of that popularity);
- **user taste**: each user prefers one programming language and is more likely to jump to a
  series in it, so item metadata carries signal.

Users never solve a challenge twice. Line endings are CRLF, as in the published files.
"""

from __future__ import annotations

import argparse
import csv
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np

from challenge_data import CHALLENGE_COLUMNS, SEQUENCE_COLUMNS

__all__ = ["SyntheticConfig", "generate", "write_dataset"]


@dataclass(frozen=True)
class SyntheticConfig:
    """Sizes and behaviour of the generated dataset (the defaults make the built-in dataset)."""

    num_series: int = 50
    num_loose_items: int = 80
    """Challenges that belong to no series."""
    num_train_users: int = 2000
    num_test_users: int = 500
    history_len: int = 10
    horizon: int = 3
    num_languages: int = 3
    p_continue: float = 0.65
    """Probability of moving on to the next challenge of the current series."""
    p_taste: float = 0.7
    """Probability that a jump goes to a series in the user's preferred language."""
    zipf: float = 1.1
    seed: int = 0


@dataclass(frozen=True)
class _Catalogue:
    ids: list[str]
    series: np.ndarray  # series index of each item, -1 for loose items
    next_in_series: np.ndarray  # item index of the next challenge of the series, -1 at the end
    language: np.ndarray
    popularity: np.ndarray  # unnormalized


def _catalogue(cfg: SyntheticConfig, rng: np.random.Generator) -> _Catalogue:
    sizes = rng.integers(3, 16, size=cfg.num_series)
    series_pop = 1.0 / np.arange(1, cfg.num_series + 1) ** cfg.zipf
    series_lang = rng.integers(1, cfg.num_languages + 1, size=cfg.num_series)
    series: list[int] = []
    nxt: list[int] = []
    language: list[int] = []
    popularity: list[float] = []
    for s, size in enumerate(sizes):
        start = len(series)
        for j in range(size):
            series.append(s)
            nxt.append(start + j + 1 if j + 1 < size else -1)
            language.append(series_lang[s])
            popularity.append(series_pop[s] * 0.8**j)
    loose_pop = rng.pareto(2.0, size=cfg.num_loose_items) * series_pop.mean() * 0.3
    for p in loose_pop:
        series.append(-1)
        nxt.append(-1)
        language.append(int(rng.integers(1, cfg.num_languages + 1)))
        popularity.append(p)
    # Item IDs in a shuffled order, so that an item's ID says nothing about its series.
    order = rng.permutation(len(series))
    ids = [f"CI{23478 + int(k)}" for k in np.argsort(order)]
    return _Catalogue(
        ids=ids,
        series=np.array(series),
        next_in_series=np.array(nxt),
        language=np.array(language),
        popularity=np.array(popularity),
    )


def _user_sequence(
    cat: _Catalogue, length: int, cfg: SyntheticConfig, rng: np.random.Generator
) -> list[int]:
    taste = int(rng.integers(1, cfg.num_languages + 1))
    weights = cat.popularity * np.where(cat.language == taste, 1.0, 1.0 - cfg.p_taste)
    weights = weights * np.where(cat.series >= 0, 1.0, 0.5)
    seq: list[int] = []
    current = -1
    while len(seq) < length:
        nxt = cat.next_in_series[current] if current >= 0 else -1
        if nxt >= 0 and nxt not in seq and rng.random() < cfg.p_continue:
            current = int(nxt)
        else:
            w = weights.copy()
            w[seq] = 0.0
            current = int(rng.choice(len(w), p=w / w.sum()))
        seq.append(current)
    return seq


def generate(cfg: SyntheticConfig | None = None) -> dict[str, list[list[str]]]:
    """The rows (header first) of ``train.csv``, ``test.csv`` and ``challenge_data.csv``.

    Train users have ``history_len + horizon`` challenges (13 by default, as in the original
    challenge) and test users ``history_len``. The same configuration gives the same rows.

    Example:
        >>> files = generate(SyntheticConfig(num_train_users=3, num_test_users=1))
        >>> files["train.csv"][0]
        ['user_sequence', 'user_id', 'challenge_sequence', 'challenge']
        >>> len(files["train.csv"]), len(files["test.csv"])
        (40, 11)
    """
    cfg = cfg or SyntheticConfig()
    rng = np.random.default_rng(cfg.seed)
    cat = _catalogue(cfg, rng)
    header = list(SEQUENCE_COLUMNS)
    files: dict[str, list[list[str]]] = {"train.csv": [header], "test.csv": [header]}
    user_ids = rng.permutation(cfg.num_train_users + cfg.num_test_users) + 1
    for i, user in enumerate(user_ids):
        is_test = i >= cfg.num_train_users
        length = cfg.history_len + (0 if is_test else cfg.horizon)
        rows = files["test.csv" if is_test else "train.csv"]
        for pos, item in enumerate(_user_sequence(cat, length, cfg, rng), start=1):
            rows.append([f"{user}_{pos}", str(user), str(pos), cat.ids[item]])

    num_authors = max(1, cfg.num_series // 2)
    author_of_series = rng.integers(0, num_authors, size=cfg.num_series)
    org_of_author = rng.integers(0, max(1, num_authors // 3), size=num_authors)
    category_of_series = rng.integers(1, 30, size=cfg.num_series)
    first_day = date(2002, 1, 1)
    series_day = rng.integers(0, 5000, size=cfg.num_series)
    catalogue = [list(CHALLENGE_COLUMNS)]
    total = cat.popularity / cat.popularity.max() * 2000
    for k in np.argsort(cat.ids):
        s = int(cat.series[k])
        author = int(author_of_series[s]) if s >= 0 else int(rng.integers(0, num_authors))
        day = (int(series_day[s]) if s >= 0 else int(rng.integers(0, 5000))) + int(k % 7)
        catalogue.append(
            [
                cat.ids[k],
                str(cat.language[k]),
                f"SI{2400 + s}" if s >= 0 else "",
                str(int(rng.poisson(total[k] + 1))) if rng.random() > 0.05 else "",
                (first_day + timedelta(days=day)).strftime("%d-%m-%Y"),
                f"AI{563000 + author}",
                "MF"[author % 2],
                f"AOI{100000 + int(org_of_author[author])}",
                str(int(category_of_series[s])) if s >= 0 and rng.random() > 0.3 else "",
            ]
        )
    files["challenge_data.csv"] = catalogue
    return files


def write_dataset(out_dir: Path, cfg: SyntheticConfig | None = None) -> None:
    """Write the generated ``train.csv``, ``test.csv`` and ``challenge_data.csv`` to ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in generate(cfg).items():
        with (out_dir / name).open("w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(rows)  # csv's default line ending is CRLF


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="directory to write the three CSV files into")
    parser.add_argument("--train-users", type=int, default=SyntheticConfig.num_train_users)
    parser.add_argument("--test-users", type=int, default=SyntheticConfig.num_test_users)
    parser.add_argument("--seed", type=int, default=SyntheticConfig.seed)
    args = parser.parse_args()
    cfg = SyntheticConfig(
        num_train_users=args.train_users, num_test_users=args.test_users, seed=args.seed
    )
    write_dataset(args.out_dir, cfg)
    print(f"wrote train.csv, test.csv and challenge_data.csv into {args.out_dir}")


if __name__ == "__main__":
    main()
