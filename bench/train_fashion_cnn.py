"""Train the zoo's fashion-cnn on Fashion-MNIST and write its shipped files.

Reads the full data set from the Debian package ``dataset-fashion-mnist``
(/usr/share/datasets/fashion-mnist), trains on CPU with 2 threads and fixed seeds, and writes
into irq/zoo/data/:

- fashion_cnn.onnx        opset 17, input ``input`` (N, 1, 28, 28), output ``logits`` (N, 10)
- fashion_test_1000.npz   1,000 test images (``x`` NCHW float32, preprocessed; ``y`` int64)
- fashion_calib_500.npz   500 training images, same layout

Preprocessing: x/255 then (x - 0.2860) / 0.3530 (irq.zoo.fashion.preprocess).

The network is conv-BN-ReLU-maxpool three times (32, 64, 128 channels), then a 128-unit
hidden linear layer with dropout and a 10-way classifier: 242k parameters. Exported in eval
mode with torch's TorchScript exporter (dynamo=False), which folds each BatchNorm into the
convolution before it; the ONNX file therefore holds Conv/Relu/MaxPool/Gemm only.

Usage: .venv/bin/python bench/train_fashion_cnn.py [--epochs 6] [--out irq/zoo/data]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from irq.data import DataSet, load_npz, save_npz
from irq.zoo import fashion

SEED = 20240611


class FashionCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 1
        for cout in (32, 64, 128):
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(128 * 3 * 3, 128), nn.ReLU(inplace=True),
                                        nn.Dropout(0.3), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + 1000]).argmax(1) for i in range(0, len(x), 1000)])
    return float((pred == y).float().mean())


def train(epochs: int, batch: int) -> tuple[FashionCNN, torch.Tensor, torch.Tensor]:
    train_images, train_labels = fashion.load_raw("train")
    test_images, test_labels = fashion.load_raw("test")
    x = torch.from_numpy(fashion.preprocess(train_images))
    y = torch.from_numpy(train_labels)
    xt = torch.from_numpy(fashion.preprocess(test_images))
    yt = torch.from_numpy(test_labels)

    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    model = FashionCNN()
    print(f"parameters: {sum(p.numel() for p in model.parameters()):,}")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=5e-4)
    steps = epochs * ((len(x) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.2)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    for epoch in range(epochs):
        model.train()
        t0 = time.perf_counter()
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            xb = x[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), y[idx])
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        print(f"epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f}, "
              f"test acc {accuracy(model, xt, yt):.4f} ({time.perf_counter() - t0:.1f} s)")
    return model, xt, yt


def export(model: nn.Module, path: Path) -> None:
    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, (torch.zeros(1, 1, 28, 28),), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})


def write_subsets(out: Path) -> None:
    rng = np.random.default_rng(SEED)
    test_images, test_labels = fashion.load_raw("test")
    train_images, train_labels = fashion.load_raw("train")
    ti = np.sort(rng.choice(len(test_images), 1000, replace=False))
    ci = np.sort(rng.choice(len(train_images), 500, replace=False))
    save_npz(out / fashion.TEST_SUBSET.name,
             DataSet({"x": fashion.preprocess(test_images[ti])}, test_labels[ti]))
    save_npz(out / fashion.CALIB_SUBSET.name,
             DataSet({"x": fashion.preprocess(train_images[ci])}, train_labels[ci]))


def check_onnx(path: Path, xt: torch.Tensor, yt: torch.Tensor) -> None:
    import onnx
    import onnxruntime as ort

    ops = sorted({n.op_type for n in onnx.load(str(path)).graph.node})
    print(f"ONNX ops: {ops}")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = np.concatenate([sess.run(None, {"input": xt[i:i + 1000].numpy()})[0]
                             for i in range(0, len(xt), 1000)])
    print(f"ONNX test accuracy (10k): {(logits.argmax(1) == yt.numpy()).mean():.4f}")
    sub = load_npz(path.parent / fashion.TEST_SUBSET.name)
    sub_logits = sess.run(None, {"input": np.asarray(sub.inputs["x"])})[0]
    print(f"ONNX test accuracy (shipped 1k): {(sub_logits.argmax(1) == sub.labels).mean():.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--out", type=Path, default=fashion.DATA_DIR)
    args = parser.parse_args()
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    model, xt, yt = train(args.epochs, args.batch)
    export(model, args.out / fashion.ONNX_PATH.name)
    write_subsets(args.out)
    check_onnx(args.out / fashion.ONNX_PATH.name, xt, yt)
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
