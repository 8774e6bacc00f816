"""Batch compilation: many models x targets from one manifest, in parallel, cached and resumable.

``irq batch MANIFEST -o OUTDIR [--workers N] [--executor local|ray] [--cache DIR] [--ray-address A]``

The manifest (YAML, or TOML when it ends in ``.toml``)::

    python_path: [models]                 # folders for module:function models (optional)
    defaults:                             # apply to every entry; entries override
      targets: [onnx-int8, onnx-int8-arm, onnx-fp16]
      calib: "zoo:"                       # "zoo:" = the entry's zoo model's data; "zoo:NAME"; or a path
      eval: "zoo:"
      calib_samples: 200                  # first N samples (optional)
      latency: true                       # measure latency (numbers are noisy with several workers)
      budgets: {max_size_ratio: 0.6}
    models:
      - model: fashion-cnn                # zoo name, path/to/model.onnx, or package.module:function
        budgets: {max_drop: 1.0, min_agreement: 0.98}
      - model: efficientnet-lite0
        recipe: recipes/keep_stem.yaml    # a recipe file, or the recipe inline as a mapping
      - name: minilm                      # output folder name (default: zoo name / file stem / function)
        model: minilm
        targets: [onnx-dynamic, onnx-int4, onnx-fp16]
        overrides:                        # per-target settings, strongest layer
          onnx-int4: {pipeline: "shape-inference,analyze,plan-precision,int4-weights{block-size=64}"}

Setting keys (in ``defaults``, an entry or ``overrides.<target>``): ``targets``, ``calib``,
``eval``, ``calib_samples``, ``eval_samples``, ``recipe``, ``pipeline``, ``disable_passes``,
``budgets`` (those of ``irq.verify.gates``, as for ``irq compile``: ``max_drop`` in top-1 points,
``min_agreement``, ``min_sqnr`` in dB, ``max_size_ratio``, ``min_speedup``; merged key by key,
``null`` unsets; a budget whose figure was not measured counts as missed), ``latency``, ``io``, ``deployment_target``.
Paths are relative to the manifest. Unknown keys, unknown targets or passes, missing files
and wrong types are errors naming the file, the entry and the key, before anything runs.

Outputs: ``OUTDIR/<name>/<target>/`` holds the artifact, ``report.json`` and a ``.done``
marker; ``OUTDIR/summary.json`` and ``summary.md`` tabulate size ratio, accuracy or agreement,
cosine, latency ratio and budget status per job, with links to the reports. A failing job is
reported with its one-line error and never stops the others; the command exits 2 when a job
failed, 3 when a budget was missed, 0 otherwise.

Cache (``OUTDIR/.cache`` or ``--cache``): content-addressed stage results (``irq.batch.stages``).
The imported model is keyed by the model file's bytes; calibration ranges by the graph as
calibrate sees it, the calibration data's fingerprint, the calibrate pass's options and
method; finished jobs by the model, data, target, recipe, pipeline and options. A rerun with
nothing changed runs nothing; a changed recipe reruns only its jobs (their calibration is
still shared); targets of one model share one import and, when their calibration matches
(onnx-int8 and onnx-int8-arm), one calibration.

Resuming: every file is written atomically and a job's folder appears in one rename, so after
``kill -9`` a rerun finds each job either finished (skipped) or absent (run again).

Determinism: the same inputs give byte-identical artifacts whichever executor or worker
built them (tests compare the ONNX bytes from the local and Ray executors); reports differ
only in timings.

Ray: ``--executor ray`` runs each job as a Ray task. Without an address it starts a local
instance with ``--workers`` CPUs. To use an existing cluster pass ``--ray-address
ray://head:10001`` (or ``auto`` on a cluster node) or set ``RAY_ADDRESS``. Every node needs
the same irq environment and must see the manifest's files, OUTDIR and the cache at the same
paths (a shared file system), since workers read inputs and write outputs directly.
"""

from __future__ import annotations

import importlib
from typing import Any

# Lazy exports: `irq --help` imports irq.batch.cli, which should not pay for onnx and the passes.
_EXPORTS = {
    "load_manifest": "irq.batch.manifest", "run_batch": "irq.batch.runner", "BatchOptions": "irq.batch.runner",
    "BatchResult": "irq.batch.runner", "Budgets": "irq.batch.schema", "DataRef": "irq.batch.schema",
    "JobSettings": "irq.batch.schema", "JobSpec": "irq.batch.schema", "Manifest": "irq.batch.schema",
    "ModelRef": "irq.batch.schema",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'irq.batch' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
