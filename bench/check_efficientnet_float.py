"""Check the zoo's float EfficientNet-Lite0 on the bundled photos: top-5 ImageNet classes.

For each photo (centre crop) it prints the top-5 classes of the zoo's ONNX model with the zoo
preprocessing ((x - 127) / 128). Then, on 8 crops each of the photos whose ImageNet classes are
known (cat, espresso, tripod, moped, missile, uniform, palace, daisy), it compares the mean log
probability of the right classes under the zoo's choice and the alternatives (ImageNet
mean/std, x/255, PyTorch symmetric padding instead of TF "same" padding), so a wrong model
definition or preprocessing shows up as a lower score. It exits non-zero if the cat photo's
top-5 has no cat class or the coffee photo's no espresso/cup.

Usage: .venv/bin/python bench/check_efficientnet_float.py
"""

from __future__ import annotations

import sys
import time

import numpy as np
import onnxruntime as ort
import torch

from irq.zoo import efficientnet, get, photos
from irq.zoo.efficientnet_lite import SameConv2d, load_pretrained

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def symmetric_padding_model() -> torch.nn.Module:
    """The same weights with PyTorch-style symmetric padding k//2 (the wrong alternative)."""
    model = load_pretrained()
    for m in model.modules():
        if isinstance(m, SameConv2d):
            m._explicit_pad = None
            m.padding = (m.kernel_size[0] // 2,) * 2
    return model


TARGETS = {"chelsea": ("tabby", "tiger cat", "Egyptian cat"), "coffee": ("espresso", "cup"),
           "camera": ("tripod",), "motorcycle": ("moped", "motor scooter"),
           "rocket": ("missile", "projectile", "space shuttle"), "grace_hopper": ("military uniform",),
           "china": ("palace", "monastery"), "flower": ("daisy",)}


def class_ids(words: tuple[str, ...]) -> list[int]:
    return [i for i, c in enumerate(efficientnet.imagenet_classes()) if c.split(", ")[0] in words]


def print_top5(sess: ort.InferenceSession) -> np.ndarray:
    classes = [c.split(",")[0] for c in efficientnet.imagenet_classes()]
    names = photos.photo_names()
    crops = np.stack([photos.center_crop(photos.load_photo(n), efficientnet.SIZE) for n in names])
    probs = softmax(sess.run(None, {"input": efficientnet.preprocess(crops)})[0])
    for name, p in zip(names, probs, strict=True):
        top = np.argsort(p)[::-1][:5]
        print(f"{name:22s} " + ", ".join(f"{classes[i]} {p[i]:.2f}" for i in top))
    return probs


def compare_variants(sess: ort.InferenceSession) -> None:
    per_photo = 8
    crops = np.concatenate([photos.crops((n,), per_photo, efficientnet.SIZE, seed=0) for n in TARGETS])
    nchw = crops.astype(np.float32).transpose(0, 3, 1, 2)
    zoo_x = efficientnet.preprocess(crops)
    imagenet_x = (nchw - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[:, None, None]
    with torch.no_grad():
        torch_p = load_pretrained()(torch.from_numpy(zoo_x)).softmax(1).numpy()
        variants = {
            "zoo: TF same pad, (x-127)/128": softmax(sess.run(None, {"input": zoo_x})[0]),
            "TF same pad, ImageNet mean/std": softmax(sess.run(None, {"input": imagenet_x})[0]),
            "TF same pad, x/255": softmax(sess.run(None, {"input": nchw / 255})[0]),
            "symmetric pad, (x-127)/128": symmetric_padding_model()(torch.from_numpy(zoo_x))
            .softmax(1).numpy(),
        }
    zoo_p = variants["zoo: TF same pad, (x-127)/128"]
    print(f"max |ONNX - torch| probability: {np.abs(torch_p - zoo_p).max():.2e}")
    print(f"{len(crops)} crops of {len(TARGETS)} photos with known classes:")
    for label, p in variants.items():
        scores, hits = [], 0
        for j, words in enumerate(TARGETS.values()):
            ids = class_ids(words)
            pj = p[j * per_photo:(j + 1) * per_photo]
            scores.append(np.log(pj[:, ids].sum(axis=1) + 1e-9).mean())
            hits += sum(bool(np.isin(np.argsort(r)[::-1][:5], ids).any()) for r in pj)
        print(f"  {label:32s} mean log p(right class) {np.mean(scores):6.3f}, "
              f"right class in top-5 {hits}/{len(p)}, mean top-1 prob {p.max(axis=1).mean():.3f}")


def main() -> int:
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    zoo = get("efficientnet-lite0")
    print(f"ONNX ready in {time.perf_counter() - t0:.1f} s: {zoo.onnx_path}")
    sess = ort.InferenceSession(str(zoo.onnx_path), providers=["CPUExecutionProvider"])
    probs = print_top5(sess)
    compare_variants(sess)
    names = photos.photo_names()

    def top5(name: str) -> set[int]:
        return set(np.argsort(probs[names.index(name)])[::-1][:5].tolist())

    ok = bool(top5("chelsea") & set(class_ids(TARGETS["chelsea"]))) and bool(
        top5("coffee") & set(class_ids(("espresso", "cup", "coffee mug"))))
    print("check:", "OK" if ok else "FAILED (cat photo without cat class, or coffee without espresso/cup)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
