"""LSTM and GRU as the ops they are made of, unrolled over a static sequence length.

Mobile converters handle ONNX recurrent ops badly (onnx2tf builds a Keras LSTM whose initial
state it transposes: "An `initial_state` was passed that is not compatible with
`cell.state_size`"; Core ML's MIL builder here has no lowering for them), and their weights
stay float even in full-integer models. Unrolled, a recurrent layer is one MatMul over the whole
input sequence plus, per step, a MatMul on the hidden state and elementwise gates: ops every
backend lowers and quantizes. The input and recurrent weights are shared by all steps.

Decomposed: sigmoid/tanh activations, no clip, no peepholes, no input-forget coupling,
full-length sequences, and for GRU the form PyTorch and Keras export (linear_before_reset=1);
other nodes are left as they are and listed with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from irq.ir.edit import Namer, add_initializer, new_node, replace_value
from irq.ir.model import QModel, constant_array, node_label
from irq.pipeline.infra import Pass, PassResult


def _unsupported(node: ir.Node) -> str:
    """Why ``node`` cannot be decomposed ('' when it can)."""
    a = node.attributes
    if a.get_int("layout", 0) != 0:
        return "layout=1"
    if "clip" in a or a.get_int("input_forget", False):
        return "clip or input_forget"
    if node.op_type == "GRU" and not a.get_int("linear_before_reset", False):
        return "linear_before_reset=0 (decomposed: only the PyTorch/Keras form, linear_before_reset=1)"
    if "activations" in a:
        defaults = ["Sigmoid", "Tanh", "Tanh"] if node.op_type == "LSTM" else ["Sigmoid", "Tanh"]
        acts = list(a.get_strings("activations", []))
        if acts != defaults * (len(acts) // len(defaults)):
            return f"activations {acts}"
    if len(node.inputs) > 4 and node.inputs[4] is not None and constant_array(node.inputs[4]) is None:
        return "sequence_lens computed at run time"
    if node.op_type == "LSTM" and len(node.inputs) > 7 and node.inputs[7] is not None:
        return "peepholes"
    if any(constant_array(node.inputs[i]) is None for i in (1, 2)):
        return "weights computed at run time"
    x = node.inputs[0]
    if x is None or x.shape is None or not isinstance(x.shape[0], int):
        return "the sequence length is not static (fix the input shapes first)"
    lens = constant_array(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4] is not None else None
    if lens is not None and np.any(lens != x.shape[0]):
        return "sequences shorter than the input"
    return ""


@dataclass(frozen=True)
class DecomposeRNN(Pass):
    """Replace each LSTM/GRU with its unrolled equivalent (see the module docstring)."""

    name = "decompose-rnn"

    def run(self, qmodel: QModel) -> PassResult:
        """Decompose every eligible recurrent node."""
        graph, namer = qmodel.graph, Namer(qmodel.graph)
        done, kept = [], {}
        for node in [n for n in graph if n.op_type in ("LSTM", "GRU") and n.domain == ""]:
            why = _unsupported(node)
            if why:
                kept[node_label(node)] = why
                continue
            _Unroller(graph, namer, node).run()
            done.append(node_label(node))
        qmodel.analysis.record(self.name, decomposed=done, kept=kept)
        return PassResult(qmodel, bool(done))

    def ensures(self, qmodel: QModel) -> list[str]:
        """No recurrent node is left that the pass did not report keeping (with its reason)."""
        kept = qmodel.analysis.of(self.name).get("kept", [])
        left = [node_label(n) for n in qmodel.graph if n.op_type in ("LSTM", "GRU", "RNN") and n.domain == ""]
        return [f"recurrent nodes left and not reported kept: {', '.join(left)}"] if len(left) > len(kept) else []


class _Unroller:
    """The new nodes for one recurrent node, inserted before it; then the node is removed."""

    def __init__(self, graph: ir.Graph, namer: Namer, node: ir.Node) -> None:
        self.graph, self.namer, self.node = graph, namer, node
        self.base = node_label(node).replace(":", "_")
        self.nodes: list[ir.Node] = []
        self.lstm = node.op_type == "LSTM"

    def op(self, op_type: str, inputs: list, base: str, **attributes: object) -> ir.Value:
        node = new_node(self.namer, op_type, inputs, f"{self.base}/{base}", attributes=attributes or None)
        self.nodes.append(node)
        return node.outputs[0]

    def const(self, array: np.ndarray, base: str) -> ir.Value:
        return add_initializer(self.graph, self.namer, array, f"{self.base}_{base}")

    def run(self) -> None:
        node = self.node
        x = node.inputs[0]
        w, r = constant_array(node.inputs[1]), constant_array(node.inputs[2])
        assert w is not None and r is not None and x is not None and x.shape is not None
        b = constant_array(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] is not None else None
        steps, hidden = int(x.shape[0]), node.attributes.get_int("hidden_size", r.shape[-1])  # type: ignore[arg-type]
        direction = node.attributes.get_string("direction", "forward")
        dirs = {"forward": ["forward"], "reverse": ["reverse"], "bidirectional": ["forward", "reverse"]}[direction]
        h0 = node.inputs[5] if len(node.inputs) > 5 else None
        c0 = node.inputs[6] if self.lstm and len(node.inputs) > 6 else None
        ys, hs, cs = [], [], []
        for d, way in enumerate(dirs):
            bias = b[d] if b is not None else np.zeros(2 * w.shape[1], np.float32)
            y, h, c = self.direction(x, w[d], r[d], bias, steps, hidden, way, d, h0, c0)
            ys.append(self.op("Unsqueeze", [y, self.const(np.array([1]), "axis1")], f"y{d}"))
            hs.append(self.op("Unsqueeze", [h, self.const(np.array([0]), "axis0")], f"h{d}"))
            if c is not None:
                cs.append(self.op("Unsqueeze", [c, self.const(np.array([0]), "axis0")], f"c{d}"))
        results = [self.cat(ys, 1, "Y"), self.cat(hs, 0, "Y_h"), self.cat(cs, 0, "Y_c") if cs else None]
        self.graph.insert_before(node, self.nodes)
        for old, new in zip(node.outputs, results, strict=False):
            if new is not None and (old.uses() or old.is_graph_output()):
                new.type, new.shape = old.type, old.shape
                replace_value(old, new)
        self.graph.remove(node, safe=True)

    def cat(self, values: list[ir.Value], axis: int, base: str) -> ir.Value:
        return values[0] if len(values) == 1 else self.op("Concat", values, base, axis=axis)

    def state(self, given: ir.Value | None, d: int, hidden: int, x: ir.Value, name: str) -> ir.Value:
        """Direction ``d``'s initial state [B, H]: from the input, else zeros shaped like the batch."""
        if given is not None:
            return self.op("Gather", [given, self.const(np.array(d), "dir")], f"{name}0_{d}", axis=0)
        batch = x.shape[1] if x.shape is not None else None
        if isinstance(batch, int):
            return self.const(np.zeros((batch, hidden), np.float32), f"{name}0_zeros")
        first = self.op("Gather", [x, self.const(np.array(0), "t0")], f"{name}0_x0", axis=0)  # [B, I]
        cols = self.op("Slice", [first, self.const(np.array([0]), "zero"), self.const(np.array([1]), "one"),
                                 self.const(np.array([1]), "one")], f"{name}0_col")  # [B, 1]
        zero = self.op("Mul", [cols, self.const(np.zeros((1, hidden), np.float32), "zero_row")], f"{name}0")
        return zero

    def direction(self, x: ir.Value, w: np.ndarray, r: np.ndarray, bias: np.ndarray, steps: int, hidden: int,
                  way: str, d: int, h0: ir.Value | None, c0: ir.Value | None
                  ) -> tuple[ir.Value, ir.Value, ir.Value | None]:
        gates = w.shape[0] // hidden
        wb, rb = bias[: gates * hidden], bias[gates * hidden:]
        # GRU's candidate gate applies its recurrent bias inside the reset product; keep it apart.
        x_bias = wb + rb if self.lstm else wb + np.concatenate([rb[: 2 * hidden], np.zeros(hidden, rb.dtype)])
        xw = self.op("MatMul", [x, self.const(np.ascontiguousarray(w.T), f"W{d}_t")], f"xw{d}")
        xw = self.op("Add", [xw, self.const(x_bias.astype(np.float32), f"Wb{d}")], f"xwb{d}")
        r_t = self.const(np.ascontiguousarray(r.T), f"R{d}_t")
        h = self.state(h0, d, hidden, x, f"h{d}")
        c = self.state(c0, d, hidden, x, f"c{d}") if self.lstm else None
        order = range(steps) if way == "forward" else range(steps - 1, -1, -1)
        outs: dict[int, ir.Value] = {}
        rb_n = self.const(rb[2 * hidden:].astype(np.float32), f"Rbn{d}") if not self.lstm else None
        for t in order:
            xt = self.op("Gather", [xw, self.const(np.array(t), "t")], f"x{d}_{t}", axis=0)  # [B, G*H]
            hr = self.op("MatMul", [h, r_t], f"hr{d}_{t}")
            if c is not None:
                h, c = self.lstm_step(xt, hr, c, hidden, f"{d}_{t}")
            else:
                h = self.gru_step(xt, hr, h, hidden, rb_n, f"{d}_{t}")
            outs[t] = self.op("Unsqueeze", [h, self.const(np.array([0]), "axis0")], f"y{d}_{t}")
        y = self.cat([outs[t] for t in range(steps)], 0, f"y{d}")
        return y, h, c

    def gate(self, v: ir.Value, k: int, hidden: int, name: str) -> ir.Value:
        return self.op("Slice", [v, self.const(np.array([k * hidden]), "start"),
                                 self.const(np.array([(k + 1) * hidden]), "end"),
                                 self.const(np.array([-1]), "axis_last")], name)

    def lstm_step(self, xt: ir.Value, hr: ir.Value, c: ir.Value, hidden: int, s: str) -> tuple[ir.Value, ir.Value]:
        g = self.op("Add", [xt, hr], f"g{s}")
        i = self.op("Sigmoid", [self.gate(g, 0, hidden, f"i_{s}")], f"i{s}")
        o = self.op("Sigmoid", [self.gate(g, 1, hidden, f"o_{s}")], f"o{s}")
        f = self.op("Sigmoid", [self.gate(g, 2, hidden, f"f_{s}")], f"f{s}")
        cand = self.op("Tanh", [self.gate(g, 3, hidden, f"z_{s}")], f"z{s}")
        c = self.op("Add", [self.op("Mul", [f, c], f"fc{s}"), self.op("Mul", [i, cand], f"iz{s}")], f"c{s}")
        h = self.op("Mul", [o, self.op("Tanh", [c], f"tc{s}")], f"h{s}")
        return h, c

    def gru_step(self, xt: ir.Value, hr: ir.Value, h: ir.Value, hidden: int, rb_n: ir.Value | None,
                 s: str) -> ir.Value:
        z = self.op("Sigmoid", [self.op("Add", [self.gate(xt, 0, hidden, f"xz{s}"),
                                                self.gate(hr, 0, hidden, f"hz{s}")], f"zs{s}")], f"z{s}")
        rr = self.op("Sigmoid", [self.op("Add", [self.gate(xt, 1, hidden, f"xr{s}"),
                                                 self.gate(hr, 1, hidden, f"hr_{s}")], f"rs{s}")], f"r{s}")
        hn = self.op("Add", [self.gate(hr, 2, hidden, f"hn{s}"), rb_n], f"hnb{s}")
        n = self.op("Tanh", [self.op("Add", [self.gate(xt, 2, hidden, f"xn{s}"),
                                             self.op("Mul", [rr, hn], f"rh{s}")], f"ns{s}")], f"n{s}")
        # h' = (1 - z) * n + z * h = n + z * (h - n)
        return self.op("Add", [n, self.op("Mul", [z, self.op("Sub", [h, n], f"hmn{s}")], f"zd{s}")], f"h{s}")
