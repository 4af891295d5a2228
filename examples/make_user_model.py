"""Write user_model.json: a small Keras Sequential for the 8x8 digits, as `model.to_json()`.

lrsearch loads it in safe mode (no Lambda layers) and searches only the learning-rate
strategy; the architecture stays yours. Regenerate with:

    python examples/make_user_model.py          # writes examples/user_model.json
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("user_model.json")


def build() -> Any:
    """8x8 inputs -> 10 softmax outputs (the digits classes)."""
    import keras

    return keras.Sequential(
        [
            keras.Input(shape=(8, 8)),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dropout(0.1),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="digits_user_model",
    )


def main() -> None:
    """Serialise the architecture (no weights: every trial starts from a fresh seed)."""
    OUT.write_text(build().to_json() + "\n", encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
