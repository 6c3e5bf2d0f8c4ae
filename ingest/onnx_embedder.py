"""The embedder on ONNX Runtime, int8: the same sentence-transformers model, exported once into the models cache.

On a CPU a whole ingest takes ~2.7x less CPU than with fp32 torch, with vectors at cosine 0.994 to fp32 on average
and the same retrieval quality (tests/test_embedding_onnx.py, benchmarks/README.md), so it is the default there; `ingest.embedding.Embedder` picks it. The export happens at
first use: torch.onnx (the transformer only) → onnxruntime's dynamic int8 quantization, built in a temporary folder
and renamed into `<models cache>/embedders/<name>-onnx-int8-<weights sha>` (ingest.model_cache.build_atomically),
so two processes export once and a crash leaves nothing that is taken as valid. Loading the cached model needs no
torch. Pooling and the sequence window come from the model's own sentence-transformers files (modules.json,
1_Pooling/config.json, sentence_bert_config.json), which are copied next to the ONNX file.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np

from ingest.errors import GroundworkError
from ingest.model_cache import build_atomically, default_cache_dir, read_marker

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: per-channel MatMul-only quantization
MODEL_FILE = "model-int8.onnx"
_SUPPORTED_MODULES = {"sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling",
                      "sentence_transformers.models.Normalize"}
_POOLING_MODES = ("cls", "mean", "max")


class OnnxExportError(GroundworkError):
    """This model cannot run on the ONNX path (unsupported modules, export failure); the torch path is used."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _weights_file(source: Path) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (source / name).is_file():
            return source / name
    raise OnnxExportError(f"{source}: no model.safetensors")


def _local_folder(source: str) -> Path:
    """The model's folder: a local path, or a hub id already in the local Hugging Face cache (never downloads)."""
    path = Path(source)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(source, local_files_only=True))
    except Exception as exc:  # noqa: BLE001 - any miss means: not available offline
        raise OnnxExportError(f"{source}: not in the local Hugging Face cache") from exc


def _read_json(path: Path) -> dict | list | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def sentence_config(folder: Path) -> dict:
    """{"pooling": cls|mean|max, "max_seq_length": int|None} from a sentence-transformers folder's own files.

    A folder without modules.json is a plain transformer: sentence-transformers gives it mean pooling too.
    """
    modules = _read_json(folder / "modules.json") or [
        {"type": "sentence_transformers.models.Transformer", "path": ""},
        {"type": "sentence_transformers.models.Pooling", "path": "1_Pooling"}]
    unsupported = [m.get("type") for m in modules if m.get("type") not in _SUPPORTED_MODULES]
    if unsupported:
        raise OnnxExportError(f"{folder}: modules the ONNX path does not run: {', '.join(map(str, unsupported))}")
    pooling = "mean"
    for module in modules:
        if module.get("type") == "sentence_transformers.models.Pooling":
            config = _read_json(folder / module.get("path", "") / "config.json") or {}
            modes = [mode for mode in _POOLING_MODES if config.get(f"pooling_mode_{mode}_token"
                                                                   if mode == "cls" else f"pooling_mode_{mode}_tokens")]
            others = [k for k, v in config.items() if k.startswith("pooling_mode_") and v
                      and k not in ("pooling_mode_cls_token", "pooling_mode_mean_tokens", "pooling_mode_max_tokens")]
            if len(modes) != 1 or others:
                raise OnnxExportError(f"{folder}: pooling {config} is not one of {', '.join(_POOLING_MODES)}")
            pooling = modes[0]
    bert = _read_json(folder / "sentence_bert_config.json") or {}
    return {"pooling": pooling, "max_seq_length": bert.get("max_seq_length")}


def _export(source: Path, out_dir: Path) -> None:
    """torch.onnx export of the transformer (fp32, dynamic batch and length), then int8 dynamic quantization."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModel.from_pretrained(source).eval()
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tokenizer.model_input_names]

    class Wrapper(torch.nn.Module):  # keyword arguments: BertModel's positional order has moved between versions
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, *inputs):
            return self.inner(**dict(zip(names, inputs))).last_hidden_state

    sample = tokenizer(["an example sentence", "another"], padding=True, return_tensors="pt")
    fp32 = out_dir / "model-fp32.onnx"
    axes = {name: {0: "batch", 1: "sequence"} for name in [*names, "token_embeddings"]}
    # The exporter's and the quantizer's advice (opset notes, "consider pre-processing") is for model authors, not
    # for someone running `groundwork ingest`: silenced here, once, while the export runs.
    root = logging.getLogger()
    level = root.level
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root.setLevel(logging.ERROR)
        try:
            torch.onnx.export(Wrapper(), tuple(sample[n] for n in names), str(fp32), input_names=names,
                              output_names=["token_embeddings"], dynamic_axes=axes, opset_version=17, dynamo=False)
            # Per-channel int8 weights of the MatMuls only: cosine to fp32 0.994 on average (per-tensor: 0.964;
            # quantizing the embedding Gather too costs accuracy and gains nothing; measured on 300 python-docs
            # questions and passages).
            quantize_dynamic(str(fp32), str(out_dir / MODEL_FILE), weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=["MatMul"])
        finally:
            root.setLevel(level)
    fp32.unlink()
    for leftover in out_dir.glob("*.onnx.data"):
        leftover.unlink()
    for name in ("modules.json", "sentence_bert_config.json"):
        if (source / name).is_file():
            shutil.copy2(source / name, out_dir / name)
    for module in _read_json(source / "modules.json") or []:
        if module.get("path") and (source / module["path"]).is_dir():
            shutil.copytree(source / module["path"], out_dir / module["path"])


def ensure_exported(name: str, source: str, cache_dir: Path | None = None) -> Path:
    """The cached int8 ONNX folder for this model, exported now if missing or stale. Raises OnnxExportError."""
    folder = _local_folder(source)
    config = sentence_config(folder)  # fails early, before any export, for what the ONNX path cannot run
    weights = _sha256(_weights_file(folder))
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    target = Path(cache_dir or default_cache_dir()) / "embedders" / f"{safe}-onnx-int8-{weights[:12]}"
    marker = {"format_version": FORMAT_VERSION, "weights_sha256": weights, "source": str(folder), **config}

    def is_valid(path: Path) -> bool:
        found = read_marker(path)
        return bool(found) and found.get("format_version") == FORMAT_VERSION \
            and found.get("weights_sha256") == weights and (path / MODEL_FILE).is_file()

    def build(out_dir: Path) -> None:
        print(f"Exporting {name} to int8 ONNX into {target} (once; later runs reuse it)", file=sys.stderr)
        try:
            _export(folder, out_dir)
        except Exception as exc:  # noqa: BLE001 - any export failure means: use torch
            first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
            raise OnnxExportError(f"{name}: ONNX export failed: {type(exc).__name__}: {first}") from exc

    build_atomically(target, build, marker, is_valid, error=OnnxExportError)
    return target


def default_threads() -> int:
    """torch's thread count where torch is loaded (the caller may have set it), else OMP_NUM_THREADS, else the
    cores this process may use."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return max(1, int(torch.get_num_threads()))
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else max(1, len(os.sched_getaffinity(0)))


class OnnxSentenceEncoder:
    """The part of SentenceTransformer's interface Groundwork uses (tokenizer, max_seq_length, encode, dimension),
    on an int8 ONNX Runtime session."""

    def __init__(self, name: str, source: str, cache_dir: Path | None = None, threads: int | None = None) -> None:
        import onnxruntime as ort
        from transformers import AutoTokenizer

        self.folder = ensure_exported(name, source, cache_dir)
        marker = read_marker(self.folder) or {}
        self.tokenizer = AutoTokenizer.from_pretrained(_local_folder(source))
        self.max_seq_length = int(marker.get("max_seq_length") or min(self.tokenizer.model_max_length, 512))
        self.pooling = marker.get("pooling", "mean")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(self.folder / MODEL_FILE), options,
                                            providers=["CPUExecutionProvider"])
        self._inputs = [i.name for i in self.session.get_inputs()]
        self._dimension: int | None = None

    def get_sentence_embedding_dimension(self) -> int:
        if self._dimension is None:
            self._dimension = int(self.encode(["dimension"]).shape[1])
        return self._dimension

    def encode(self, texts: list[str], batch_size: int = 1, normalize_embeddings: bool = True,
               **_ignored) -> np.ndarray:
        """Unit vectors (if `normalize_embeddings`) in the order of `texts`, each text run on its own.

        One text per run, whatever `batch_size`: int8 dynamic quantization scales activations per batch tensor,
        padding included, so a batched text's vector would depend on its neighbours (cosine off by up to 0.02,
        and a stored chunk would not score as its own text does at query time). Alone, no token is padding, which
        also made it cheaper: 7.4 vs 9.4 CPU s for 300 python-docs passages, 1 thread, against batches of 32.
        """
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_seq_length,
                                 return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        out = np.empty((len(texts), 0), dtype=np.float32)
        for row, ids in enumerate(encoded):
            vector = self._run(np.asarray([ids], dtype=np.int64))
            if out.shape[1] == 0:
                out = np.empty((len(texts), vector.shape[0]), dtype=np.float32)
            out[row] = vector
        if normalize_embeddings:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def _run(self, input_ids: np.ndarray) -> np.ndarray:
        """The pooled vector of one unpadded text (shape (1, length))."""
        feeds = {"input_ids": input_ids, "attention_mask": np.ones_like(input_ids),
                 "token_type_ids": np.zeros_like(input_ids)}
        tokens = self.session.run(None, {name: feeds[name] for name in self._inputs})[0][0]
        if self.pooling == "cls":
            return tokens[0]
        if self.pooling == "max":
            return tokens.max(axis=0)
        return tokens.mean(axis=0)
