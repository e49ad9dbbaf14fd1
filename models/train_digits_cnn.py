"""Train the demo model: smpc.model.zoo.DigitsCNN on scikit-learn's bundled 8x8 digits.

Writes models/digits_cnn.safetensors (the model owner's weights) and
data/digits-test.safetensors (the data owner's held-out split: 360 images with
labels). Deterministic: fixed seeds, one thread. Run: python models/train_digits_cnn.py
"""

from pathlib import Path

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from smpc.artifacts import save_data, save_weights
from smpc.model.zoo import DigitsCNN

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    idx_train, idx_test = train_test_split(range(len(y)), test_size=0.2, random_state=0, stratify=digits.target)
    x_train, y_train, x_test, y_test = x[idx_train], y[idx_train], x[idx_test], y[idx_test]

    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _epoch in range(30):
        model.train()
        perm = torch.randperm(len(x_train))
        for i in range(0, len(perm), 64):
            b = perm[i : i + 64]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x_train[b]), y_train[b])
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(x_test).argmax(1) == y_test).float().mean().item()
    print(f"held-out accuracy {acc:.4f} on {len(y_test)} images")
    save_weights(model, ROOT / "models" / "digits_cnn.safetensors")
    save_data(ROOT / "data" / "digits-test.safetensors", x_test, y_test)


if __name__ == "__main__":
    main()
