"""irq batch end to end: failure isolation, caching, invalidation, resume, determinism.

Real fashion-cnn (shipped ONNX and data) and a tiny torch model; every job runs in a spawned
worker process as in production. 25 s on 2 idle cores, up to 90 s on busy ones (three marked slow).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

from irq import zoo
from irq.batch import BatchOptions, run_batch
from irq.batch.store import file_lock
from irq.cli import main
from irq.compiler import compile as compile_model
from irq.data import DataSet, save_npz
from irq.errors import InputError

TINY = '''
import os
import torch


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 8 * 8, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def tiny():
    torch.manual_seed(0)
    return Tiny().eval(), torch.randn(1, 1, 8, 8)


def crash():
    os.kill(os.getpid(), 9)  # the worker dies as if the OOM killer took it
'''


def _tiny_data(path: Path, seed: int) -> Path:
    x = np.random.default_rng(seed).normal(size=(32, 1, 8, 8)).astype(np.float32)
    save_npz(path, DataSet({"input": x}))
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tinymod.py").write_text(TINY)
    _tiny_data(tmp_path / "tiny_calib.npz", 0)
    _tiny_data(tmp_path / "tiny_eval.npz", 1)
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07garbage, not a protobuf")
    save_npz(tmp_path / "wrong_eval.npz", DataSet({"input": np.zeros((4, 1, 9, 9), np.float32)}))
    (tmp_path / "recipe.yaml").write_text("layers: []\n")
    return tmp_path


def _manifest(root: Path, models: str) -> Path:
    path = root / "batch.yaml"
    path.write_text(f"""
python_path: [models]
defaults:
  targets: [onnx-int8, onnx-fp16]
  latency: false
models:
{models}
""")
    return path


FASHION = """  - model: fashion-cnn
    calib: "zoo:"
    calib_samples: 100
    eval: "zoo:"
    eval_samples: 200
    targets: [onnx-int8, onnx-int8-arm, onnx-fp16]
    budgets: {max_drop: 2.0, max_size_ratio: 0.3}
"""
TINY_ENTRY = """  - model: tinymod:tiny
    calib: tiny_calib.npz
    eval: tiny_eval.npz
    recipe: recipe.yaml
"""


def _run(manifest: Path, out: Path, workers: int = 2, **kw: object):
    return run_batch(manifest, out, BatchOptions(workers=workers, **kw))  # type: ignore[arg-type]


def _statuses(result) -> dict[str, str]:
    return {r.label: r.status for r in result.results}


def _artifacts(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.glob("*/*/model.onnx"))}


@pytest.mark.slow  # 10-35 s with load: ten jobs in worker processes, five of them failing
def test_failing_jobs_are_isolated_and_exit_nonzero(project: Path) -> None:
    manifest = _manifest(project, FASHION + TINY_ENTRY + """  - model: bad.onnx
  - model: tinymod:crash
  - {model: "tinymod:tiny", name: tinybad, targets: [onnx-fp16], eval: wrong_eval.npz}
""")
    out = project / "out"
    assert main(["batch", str(manifest), "-o", str(out), "--workers", "2"]) == 2
    summary = json.loads((out / "summary.json").read_text())
    rows = {f"{r['model']}/{r['target']}": r for r in summary["rows"]}
    assert {k for k, r in rows.items() if r["status"] == "failed"} == {
        "bad/onnx-int8", "bad/onnx-fp16", "crash/onnx-int8", "crash/onnx-fp16", "tinybad/onnx-fp16"}
    assert "bad.onnx: not a valid ONNX model" in rows["bad/onnx-int8"]["error"]
    assert "wrong_eval.npz: input 'input' axis 2 is 9, model expects 8" in rows["tinybad/onnx-fp16"]["error"]
    assert "worker process died (killed by signal 9)" in rows["crash/onnx-fp16"]["error"]
    assert all("\n" not in r.get("error", "") for r in rows.values())
    for label in ("fashion-cnn/onnx-int8", "fashion-cnn/onnx-fp16", "tiny/onnx-int8", "tiny/onnx-fp16"):
        assert rows[label]["status"] == "built", rows[label]
        onnx.checker.check_model(onnx.load(str(out / label / "model.onnx")))
    assert rows["fashion-cnn/onnx-int8"]["budget"] == "met"
    assert rows["fashion-cnn/onnx-fp16"]["budget"] == "missed"  # fp16 is half the size, over 0.3
    assert "[report](fashion-cnn/onnx-int8/report.json)" in (out / "summary.md").read_text()
    # int8 and int8-arm shared one calibration; every fashion job one import
    cache = out / ".cache"
    assert len(list((cache / "calibration").glob("*.json"))) == 2  # fashion-cnn, tiny
    assert len(list((cache / "imports").glob("*.json"))) == 2
    shared = {rows[f"fashion-cnn/{t}"]["stages"]["calibrate"] for t in ("onnx-int8", "onnx-int8-arm")}
    assert shared == {"ran", "hit"}

    # the batch artifact is the one `irq compile` writes for the same inputs
    ref = compile_model(zoo.get("fashion-cnn").onnx_path, "onnx-int8", project / "ref",
                        calib=zoo.calibration_data("fashion-cnn", 100), measure_latency=False)
    assert Path(ref["artifact"]).read_bytes() == (out / "fashion-cnn/onnx-int8/model.onnx").read_bytes()

    # rerun: the good jobs are up to date (no worker runs them); a job that failed after its
    # key was known (same inputs, same code) reports its old error; the others are retried
    before = {p: p.stat().st_mtime_ns for p in out.glob("*/*/model.onnx")}
    again = {r.label: r for r in _run(manifest, out).results}
    assert [k for k, r in again.items() if r.status != "up-to-date"] == [
        "bad/onnx-int8", "bad/onnx-fp16", "crash/onnx-int8", "crash/onnx-fp16", "tinybad/onnx-fp16"]
    assert before == {p: p.stat().st_mtime_ns for p in out.glob("*/*/model.onnx")}
    cached = again["tinybad/onnx-fp16"]
    assert "axis 2 is 9" in cached.error and "(cached" in cached.error and cached.stages == ()
    assert again["crash/onnx-int8"].error.startswith("worker process died")  # never cached: retried
    retried = _run(manifest, out, retry_failed=True).results[-1]
    assert retried.status == "failed" and "(cached" not in retried.error and retried.stages


def test_changed_data_and_recipe_rerun_only_what_depends_on_them(project: Path) -> None:
    manifest = _manifest(project, TINY_ENTRY + TINY_ENTRY.replace("tinymod:tiny", "tinymod:tiny\n    name: tiny2"))
    out = project / "out"
    first = _run(manifest, out, workers=0)
    # tiny2 is the same job content as tiny: the cache hands it tiny's artifacts
    assert _statuses(first) == {"tiny/onnx-int8": "built", "tiny2/onnx-int8": "copied",
                                "tiny/onnx-fp16": "built", "tiny2/onnx-fp16": "copied"}
    artifacts = _artifacts(out)

    # new calibration data: the int8 jobs recalibrate and rebuild; fp16 does not calibrate
    _tiny_data(project / "tiny_calib.npz", 7)
    second = _run(manifest, out, workers=0)
    st = _statuses(second)
    assert st == {"tiny/onnx-int8": "built", "tiny/onnx-fp16": "up-to-date",
                  "tiny2/onnx-int8": "copied", "tiny2/onnx-fp16": "up-to-date"}
    assert dict(second.results[0].stages) == {"import": "hit", "calibrate": "ran"}
    assert _artifacts(out)["tiny/onnx-int8/model.onnx"] != artifacts["tiny/onnx-int8/model.onnx"]

    # back to the old data: content-addressed, so the old artifacts come back from the cache
    _tiny_data(project / "tiny_calib.npz", 0)
    third = _run(manifest, out, workers=0)
    assert _statuses(third)["tiny/onnx-int8"] == "copied"
    assert _artifacts(out) == artifacts

    # a recipe for one entry only: its two jobs rerun, calibration comes from the cache
    inline = "recipe: {layers: [{op_type: Gemm, precision: fp32}]}\n"
    manifest.write_text(manifest.read_text().replace("recipe: recipe.yaml\n", inline, 1))
    fourth = _run(manifest, out, workers=0)
    assert _statuses(fourth) == {"tiny/onnx-int8": "built", "tiny/onnx-fp16": "built",
                                 "tiny2/onnx-int8": "up-to-date", "tiny2/onnx-fp16": "up-to-date"}
    assert dict(fourth.results[0].stages)["calibrate"] == "hit"
    assert _artifacts(out)["tiny/onnx-int8/model.onnx"] != artifacts["tiny/onnx-int8/model.onnx"]


def test_partial_outputs_are_redone(project: Path) -> None:
    manifest = _manifest(project, TINY_ENTRY)
    out = project / "out"
    _run(manifest, out, workers=0)
    good = _artifacts(out)
    job = out / "tiny" / "onnx-int8"
    # what a kill -9 can leave: a half-copied temporary folder, a folder without its marker,
    # and a truncated artifact under an old marker
    leftover = out / "tiny" / ".onnx-int8.k1ll3d"
    leftover.mkdir()
    (leftover / "model.onnx").write_bytes(good["tiny/onnx-int8/model.onnx"][:100])
    (job / ".done").unlink()
    (out / "tiny" / "onnx-fp16" / "model.onnx").unlink()
    result = _run(manifest, out, workers=0)
    assert _statuses(result) == {"tiny/onnx-int8": "copied", "tiny/onnx-fp16": "copied"}
    assert _artifacts(out) == good
    assert not leftover.exists()
    with file_lock(out / ".batch.lock"), pytest.raises(InputError, match="another irq batch is writing"):
        _run(manifest, out, workers=0)  # one batch at a time per output folder


@pytest.mark.slow  # 4-25 s: an interrupted CLI run, its resume and a clean reference run
def test_kill_minus_9_mid_run_then_resume(project: Path, tmp_path: Path) -> None:
    manifest = _manifest(project, FASHION)
    out = project / "out"
    cmd = [sys.executable, "-m", "irq.cli", "batch", str(manifest), "-o", str(out), "--workers", "1"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(out.glob("*/*/.done")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the batch and its worker, mid-run
    proc.wait()
    finished = {str(p.parent.relative_to(out)) for p in out.glob("*/*/.done")}
    assert finished and len(finished) < 3, finished
    result = _run(manifest, out)
    st = _statuses(result)
    assert {k for k, v in st.items() if v == "up-to-date"} == finished
    assert not result.failed
    for label in st:
        onnx.checker.check_model(onnx.load(str(out / label / "model.onnx")))
        json.loads((out / label / "report.json").read_text())
    # identical to an uninterrupted run with its own cache
    clean = _run(manifest, tmp_path / "clean", cache_dir=tmp_path / "clean_cache")
    assert not clean.failed
    assert _artifacts(out) == _artifacts(tmp_path / "clean")


@pytest.mark.slow  # 20-40 s: starts a two-node Ray cluster
def test_ray_executor_on_two_nodes_gives_byte_identical_artifacts(project: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    manifest = _manifest(project, FASHION.replace("onnx-int8-arm, ", "") + TINY_ENTRY)
    local = _run(manifest, tmp_path / "local", cache_dir=tmp_path / "c1")
    # Two raylets (separate nodes, one CPU each) on this machine: the jobs must spread over both.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        remote = _run(manifest, tmp_path / "ray", executor="ray", cache_dir=tmp_path / "c2",
                      ray_address=cluster.address)
    finally:
        cluster.shutdown()
    assert not local.failed and not remote.failed, (local.failed, remote.failed)
    assert set(_statuses(remote).values()) == {"built"}
    nodes = {r.node for r in remote.results}
    assert len(nodes) == 2, nodes
    a, b = _artifacts(tmp_path / "local"), _artifacts(tmp_path / "ray")
    assert len(a) == 4 and a == b


def test_a_cluster_that_wants_a_token_gets_one_line_naming_the_fix() -> None:
    from irq.batch.executors import _join_failure

    cause = RuntimeError("Traceback (most recent call last):\n  File x\nray.exceptions.AuthenticationError: "
                         "Token authentication is enabled but no authentication token was found.")
    error = ConnectionError("Failed to connect to GCS at 10.0.0.2:6379")
    error.__cause__ = cause
    line = _join_failure("10.0.0.2:6379", error)
    assert "\n" not in line and "10.0.0.2:6379" in line
    assert "no authentication token" in line and "RAY_AUTH_TOKEN" in line
    plain = _join_failure(None, ConnectionError("Could not find any running Ray instance."))
    assert plain.endswith("Could not find any running Ray instance.") and "RAY_ADDRESS" in plain
