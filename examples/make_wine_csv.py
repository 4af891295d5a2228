"""Write wine.csv: scikit-learn's bundled wine data (178 rows, 13 features, 3 cultivars).

Features are standardised (z-scores) because lrsearch trains on the columns as given; the
target is text ("cultivar_a"...) to show that text labels become classes. Run from anywhere:

    python examples/make_wine_csv.py            # writes examples/wine.csv
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from sklearn.datasets import load_wine

OUT = Path(__file__).with_name("wine.csv")


def main() -> None:
    """Standardise the features and write one headed CSV row per wine."""
    bunch = load_wine()
    x = (bunch.data - bunch.data.mean(axis=0)) / bunch.data.std(axis=0)
    labels = [f"cultivar_{'abc'[int(i)]}" for i in bunch.target]
    header = [name.replace("/", "_") for name in bunch.feature_names] + ["cultivar"]
    with OUT.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row, label in zip(np.round(x, 4), labels, strict=True):
            writer.writerow([f"{v:.4f}" for v in row] + [label])
    print(f"wrote {OUT} ({len(labels)} rows)")


if __name__ == "__main__":
    main()
