"""Verification: every artifact measured in its own runtime against its float model.

- ``run``: the float model and the artifact on the same data;
- ``metrics``: accuracy, agreement, SQNR, cosine, KL between outputs (pure numpy);
- ``checks``: the report's verification section (accuracy, error, latency, crash test, layer error,
  budgets), driven by what the backend says it can do; it never imports the compiler;
- ``layer_error``: per-layer SQNR of an ONNX artifact against float;
- ``crashtest`` and ``crashtest_child``: extreme inputs, run in a child process;
- ``gates``: the budgets a CI gates on (``--max-drop``, ``--min-sqnr``, ...).
"""
