"""Training recipes: one YAML file, validated once into typed, frozen dataclasses.

A recipe says what to train from (a base model, or a tiny model built from scratch), on which
data (with or without rationales), how (TRL SFTConfig settings, optional LoRA), and how to
export and evaluate the result. `load_recipe` reads the YAML, applies `--set key.path=value`
overrides, resolves relative paths and checks every key and value; any mistake is a
`RecipeError` that names the key.

Relative paths written in the recipe file resolve against the recipe file's directory (so a
recipe means the same thing from any working directory); paths given with `--set` resolve
against the current directory (where the user typed them). `export.dir` is relative to the
run's output directory.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from promptgate.trainer.obfuscate import FAMILIES

__all__ = [
    "DataSection",
    "EvalSection",
    "ExportSection",
    "LoraSection",
    "ModelSection",
    "ObfuscateSection",
    "PrepareSection",
    "RationaleSection",
    "Recipe",
    "RecipeError",
    "TinyInitSection",
    "TrainingSection",
    "apply_overrides",
    "dump_recipe",
    "load_recipe",
    "parse_recipe",
    "trained_window",
]

Dtype = Literal["float32", "bfloat16", "float16"]
Mode = Literal["fast", "reasoned", "auto"]
# The names of promptgate.trainer.obfuscate.FAMILIES (a Literal of that tuple: one list of names).
Family = Literal[FAMILIES]  # type: ignore[valid-type]


class RecipeError(ValueError):
    """A recipe (or an override) is malformed: the message names the key."""


@dataclass(frozen=True)
class TinyInitSection:
    """Build a tiny Qwen3-shaped model from scratch; its tokenizer is trained on the training texts.

    `shape` picks a preset of `promptgate.trainer.tiny_model.SHAPES`; the other keys override
    single fields of it. `seed` defaults to `training.seed`.
    """

    shape: str = "tiny"
    vocab_size: int | None = None
    hidden_size: int | None = None
    intermediate_size: int | None = None
    num_hidden_layers: int | None = None
    num_attention_heads: int | None = None
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    max_position_embeddings: int | None = None
    seed: int | None = None
    # Training texts the tokenizer learns its merges from.
    corpus_limit: int = 20000


@dataclass(frozen=True)
class ModelSection:
    """What to fine-tune: `name_or_path` (hub id or directory) or `init` (tiny, from scratch)."""

    name_or_path: str | None = None
    init: TinyInitSection | None = None
    # Dtype the weights are loaded in for training. Mixed precision (training.bf16) keeps
    # float32 master weights, so float32 is right unless memory forces otherwise.
    dtype: Dtype = "float32"
    attn_implementation: str = "sdpa"


@dataclass(frozen=True)
class RationaleSection:
    """Where rationales come from.

    `field`: the examples' own `rationale` (written by `promptgate data rationales`);
    `template`: a deterministic STAND-IN, one sentence made from the gold label and category
    (never the label word), for machines that cannot reach a teacher model. A model trained
    on template rationales learns the format, not real explanations.
    """

    source: Literal["field", "template"] = "field"


@dataclass(frozen=True)
class PrepareSection:
    """Run the data area's `prepare_dataset` on raw files; its train/val splits become the data.

    Same options as `promptgate data prepare`; `data.exclude` is passed as its excludes.
    """

    inputs: tuple[str, ...] = ()
    hf_datasets: tuple[str, ...] = ()
    val_fraction: float = 0.1
    test_fraction: float = 0.0
    balance: Literal["none", "downsample", "upsample"] = "none"
    max_per_class: int | None = None
    text_field: str = "text"
    label_field: str = "label"
    # Defaults to the recipe's data seed.
    seed: int | None = None


@dataclass(frozen=True)
class ObfuscateSection:
    """Obfuscated copies of training rows, added to the training set (never to val).

    `share` of the training examples (per label, seeded) each get one copy under one of
    `families` (`promptgate.trainer.obfuscate`; the families take turns, so each gets an equal
    share of the copies). A copy keeps its original's label, category and format (FAST or
    REASONED) and, with `data.canonicalize`, is canonicalized like every other text: the model
    trains on what the server's canonicalization makes of an evasion, the residue included
    (a tag-smuggling carrier sentence, a base64 framing).
    """

    share: float = 0.2
    families: tuple[Family, ...] = FAMILIES
    # Which rows are copied, which family each gets, and the obfuscations' own choices;
    # defaults to the recipe's data seed.
    seed: int | None = None


@dataclass(frozen=True)
class CompositesSection:
    """Window pieces of long inputs, the shape the windowed server shows the model, added to training.

    A long document is screened as windows of tokens that start and end anywhere in it. For
    `share` of the malicious training rows (drawn from those that fit a window), one piece:
    benign training rows cut at token boundaries with the row whole at a random point inside
    (label malicious, the row's category); and as many pieces of benign rows alone (label
    benign). Each piece is at most `window_tokens` tokens (default: `data.max_text_tokens`), so
    training's cut to its text budget never removes the attack. FAST format (no rationale).
    The export records the size in the model's profile (`window_tokens`), and the server
    windows long text by it.
    """

    share: float = 0.2
    window_tokens: int | None = None
    # Which rows and where they sit; defaults to the recipe's data seed.
    seed: int | None = None


@dataclass(frozen=True)
class DataSection:
    train: str | None = None
    val: str | None = None
    prepare: PrepareSection | None = None
    # Files whose texts must never be trained on (test sets): examples whose normalized
    # text appears in any of them are dropped from train and val.
    exclude: tuple[str, ...] = ()
    # Train on at most this many examples (label-stratified, seeded); val is left whole.
    limit: int | None = None
    # false: the plain-label baseline, every example in the FAST format (no rationale).
    use_rationales: bool = True
    # Share of the examples trained WITH their rationale; the others get the empty think
    # block (FAST format), so one model serves FAST and REASONED.
    rationale_share: float = 0.7
    rationales: RationaleSection = field(default_factory=RationaleSection)
    # Longest user text in tokens (besides what training.max_length leaves). Only the text is
    # cut, before the example is built, so every example keeps its whole answer; the cut is
    # the server's own truncation (first and last halves of the tokens), or the example is
    # dropped.
    max_text_tokens: int | None = None
    long_texts: Literal["keep_both_ends", "drop"] = "keep_both_ends"
    # Every text (train and val, before it is cut or tokenized) goes through the server's
    # canonicalization (`promptgate.server.canonicalize`), so the model trains on the text its
    # server's model reads. true: every step (the server's default); false: the raw texts; or
    # the steps as the server's `canonicalize_steps` names them ("all", "none", "nfkc,tags").
    canonicalize: bool | str = True
    obfuscate: ObfuscateSection | None = None
    composites: CompositesSection | None = None
    seed: int | None = None


@dataclass(frozen=True)
class TrainingSection:
    """The TRL `SFTConfig` settings a recipe may set (same names as SFTConfig)."""

    num_train_epochs: float = 3.0
    # When set (> 0), the number of optimizer steps, overriding num_train_epochs.
    max_steps: int | None = None
    learning_rate: float = 2e-5
    lr_scheduler_type: Literal[
        "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"
    ] = "cosine"
    # Below 1: a fraction of the training steps; from 1: a number of steps (as in TRL).
    warmup_steps: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    max_length: int = 1024
    seed: int = 42
    gradient_checkpointing: bool = False
    # bf16 mixed precision where the device supports it; always off on CPU.
    bf16: bool = False
    # group_by_length batches examples of similar length: less padding, faster steps.
    train_sampling_strategy: Literal["random", "sequential", "group_by_length"] = "random"
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int | None = 2
    # Evaluate the val loss every this many steps; null: no evaluation during training.
    eval_steps: int | None = None
    optim: str = "adamw_torch"


@dataclass(frozen=True)
class LoraSection:
    """LoRA adapters (peft); merged into the base weights at export."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    )


@dataclass(frozen=True)
class ExportSection:
    # Relative to the run's output directory; default `model`.
    dir: str = "model"
    dtype: Dtype = "bfloat16"


@dataclass(frozen=True)
class EvalSection:
    """Evaluation of the exported model after training (val split plus `files`)."""

    enabled: bool = True
    files: tuple[str, ...] = ()
    modes: tuple[Mode, ...] = ("fast",)
    engine: Literal["transformers", "vllm", "auto"] = "transformers"
    limit: int | None = None
    max_rationale_tokens: int | None = None


@dataclass(frozen=True)
class Recipe:
    name: str
    model: ModelSection
    data: DataSection
    description: str = ""
    # A built-in profile name or a profile JSON file.
    profile: str = "promptgate"
    training: TrainingSection = field(default_factory=TrainingSection)
    lora: LoraSection | None = None
    export: ExportSection = field(default_factory=ExportSection)
    eval: EvalSection = field(default_factory=EvalSection)
    # The file this recipe was read from (not a key of the YAML).
    source: str | None = field(default=None, compare=False, metadata={"internal": True})

    @property
    def data_seed(self) -> int:
        return self.training.seed if self.data.seed is None else self.data.seed

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe as plain data (what `recipe.resolved.yaml` holds)."""
        out = _plain(self)
        out.pop("source", None)
        return out


# Keys whose values are file paths (dotted; list values resolve element-wise).
PATH_KEYS = frozenset({"data.train", "data.val", "data.exclude", "data.prepare.inputs", "eval.files"})


# -- building dataclasses from plain data --------------------------------------------------


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except RecipeError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise RecipeError(f"{key}: expected {_describe(tp)}, got {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise RecipeError(f"{key}: expected {_describe(tp)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise RecipeError(f"{key}: expected {_describe(tp)}, got {value!r}")
        item = typing.get_args(tp)[0]
        return tuple(_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise RecipeError(f"{key}: expected a mapping, got {value!r}")
        return _build(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # PyYAML follows YAML 1.1, where `2e-5` (no dot) is a string, not a number: a
            # surprise nobody means, so a string that is a plain number counts as one.
            try:
                value = float(value.strip())
            except ValueError:
                raise RecipeError(f"{key}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RecipeError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str) or not value:
            raise RecipeError(f"{key}: expected a non-empty string, got {value!r}")
        return value
    raise TypeError(f"unsupported recipe type {tp!r}")  # a bug in this module, not in the recipe


def _build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for key in data:
        if key not in fields:
            where = f"{prefix}.{key}" if prefix else str(key)
            raise RecipeError(f"unknown key {where!r}; known keys here: {', '.join(sorted(fields))}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecipeError(f"missing key {key!r} ({_describe(hints[name])})")
    return cls(**kwargs)


# -- checks that span several keys or bound values ------------------------------------------


def _require(cond: bool, key: str, message: str) -> None:
    if not cond:
        raise RecipeError(f"{key}: {message}")


def _check(recipe: Recipe) -> None:
    from promptgate.profiles import BUILTIN_PROFILES

    m = recipe.model
    _require(
        (m.name_or_path is None) != (m.init is None),
        "model",
        "set exactly one of model.name_or_path (a base model) and model.init (a tiny model from scratch)",
    )
    if m.init is not None:
        from promptgate.trainer.tiny_model import SHAPES

        _require(m.init.shape in SHAPES, "model.init.shape", f"expected one of {sorted(SHAPES)}, got {m.init.shape!r}")
        for f in dataclasses.fields(m.init):
            value = getattr(m.init, f.name)
            if isinstance(value, int) and f.name != "seed":
                _require(value >= 1, f"model.init.{f.name}", f"must be at least 1, got {value}")
    _require(
        recipe.profile in BUILTIN_PROFILES or Path(recipe.profile).is_file(),
        "profile",
        f"expected a built-in profile ({', '.join(sorted(BUILTIN_PROFILES))}) or a profile JSON file, "
        f"got {recipe.profile!r}",
    )

    d = recipe.data
    _require(
        (d.train is None) != (d.prepare is None),
        "data",
        "set exactly one of data.train (a prepared file) and data.prepare (raw files to prepare)",
    )
    _require(not (d.prepare is not None and d.val is not None), "data.val", "comes from data.prepare; drop one")
    if d.prepare is not None:
        p = d.prepare
        _require(
            bool(p.inputs or p.hf_datasets), "data.prepare.inputs", "needs at least one raw data file or hf_datasets"
        )
        _require(0.0 < p.val_fraction < 1.0, "data.prepare.val_fraction", f"must be in (0, 1), got {p.val_fraction}")
        _require(
            0.0 <= p.test_fraction < 1.0 and p.val_fraction + p.test_fraction < 1.0,
            "data.prepare.test_fraction",
            f"must be in [0, 1) and leave room for training, got {p.test_fraction}",
        )
        _require(
            p.max_per_class is None or p.max_per_class >= 1,
            "data.prepare.max_per_class",
            f"must be at least 1, got {p.max_per_class}",
        )
    _require(d.limit is None or d.limit >= 1, "data.limit", f"must be at least 1, got {d.limit}")
    _require(0.0 <= d.rationale_share <= 1.0, "data.rationale_share", f"must be in [0, 1], got {d.rationale_share}")
    _require(
        d.max_text_tokens is None or d.max_text_tokens >= 8,
        "data.max_text_tokens",
        f"must be at least 8, got {d.max_text_tokens}",
    )
    if isinstance(d.canonicalize, str):
        from promptgate.server.canonicalize import CanonicalizeOptions

        try:
            CanonicalizeOptions.from_steps(d.canonicalize)
        except ValueError as exc:
            raise RecipeError(f"data.canonicalize: {exc} (or true / false)") from None
    if d.obfuscate is not None:
        o = d.obfuscate
        _require(0.0 < o.share <= 1.0, "data.obfuscate.share", f"must be in (0, 1], got {o.share}")
        _require(bool(o.families), "data.obfuscate.families", "needs at least one family")
        _require(
            len(set(o.families)) == len(o.families),
            "data.obfuscate.families",
            f"a family is given twice: {list(o.families)}",
        )

    if d.composites is not None:
        c = d.composites
        _require(0.0 < c.share <= 1.0, "data.composites.share", f"must be in (0, 1], got {c.share}")
        _require(
            c.window_tokens is not None or d.max_text_tokens is not None,
            "data.composites.window_tokens",
            "needs a size: set it or data.max_text_tokens",
        )
        _require(
            c.window_tokens is None or c.window_tokens >= 16,
            "data.composites.window_tokens",
            f"must be at least 16, got {c.window_tokens}",
        )
        _require(
            c.window_tokens is None or d.max_text_tokens is None or c.window_tokens <= d.max_text_tokens,
            "data.composites.window_tokens",
            f"must be at most data.max_text_tokens ({d.max_text_tokens}), or training cuts the pieces, "
            f"got {c.window_tokens}",
        )

    t = recipe.training
    _require(t.num_train_epochs > 0, "training.num_train_epochs", f"must be positive, got {t.num_train_epochs}")
    _require(t.max_steps is None or t.max_steps >= 1, "training.max_steps", f"must be at least 1, got {t.max_steps}")
    _require(0 < t.learning_rate < 1, "training.learning_rate", f"must be in (0, 1), got {t.learning_rate}")
    _require(t.warmup_steps >= 0, "training.warmup_steps", f"must be at least 0, got {t.warmup_steps}")
    _require(t.weight_decay >= 0, "training.weight_decay", f"must be at least 0, got {t.weight_decay}")
    _require(t.max_grad_norm > 0, "training.max_grad_norm", f"must be positive, got {t.max_grad_norm}")
    for key in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        _require(getattr(t, key) >= 1, f"training.{key}", f"must be at least 1, got {getattr(t, key)}")
    _require(t.max_length >= 64, "training.max_length", f"must be at least 64, got {t.max_length}")
    _require(t.logging_steps >= 1, "training.logging_steps", f"must be at least 1, got {t.logging_steps}")
    _require(t.save_steps >= 1, "training.save_steps", f"must be at least 1, got {t.save_steps}")
    _require(
        t.save_total_limit is None or t.save_total_limit >= 1,
        "training.save_total_limit",
        f"must be at least 1, got {t.save_total_limit}",
    )
    _require(
        t.eval_steps is None or t.eval_steps >= 1, "training.eval_steps", f"must be at least 1, got {t.eval_steps}"
    )
    if d.max_text_tokens is not None:
        _require(
            d.max_text_tokens < t.max_length,
            "data.max_text_tokens",
            f"{d.max_text_tokens} leaves no room for the prompt and answer in training.max_length {t.max_length}",
        )

    if recipe.lora is not None:
        lo = recipe.lora
        _require(lo.r >= 1, "lora.r", f"must be at least 1, got {lo.r}")
        _require(lo.alpha >= 1, "lora.alpha", f"must be at least 1, got {lo.alpha}")
        _require(0.0 <= lo.dropout < 1.0, "lora.dropout", f"must be in [0, 1), got {lo.dropout}")
        _require(bool(lo.target_modules), "lora.target_modules", "needs at least one module name")

    e = recipe.eval
    _require(bool(e.modes), "eval.modes", "needs at least one mode")
    _require(e.limit is None or e.limit >= 1, "eval.limit", f"must be at least 1, got {e.limit}")
    _require(
        e.max_rationale_tokens is None or e.max_rationale_tokens >= 1,
        "eval.max_rationale_tokens",
        f"must be at least 1, got {e.max_rationale_tokens}",
    )


# -- overrides and paths ---------------------------------------------------------------------


def _split_override(item: str) -> tuple[list[str], Any]:
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise RecipeError(f"--set {item!r}: expected key.path=value")
    parts = key.split(".")
    if any(not p for p in parts):
        raise RecipeError(f"--set {item!r}: malformed key {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise RecipeError(f"--set {key}: the value {raw!r} is not valid YAML: {exc}") from exc
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str], *, cwd: Path | None = None) -> dict[str, Any]:
    """Apply `key.path=value` overrides (values parsed as YAML) to a raw recipe mapping.

    Path-valued keys given here resolve against `cwd` (where the user typed them), so the
    recipe file's own base directory does not apply to them.
    """
    base = (cwd or Path.cwd()).resolve()
    out = _deep_copy(data)
    for item in overrides:
        parts, value = _split_override(item)
        key = ".".join(parts)
        if key in PATH_KEYS and value is not None:
            value = _resolve_paths(value, base, key)
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise RecipeError(f"--set {key}: {'.'.join(parts[: i + 1])} is not a mapping")
            node = child
        node[parts[-1]] = value
    return out


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def _resolve_paths(value: Any, base: Path, key: str) -> Any:
    if isinstance(value, str):
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else (base / p).resolve())
    if isinstance(value, list):
        return [_resolve_paths(v, base, f"{key}[{i}]") for i, v in enumerate(value)]
    raise RecipeError(f"{key}: expected a path or a list of paths, got {value!r}")


def _resolve_recipe_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    out = _deep_copy(data)
    for key in PATH_KEYS:
        *parents, leaf = key.split(".")
        node: Any = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and node.get(leaf) is not None:
            node[leaf] = _resolve_paths(node[leaf], base, key)
    model = out.get("model")
    if isinstance(model, dict) and isinstance(model.get("name_or_path"), str):
        # A hub id ("Qwen/Qwen3-0.6B") looks like a relative path; only an explicitly
        # relative or absolute path ("./base", "../models/x", "/models/x") is a directory.
        name = model["name_or_path"]
        if name.startswith(("./", "../", "~")) or Path(name).is_absolute():
            model["name_or_path"] = _resolve_paths(name, base, "model.name_or_path")
    profile = out.get("profile")
    if isinstance(profile, str) and profile.endswith(".json"):
        out["profile"] = _resolve_paths(profile, base, "profile")
    return out


# -- entry points ----------------------------------------------------------------------------


def parse_recipe(data: Any, *, source: str | None = None) -> Recipe:
    """Validate a raw mapping (paths already resolved) into a `Recipe`."""
    if not isinstance(data, Mapping):
        raise RecipeError(f"a recipe is a YAML mapping at the top level, got {type(data).__name__}")
    recipe = _build(Recipe, data, "")
    _check(recipe)
    return dataclasses.replace(recipe, source=source)


def trained_window(recipe: Recipe) -> int | None:
    """The longest text, in tokens, the recipe trains its model to read whole: the size of its
    window pieces (`data.composites`), else `data.max_text_tokens`; None when neither is set.
    The export records it in the model's profile, and the server windows long text by it."""
    d = recipe.data
    if d.composites is not None and d.composites.window_tokens is not None:
        return d.composites.window_tokens
    return d.max_text_tokens


def load_recipe(path: str | Path, overrides: Sequence[str] = (), *, cwd: Path | None = None) -> Recipe:
    """Read, override (`--set`), resolve and validate a recipe file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError(f"cannot read recipe {path}: {exc.strerror or exc}") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML: {exc}") from exc
    if raw is None:
        raise RecipeError(f"{path}: the recipe is empty")
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping at the top level")
    raw = _resolve_recipe_paths(raw, path.resolve().parent)
    raw = apply_overrides(raw, overrides, cwd=cwd)
    try:
        return parse_recipe(raw, source=str(path.resolve()))
    except RecipeError as exc:
        raise RecipeError(f"{path}: {exc}") from exc


def dump_recipe(recipe: Recipe) -> str:
    """YAML of the resolved recipe (every key, defaults included); it loads back to an equal recipe."""
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False, allow_unicode=True, width=120)
