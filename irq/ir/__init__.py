"""The IR and what reads or edits it.

- ``model``: QModel, an onnx-ir model plus irq's annotations (plan, ranges, scheme, history);
- ``findings``: Analysis, what frontends and passes found out (source file, audit, calibration, one record per pass);
- ``analysis``: a networkx view for graph questions (order, branches, residuals, dominators);
- ``edit``: checked graph surgery shared by the rewriting passes;
- ``ort``: onnxruntime sessions from in-memory models, intermediate values exposed, batching.
"""
