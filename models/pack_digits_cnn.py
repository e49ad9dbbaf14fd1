"""Pack the demo model as a calibrated program directory: models/digits-cnn/.

The digits CNN with bob's trained weights (models/digits_cnn.safetensors), converted for
batches of 60 rows (the demo's), and calibrated by its owner on the training split (never
on the held-out digits alice holds). configs/local-2pc-fss.yaml runs it: with
`comparisons: fss` the calibration lets its ReLUs compare on 23 to 26 bits instead of the
ring's 64 (keys about 800 bytes a comparison instead of 2 KiB). The graph, constants and
calibration are public (every party reads them); the weights file is bob's. Deterministic.

    python models/pack_digits_cnn.py [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from smpc import artifacts
from smpc.model import owner, pack, zoo

ROOT = Path(__file__).resolve().parent.parent
BATCH = 60  # configs/local-2pc-fss.yaml's batch_size
CALIBRATION_ROWS = 600


def training_images() -> torch.Tensor:
    """The training split of train_digits_cnn.py (the same seeds), as the model saw it."""
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    train, _ = train_test_split(range(len(x)), test_size=0.2, random_state=0, stratify=digits.target)
    return x[train]


def main(out: Path) -> None:
    torch.manual_seed(0)
    model = zoo.build("digits_cnn")
    artifacts.load_weights(model, ROOT / "models" / "digits_cnn.safetensors")
    pack.pack(model.eval(), (torch.zeros(BATCH, 1, 8, 8),), out, buckets=False)
    with tempfile.TemporaryDirectory() as tmp:
        samples = Path(tmp) / "samples.safetensors"
        artifacts.save_inputs(samples, {"inputs": training_images()[:CALIBRATION_ROWS]})
        owner.calibrate_directory(out, samples)
    print(f"wrote {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "models" / "digits-cnn")
    main(parser.parse_args().out)
