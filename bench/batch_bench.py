"""irq batch on the zoo: cold (2 workers vs 1), warm rerun, recipe change, kill -9 + resume, Ray.

Every figure is a ratio against a baseline measured in this same process, on this machine:

- cold, ``--workers 2`` vs ``--workers 1`` (two fresh output folders and caches);
- warm rerun with nothing changed vs the cold run;
- one recipe file changed: which jobs rerun;
- ``kill -9`` of the whole batch (process group) mid-run, then rerun: finished jobs must be
  up to date, nothing corrupt, artifacts identical to the uninterrupted run;
- ``--executor ray`` on a local Ray instance: artifacts byte-identical to the local executor;
- ``--executor ray --ray-address`` on a two-node cluster started with ``ray start`` (a head and a
  worker node, one CPU each, token authentication with a fresh token): which node ran each job, and
  artifacts byte-identical to the local executor (``--ray-cluster-only`` runs just this and its
  local baseline).

Usage: .venv/bin/python bench/batch_bench.py [--work DIR] [--skip-ray] [--ray-cluster-only] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx
import yaml

IRQ = [sys.executable, "-m", "irq.cli"]
REPO = Path(__file__).resolve().parent.parent
ENV = dict(os.environ)
MODELS = [
    {"model": "fashion-cnn", "targets": ["onnx-int8", "onnx-int8-arm", "onnx-fp16"],
     "recipe": "fashion_recipe.yaml", "budgets": {"max_drop": 1.0, "max_size_ratio": 0.55}},
    {"model": "efficientnet-lite0", "targets": ["onnx-int8", "onnx-int8-arm", "onnx-fp16"],
     "calib_samples": 100, "budgets": {"min_agreement": 0.80, "max_size_ratio": 0.55}},
    {"model": "minilm", "targets": ["onnx-dynamic", "onnx-int4", "onnx-fp16"], "budgets": {"min_sqnr": 15.0}},
]


def write_manifest(path: Path, without: set[str] = frozenset()) -> None:
    """The bench manifest: the zoo's three models, three targets each (minus ``without``)."""
    models = [dict(m, targets=[t for t in m["targets"] if f"{m['model']}/{t}" not in without]) for m in MODELS]
    doc = {"defaults": {"calib": "zoo:", "eval": "zoo:", "latency": True}, "models": models}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


RECIPE = "layers: []\n"
RECIPE_CHANGED = "layers:\n  - {name: \"^/features/features.0/\", precision: fp32}  # keep the first conv in float\n"


def batch(work: Path, out: str, *extra: str, manifest: str = "batch.yaml") -> tuple[float, int, dict]:
    """Run ``irq batch`` as a user would; return wall seconds, exit code and summary totals."""
    start = time.perf_counter()
    proc = subprocess.run([*IRQ, "batch", str(work / manifest), "-o", str(work / out), *extra],
                          capture_output=True, text=True, env=ENV, cwd=work)
    wall = time.perf_counter() - start
    sys.stderr.write(proc.stderr)
    summary = json.loads((work / out / "summary.json").read_text())
    return wall, proc.returncode, summary


def artifacts(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.glob("*/*/model.onnx"))}


def statuses(summary: dict) -> dict[str, str]:
    return {f"{r['model']}/{r['target']}": r["status"] for r in summary["rows"]}


def kill_mid_run(work: Path, out: str, after_done: int) -> dict:
    """Start a batch, SIGKILL its process group once ``after_done`` jobs finished, rerun it."""
    proc = subprocess.Popen([*IRQ, "batch", str(work / "batch.yaml"), "-o", str(work / out), "--workers", "2"],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV,
                            cwd=work)
    while len(list((work / out).glob("*/*/.done"))) < after_done and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = sorted(str(p.parent.relative_to(work / out)) for p in (work / out).glob("*/*/.done"))
    leftovers = [str(p) for p in (work / out).glob("*/.*.*")]
    wall, code, summary = batch(work, out, "--workers", "2")
    st = statuses(summary)
    for label, status in st.items():
        if status != "failed":
            onnx.checker.check_model(onnx.load(str(work / out / label / "model.onnx")))
    return {"finished_before_kill": finished, "temp_leftovers_after_kill": leftovers, "rerun_seconds": wall,
            "rerun_exit": code, "rerun_statuses": st,
            "redone": [k for k in finished if st[k] != "up-to-date"]}


def snapshot(work: Path) -> str:
    """Copy irq's sources (passes, backends, frontends inside) and run the bench on the copy.

    The batch cache keys include a hash of irq's sources, so an edit anywhere in the working
    tree during the bench (other people commit while it runs) would make every rerun cold.
    Returns the copy's source hash, as the workers see it.
    """
    dst = work / "snapshot" / "irq"
    shutil.rmtree(dst.parent, ignore_errors=True)
    skip = shutil.ignore_patterns("__pycache__")
    shutil.copytree(REPO / "irq", dst, ignore=skip)
    for sub in ("passes", "backends", "frontends"):
        shutil.copytree(REPO / sub, dst / sub, ignore=skip)
    ENV["PYTHONPATH"] = str(dst.parent)  # ahead of the editable install (runs use cwd=work, not the repo)
    probe = "import irq; from irq.batch.keys import irq_source_digest as d; print(irq.__file__, d())"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=ENV, check=True,
                         cwd=work)
    where, digest = out.stdout.split()
    assert where.startswith(str(dst)), where
    return digest


def zoo_digests() -> dict[str, str]:
    """Digests of the zoo's model files: the bench is void if another process changes them mid-run."""
    from irq import zoo
    from irq.batch.keys import file_digest

    return {m["model"]: file_digest(zoo.get(m["model"]).onnx_path)[:16] for m in MODELS}


RAY = str(Path(sys.executable).with_name("ray"))
RAY_PORT = "6391"


def ray_two_nodes(work: Path, local: dict[str, bytes]) -> dict:
    """Start a head and a worker node with the ``ray start`` CLI, run the batch on them, stop them."""
    # Token auth as a real cluster would run it: a fresh token for this cluster, in every node's and
    # the client's environment (nothing written to ~/.ray).
    env = dict(ENV, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    common = ["--num-cpus", "1", "--disable-usage-stats"]
    subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True)
    try:
        subprocess.run([RAY, "start", "--head", "--port", RAY_PORT, "--include-dashboard=false", *common],
                       env=env, check=True, capture_output=True, cwd=work)
        subprocess.run([RAY, "start", "--address", f"127.0.0.1:{RAY_PORT}", *common],
                       env=env, check=True, capture_output=True, cwd=work)
        start = time.perf_counter()
        proc = subprocess.run([*IRQ, "batch", str(work / "batch.yaml"), "-o", str(work / "ray2"), "--executor",
                               "ray", "--ray-address", f"127.0.0.1:{RAY_PORT}"],
                              capture_output=True, text=True, env=env, cwd=work)
        wall = time.perf_counter() - start
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True)
    summary = json.loads((work / "ray2" / "summary.json").read_text())
    nodes = {f"{r['model']}/{r['target']}": r.get("node", "")[:12] for r in summary["rows"]}
    ar = artifacts(work / "ray2")
    return {"seconds": wall, "exit": proc.returncode, "nodes_used": len(set(nodes.values()) - {""}),
            "job_nodes": nodes, "artifacts": len(ar), "identical_to_local": ar == local,
            "differing": sorted(k for k in ar if ar[k] != local.get(k)), "stderr_tail": proc.stderr[-400:]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--ray-cluster-only", action="store_true", help="only the local w1 run and the two-node Ray run")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--cold-only", action="store_true", help="only the cold pair, workers 1 first (order check)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="irq-batch-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    write_manifest(work / "batch.yaml")
    (work / "fashion_recipe.yaml").write_text(RECIPE)
    res: dict = {"work": str(work), "load_before": os.getloadavg(), "zoo_before": zoo_digests(),
                 "irq_source": snapshot(work)}

    if args.ray_cluster_only:
        cold1, _, _ = batch(work, "w1", "--workers", "1")
        res["local_workers1_s"] = cold1
        res["ray_two_nodes"] = ray_two_nodes(work, artifacts(work / "w1"))
        res["load_after"] = os.getloadavg()
        print(json.dumps(res, indent=2, default=str))
        return
    if args.cold_only:
        cold1, _, s1 = batch(work, "w1", "--workers", "1")
        cold2, _, s2 = batch(work, "w2", "--workers", "2")
        res["cold_only"] = {"workers1_s": cold1, "workers2_s": cold2, "speedup_2_vs_1": cold1 / cold2,
                            "job_seconds_sum": [sum(r["seconds"] for r in s["rows"]) for s in (s1, s2)],
                            "identical": artifacts(work / "w1") == artifacts(work / "w2"),
                            "load_after": os.getloadavg()}
        print(json.dumps(res, indent=2, default=str))
        return
    cold2, code2, s2 = batch(work, "w2", "--workers", "2")
    cold1, code1, _ = batch(work, "w1", "--workers", "1")
    res["cold"] = {"workers2_s": cold2, "workers1_s": cold1, "speedup_2_vs_1": cold1 / cold2,
                   "job_seconds2": {f"{r['model']}/{r['target']}": r["seconds"] for r in s2["rows"]},
                   "exit": [code2, code1], "totals2": s2["totals"], "statuses2": statuses(s2)}
    a2, a1 = artifacts(work / "w2"), artifacts(work / "w1")
    res["deterministic_w2_vs_w1"] = {"artifacts": len(a2), "identical": a2 == a1}
    res["summary_rows"] = s2["rows"]

    warm, code, s = batch(work, "w2", "--workers", "2")
    res["warm"] = {"seconds": warm, "ratio_to_cold": warm / cold2, "exit": code, "totals": s["totals"],
                   "in_process_seconds": s["totals"]["wall_seconds"]}
    # failed jobs are always retried; without them a warm rerun runs nothing at all
    failed = {k for k, v in statuses(s).items() if v == "failed"}
    write_manifest(work / "batch_ok.yaml", failed)
    warm, code, s = batch(work, "w2", "--workers", "2", manifest="batch_ok.yaml")
    res["warm_without_failed"] = {"excluded": sorted(failed), "seconds": warm, "ratio_to_cold": warm / cold2,
                                  "exit": code, "totals": s["totals"],
                                  "in_process_seconds": s["totals"]["wall_seconds"]}

    (work / "fashion_recipe.yaml").write_text(RECIPE_CHANGED)
    wall, code, s = batch(work, "w2", "--workers", "2")
    st = statuses(s)
    res["recipe_change"] = {"seconds": wall, "ratio_to_cold": wall / cold2,
                            "rerun": sorted(k for k, v in st.items() if v in ("built", "copied")),
                            "failed": sorted(k for k, v in st.items() if v == "failed"),
                            "up_to_date": sum(v == "up-to-date" for v in st.values()),
                            "stages": {r["model"] + "/" + r["target"]: r["stages"] for r in s["rows"]
                                       if r["status"] == "built"}}
    (work / "fashion_recipe.yaml").write_text(RECIPE)

    res["kill"] = kill_mid_run(work, "killed", after_done=3)
    res["kill"]["identical_to_uninterrupted"] = artifacts(work / "killed") == a1

    if not args.skip_ray:
        wall, code, s = batch(work, "ray", "--workers", "2", "--executor", "ray")
        ar = artifacts(work / "ray")
        res["ray"] = {"seconds": wall, "ratio_to_local_cold2": wall / cold2, "exit": code,
                      "artifacts": len(ar), "identical_to_local": ar == a1,
                      "differing": sorted(k for k in ar if ar[k] != a1.get(k))}
        res["ray_two_nodes"] = ray_two_nodes(work, a1)
    res["load_after"] = os.getloadavg()
    res["zoo_after"] = zoo_digests()
    res["zoo_unchanged"] = res["zoo_after"] == res["zoo_before"]
    text = json.dumps(res, indent=2, default=str)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
