"""The cached stages of one job: import, data, and the target pipeline with cached calibration.

The target pipeline is run in three parts: the passes before ``calibrate``, ``calibrate``
itself, and the rest. Calibration is the expensive part and depends on much less than the
artifact does: the graph as ``calibrate`` sees it, the calibration data, the pass's options
and the calibration method. Its result (``QModel.ranges`` and the calibration note) is cached
under a key made of exactly those, so targets that differ only after calibration (onnx-int8
and onnx-int8-arm: the activation dtype does not change a min/max range) or recipes that only
change layer rules share one calibration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from irq.batch.keys import bytes_digest, file_digest, module_source, stage_key
from irq.batch.schema import DataRef, ModelRef
from irq.batch.store import Store
from irq.data import DataSet, load_data
from irq.errors import IrqError, ModelImportError
from irq.ir.findings import CalibrationSummary
from irq.ir.model import QModel
from irq.pipeline.infra import Instrument, Pass
from irq.pipeline.recipe import Recipe
from irq.pipeline.registry import parse_pipeline
from irq.pipeline.targets import Target
from irq.quant.spec import TensorRange


@dataclass
class StageLog:
    """Which stages of a job were computed ("ran") and which were read from the cache ("hit")."""

    stages: dict[str, str] = field(default_factory=dict)


def source_key(model: ModelRef, python_path: tuple[Path, ...] = ()) -> str:
    """The key of a model's import: the file's bytes, or for module:function its source file's.

    A callable is keyed by its module's source text, not by running it: a module that loads
    weights from elsewhere must change its source (or the cache be cleared) to be re-imported.
    Likewise an ONNX file's external-data files are not part of the key, only the .onnx file.
    """
    if model.kind == "callable":
        return stage_key("import", spec=model.spec, source=file_digest(module_source(model.spec, python_path)))
    return stage_key("import", bytes=file_digest(model.onnx_path()))


def import_stage(store: Store, model: ModelRef, log: StageLog,
                 python_path: tuple[Path, ...] = ()) -> tuple[QModel, str]:
    """The imported QModel and the SHA-256 of its serialized bytes (its identity downstream)."""
    from irq.batch.stamps import import_what, model_files, remember, stamp_key
    from irq.frontends import import_model
    from irq.frontends.onnx_file import from_proto

    what = import_what(model)
    stamp = stamp_key(what, model_files(model, python_path))  # before hashing: see irq.batch.stamps
    key = source_key(model, python_path)
    remember(store, stamp, what, key)
    meta = store.read_json("imports", key)
    if meta is None:
        with store.lock("imports", key):
            meta = store.read_json("imports", key)
            if meta is None:
                qmodel = import_model(model.spec if model.kind != "zoo" else str(model.onnx_path()))
                data = qmodel.to_bytes()
                store.write_bytes("imports", key, ".onnx", data)
                meta = {"name": qmodel.name, "sha256": bytes_digest(data), "source": model.spec}
                store.write_json("imports", key, meta)  # written last: it commits the entry
                log.stages["import"] = "ran"
                return qmodel, meta["sha256"]
    data = store.path("imports", key, ".onnx").read_bytes()
    if bytes_digest(data) != meta["sha256"]:
        raise ModelImportError(f"{store.path('imports', key, '.onnx')}: cached import is corrupt "
                               "(hash mismatch); delete it and rerun")
    log.stages.setdefault("import", "hit")
    return from_proto(onnx.load_from_string(data), meta["name"]), meta["sha256"]


def load_ref(ref: DataRef | None, role: str) -> DataSet | None:
    """The data set a reference names (zoo data or a file/folder), first ``samples`` only."""
    if ref is None:
        return None
    if ref.zoo:
        from irq import zoo

        return (zoo.calibration_data if role == "calibration" else zoo.eval_data)(ref.zoo, ref.samples)
    data = load_data(ref.path)  # type: ignore[arg-type]
    return data.head(ref.samples) if ref.samples else data


#: Backends that never read the calibration data themselves (only the calibrate pass does).
#: TFLite (representative dataset, onnx2tf's sample images) and Core ML read it while lowering.
_BACKENDS_WITHOUT_DATA = frozenset({"onnx"})


def calibration_matters(target: Target, pipeline: str | None) -> bool:
    """Whether the calibration data can change the job's artifact (only then is it in the key)."""
    from irq.pipeline.prepare import reads_calibration

    if target.backend not in _BACKENDS_WITHOUT_DATA:
        return True
    return reads_calibration(parse_pipeline(pipeline or target.pipeline))


@dataclass
class StoredCalibrations:
    """The prepare stage's calibration cache, kept in the batch store and shared by workers.

    ``wait=False``: when another worker is calibrating the same thing, raise EntryBusy
    rather than hold this worker idle (the scheduler runs the job again later).
    """

    store: Store
    calib: DataSet
    log: StageLog
    wait: bool = True

    def calibrate(self, qmodel: QModel, calibrate: Pass, run: Callable[[QModel], QModel]) -> QModel:
        """Calibration results from the store, or by ``run`` and then stored."""
        key = stage_key("calibrate", graph=bytes_digest(qmodel.to_bytes()), data=self.calib.fingerprint(),
                        spec=calibrate.spec(), method=getattr(calibrate, "method", "") or qmodel.scheme.calibration)
        entry = self.store.read_json("calibration", key)
        if entry is None:
            with self.store.lock("calibration", key, self.wait):
                entry = self.store.read_json("calibration", key)
                if entry is None:
                    qmodel = run(qmodel)
                    if qmodel.input_means:  # before the JSON: an entry is complete once it exists
                        self.store.write_bytes("calibration", key, ".npz", _npz(qmodel.input_means))
                    self.store.write_json("calibration", key, _calibration_entry(qmodel))
                    self.log.stages["calibrate"] = "ran"
        if entry is not None:
            _restore(qmodel, entry)
            if entry.get("input_means"):
                qmodel.input_means.update(_read_npz(self.store.path("calibration", key, ".npz"), qmodel.name))
            self.log.stages["calibrate"] = "hit"
        return qmodel


def quantize_cached(store: Store, qmodel: QModel, target: Target, calib: DataSet | None, recipe: Recipe | None,
                    pipeline: str | None, instruments: list[Instrument], log: StageLog,
                    wait: bool = True) -> QModel:
    """The prepare stage's ``quantize`` with calibration kept in ``store``."""
    from irq.pipeline.prepare import quantize

    cache = StoredCalibrations(store, calib, log, wait) if calib is not None else None
    return quantize(qmodel, target, calib, recipe, pipeline, instruments, calibration_cache=cache)


def _calibration_entry(qmodel: QModel) -> dict[str, Any]:
    # a list keeps the ranges' order, which is the graph order insert-qdq walks
    return {"ranges": [[name, r.lo, r.hi, r.method] for name, r in qmodel.ranges.items()],
            "note": c.to_json() if (c := qmodel.analysis.calibration) else None,
            "input_means": bool(qmodel.input_means),
            "record": qmodel.analysis.of("calibrate")}


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, names=np.asarray(list(arrays)), **{f"a{i}": a for i, a in enumerate(arrays.values())})
    return buf.getvalue()


def _read_npz(path: Path, model: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as f:
            return {str(n): f[f"a{i}"] for i, n in enumerate(f["names"])}
    except (OSError, ValueError, KeyError) as e:
        raise IrqError(f"cached calibration of {model!r} is malformed ({e}); delete the cache") from e


def _restore(qmodel: QModel, entry: dict[str, Any]) -> None:
    """Put cached ranges into ``qmodel`` as if calibrate had just run on it."""
    try:
        qmodel.ranges.update({name: TensorRange(float(lo), float(hi), method) for name, lo, hi, method
                              in entry["ranges"]})
        if entry.get("note") is not None:
            qmodel.analysis.calibration = CalibrationSummary.from_json(entry["note"])
        if entry.get("record"):
            qmodel.analysis.record("calibrate", **entry["record"])
    except (KeyError, TypeError, ValueError) as e:
        raise IrqError(f"cached calibration of {qmodel.name!r} is malformed ({e}); delete the cache") from e
    qmodel.history.append("calibrate")
