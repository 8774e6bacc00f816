"""What turns a float model into a planned, quantized one: passes, pipelines, targets, recipes.

- ``infra``: Pass, PassResult, instruments and the PassManager (what a plugin pass subclasses);
- ``registry``: the pass registry (built-ins and ``irq.passes`` entry points) and pipeline strings;
- ``targets``: each target's scheme, pipeline and backend;
- ``recipe``: per-layer overrides and scheme settings, as data;
- ``input_plan``: which inputs are frozen and which shapes fixed before the passes;
- ``prepare``: the prepare stage every entry point runs (inputs fixed, then the pipeline).
The passes themselves live in ``irq.passes``, one per file.
"""
