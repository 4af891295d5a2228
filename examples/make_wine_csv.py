"""Write wine.csv: scikit-learn's bundled wine data (178 rows, 13 features, 3 cultivars).

Features are the raw measurements (proline in the hundreds, hue around 1): the study spec
asks lrsearch to standardise them (`task.preprocess.standardize`, statistics of the training
split only). The target is text ("cultivar_a"...) to show that text labels become classes.
Run from anywhere:

    python examples/make_wine_csv.py            # writes examples/wine.csv
"""

from __future__ import annotations

import csv
from pathlib import Path

from sklearn.datasets import load_wine

OUT = Path(__file__).with_name("wine.csv")


def main() -> None:
    """Write one headed CSV row per wine, features as measured."""
    bunch = load_wine()
    labels = [f"cultivar_{'abc'[int(i)]}" for i in bunch.target]
    header = [name.replace("/", "_") for name in bunch.feature_names] + ["cultivar"]
    with OUT.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row, label in zip(bunch.data, labels, strict=True):
            writer.writerow([f"{v:g}" for v in row] + [label])
    print(f"wrote {OUT} ({len(labels)} rows)")


if __name__ == "__main__":
    main()
