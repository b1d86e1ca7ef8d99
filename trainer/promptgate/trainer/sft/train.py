"""`promptgate train`: a recipe in, a servable, evaluated model directory out.

Steps: resolve the data (prepare raw files, or read prepared ones; drop texts of the
exclude files), load or build the model, tokenize every example with the serving prompt
builder, train with TRL's SFTTrainer (full or LoRA, seeded, checkpointed, resumable),
export (LoRA merged, recipe dtype, Qwen3 chat template, profile, resolved recipe, model
card), then evaluate the export through the server's engine and put the metrics in the card.

Run layout (`--output-dir`):
    recipe.resolved.yaml     the recipe after --set and defaults
    data/                    prepared splits, the examples as trained (formats.jsonl), manifests
    init-model/              the tiny model built from scratch (model.init recipes only)
    checkpoints/checkpoint-N TRL checkpoints (each with recipe.resolved.yaml)
    model/                   the export (export.dir)
    eval/                    the evaluator's report of the export
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from promptgate.profiles import BUILTIN_PROFILES, ModelProfile, PromptBuilder, qwen3_chat_template

from .dataset import (
    DataFiles,
    TokenizedSplit,
    add_composites,
    add_obfuscated_copies,
    assign_rationales,
    canonicalization_options,
    canonicalize_rows,
    drop_excluded,
    file_sha256,
    stratified_limit,
    tokenize_rows,
)
from .export import RESOLVED_RECIPE, export_model, write_model_card
from .recipe import Recipe, dump_recipe, trained_window

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["DataFiles", "TrainError", "TrainResult", "last_complete_checkpoint", "load_profile", "run_training"]

# Sections of the recipe that decide what a checkpoint contains: resuming under different
# values would continue a different run.
_RUN_DEFINING = ("model", "profile", "data", "training", "lora")


class TrainError(RuntimeError):
    """Training cannot start or go on; the message says why and what to do."""


@dataclass
class TrainResult:
    output_dir: Path
    export_dir: Path
    global_step: int
    train_seconds: float
    eval_seconds: float | None
    metrics: list[dict[str, Any]]
    train_summary: dict[str, Any]


def load_profile(recipe: Recipe) -> ModelProfile:
    if recipe.profile in BUILTIN_PROFILES:
        return BUILTIN_PROFILES[recipe.profile]
    return ModelProfile.load(recipe.profile)


# -- data ------------------------------------------------------------------------------------


def _label_counts(examples: Sequence[Any]) -> dict[str, int]:
    counts = {"malicious": 0, "benign": 0}
    for ex in examples:
        counts[ex.label] = counts.get(ex.label, 0) + 1
    return counts


def _resolve_data(recipe: Recipe, data_dir: Path, say: Callable[[str], None]) -> tuple[DataFiles, list, list]:
    from promptgate.trainer.data import read_examples, read_texts

    d = recipe.data
    data_dir.mkdir(parents=True, exist_ok=True)
    prepare_summary = None
    if d.prepare is not None:
        from promptgate.trainer.data.prepare import PrepareOptions, prepare_dataset

        p = d.prepare
        options = PrepareOptions(
            val_fraction=p.val_fraction,
            test_fraction=p.test_fraction,
            seed=recipe.data_seed if p.seed is None else p.seed,
            balance=p.balance,
            max_per_class=p.max_per_class,
            text_field=p.text_field,
            label_field=p.label_field,
        )
        result = prepare_dataset(
            list(p.inputs), data_dir / "prepared", options, excludes=list(d.exclude), hf_datasets=list(p.hf_datasets)
        )
        prepare_summary = result.summary()
        say(prepare_summary)
        train_path = data_dir / "prepared" / "train.jsonl"
        val_path: Path | None = data_dir / "prepared" / "val.jsonl"
    else:
        assert d.train is not None
        train_path = Path(d.train)
        val_path = Path(d.val) if d.val else None
    for path, key in (
        (train_path, "data.train"),
        (val_path, "data.val"),
        *((Path(x), "data.exclude") for x in d.exclude),
    ):
        if path is not None and not path.is_file():
            raise TrainError(f"{key}: no such file {path}")
    for path in recipe.eval.files:
        if not Path(path).is_file():
            raise TrainError(f"eval.files: no such file {path}")

    train = read_examples(train_path)
    val = read_examples(val_path) if val_path is not None else []
    excluded_texts: list[str] = []
    excluded_counts: list[int] = []
    for path in d.exclude:
        # Texts only: a file to keep out of training need not carry labels.
        texts = read_texts(path)
        excluded_texts.extend(texts)
        excluded_counts.append(len(texts))
    train, excluded_train = drop_excluded(train, excluded_texts)
    val, excluded_val = drop_excluded(val, excluded_texts)
    if excluded_train or excluded_val:
        say(f"leakage guard: dropped {excluded_train} train and {excluded_val} val examples found in data.exclude")
    limited_from = None
    if d.limit is not None and d.limit < len(train):
        limited_from = len(train)
        train = stratified_limit(train, d.limit, recipe.data_seed)
    if not train:
        raise TrainError("no training examples left (check data.train, data.exclude and data.limit)")

    files = DataFiles(
        train=train_path,
        val=val_path if val else None,
        excluded_files=[Path(x) for x in d.exclude],
        eval_files=[Path(x) for x in recipe.eval.files],
        excluded_train=excluded_train,
        excluded_val=excluded_val,
        limited_from=limited_from,
        prepare_summary=prepare_summary,
    )
    files.info.append(
        {
            "role": "train",
            "path": str(train_path),
            "sha256": file_sha256(train_path),
            "examples": len(train),
            **_label_counts(train),
        }
    )
    if val:
        assert val_path is not None
        files.info.append(
            {
                "role": "val",
                "path": str(val_path),
                "sha256": file_sha256(val_path),
                "examples": len(val),
                **_label_counts(val),
            }
        )
    for path, count in zip(d.exclude, excluded_counts, strict=True):
        files.info.append({"role": "excluded", "path": str(path), "sha256": file_sha256(path), "examples": count})
    for path in recipe.eval.files:
        evaluated = read_examples(path)
        files.info.append(
            {"role": "eval", "path": str(path), "sha256": file_sha256(path), "examples": len(evaluated),
             **_label_counts(evaluated)}
        )  # fmt: skip
    return files, train, val


# -- model -----------------------------------------------------------------------------------


def _torch_dtype(name: str) -> Any:
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _tiny_spec(recipe: Recipe) -> Any:
    from promptgate.trainer.tiny_model import SHAPES

    init = recipe.model.init
    assert init is not None
    overrides = {
        f.name: getattr(init, f.name)
        for f in dataclasses.fields(init)
        if f.name not in ("shape", "corpus_limit") and getattr(init, f.name) is not None
    }
    overrides.setdefault("seed", recipe.training.seed)
    return dataclasses.replace(SHAPES[init.shape], **overrides)


def _model_source(
    recipe: Recipe, out: Path, train_file: Path, profile: ModelProfile, say: Callable[[str], None]
) -> str:
    """The directory or hub id training starts from; a tiny model is built once per run."""
    if recipe.model.name_or_path is not None:
        return recipe.model.name_or_path
    from promptgate.trainer.tiny_model import build_tiny_model

    init_dir = out / "init-model"
    spec = _tiny_spec(recipe)
    marker = init_dir / "promptgate-init.json"
    wanted = {"spec": dataclasses.asdict(spec), "corpus_sha256": file_sha256(train_file)}
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == wanted:
        return str(init_dir)  # same spec, same corpus: the same model (and the checkpoints' tokenizer)
    assert recipe.model.init is not None
    say(
        f"building a tiny Qwen3-shaped model from scratch ({spec.num_hidden_layers} layers, "
        f"hidden {spec.hidden_size}, vocab {spec.vocab_size}); tokenizer trained on {train_file.name}"
    )
    build_tiny_model(
        init_dir, profile=profile, corpus_files=[train_file], corpus_limit=recipe.model.init.corpus_limit, spec=spec
    )
    marker.write_text(json.dumps(wanted, indent=2) + "\n", encoding="utf-8")
    return str(init_dir)


def _load_model(source: str, recipe: Recipe) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    # Train under the exact template the export ships and the server renders.
    tokenizer.chat_template = qwen3_chat_template()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        source, dtype=_torch_dtype(recipe.model.dtype), attn_implementation=recipe.model.attn_implementation
    )
    return model, tokenizer


# -- trainer ---------------------------------------------------------------------------------


def _sft_config(recipe: Recipe, checkpoints: Path, has_eval: bool, cuda: bool) -> Any:
    from trl import SFTConfig

    t = recipe.training
    return SFTConfig(
        output_dir=str(checkpoints),
        num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps if t.max_steps is not None else -1,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=t.warmup_steps,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        # Examples are fitted to max_length at the text level (tokenize_rows), so TRL's
        # truncation never fires; it stays as a guard.
        max_length=t.max_length,
        seed=t.seed,
        data_seed=t.seed,
        gradient_checkpointing=t.gradient_checkpointing,
        # Mixed precision only where there is a GPU; on CPU TRL's bf16 default is wrong.
        bf16=t.bf16 and cuda,
        use_cpu=not cuda,
        dataloader_pin_memory=cuda,
        train_sampling_strategy=t.train_sampling_strategy,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        eval_strategy="steps" if has_eval and t.eval_steps else "no",
        eval_steps=t.eval_steps if has_eval and t.eval_steps else None,
        optim=t.optim,
        report_to="none",
        disable_tqdm=True,
        # The pre-tokenized columns are all the model needs.
        remove_unused_columns=True,
    )


def _callbacks(recipe_yaml: str, say: Callable[[str], None]) -> list[Any]:
    from transformers import TrainerCallback

    class SaveRecipe(TrainerCallback):
        """Every checkpoint carries the resolved recipe it was trained under."""

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                (ckpt / RESOLVED_RECIPE).write_text(recipe_yaml, encoding="utf-8")

    class Progress(TrainerCallback):
        """One line per logging step: step, epoch, loss, learning rate, elapsed time."""

        def __init__(self) -> None:
            self.started = time.monotonic()

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            if not logs:
                return
            parts = [f"step {state.global_step}/{state.max_steps}", f"epoch {state.epoch or 0:.2f}"]
            for key in ("loss", "eval_loss", "mean_token_accuracy", "learning_rate", "train_loss"):
                if key in logs:
                    value = logs[key]
                    parts.append(f"{key} {value:.3g}" if isinstance(value, float) else f"{key} {value}")
            parts.append(f"{time.monotonic() - self.started:.0f}s")
            say("  ".join(parts))

    return [SaveRecipe(), Progress()]


def last_complete_checkpoint(checkpoints: Path) -> Path | None:
    """The newest checkpoint that was written to the end.

    The trainer writes `trainer_state.json` after the weights, optimizer and RNG states, so
    a checkpoint without it was cut short (a kill during the save) and cannot be resumed.
    """
    if not checkpoints.is_dir():
        return None
    done = []
    for path in checkpoints.iterdir():
        step = path.name.removeprefix("checkpoint-")
        if path.is_dir() and step.isdigit() and (path / "trainer_state.json").is_file():
            done.append((int(step), path))
    return max(done)[1] if done else None


def _checkpoint_to_resume(checkpoints: Path, resume: str | bool | None) -> str | None:
    last = last_complete_checkpoint(checkpoints)
    if resume is None or resume is False:
        if last is not None:
            raise TrainError(
                f"{checkpoints} already holds checkpoints ({last.name}); pass --resume to continue that run "
                "or choose another --output-dir"
            )
        return None
    if resume is True:
        if last is None:
            raise TrainError(f"--resume: no complete checkpoint in {checkpoints}")
        return str(last)
    path = Path(resume)
    if not (path / "trainer_state.json").is_file():
        raise TrainError(f"--resume {resume}: not a complete checkpoint directory (no trainer_state.json)")
    return str(path)


def _check_same_run(out: Path, recipe: Recipe) -> None:
    """Resuming under a different recipe would silently continue another run: refuse."""
    saved = out / RESOLVED_RECIPE
    if not saved.is_file():
        return
    before = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
    now = recipe.to_dict()
    changed = sorted(_diff_keys({k: before.get(k) for k in _RUN_DEFINING}, {k: now.get(k) for k in _RUN_DEFINING}))
    if changed:
        raise TrainError(
            f"--resume: the recipe differs from the one this run was started with ({saved}) at "
            f"{', '.join(changed)}; resume with the same recipe and --set values, or start a new --output-dir"
        )


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = set(a) | set(b)
        out: list[str] = []
        for k in keys:
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if a == b else [prefix]


def _write_formats(path: Path, rows: Sequence[Any], split: TokenizedSplit) -> None:
    """Which example trained in which format, and how long it was (for audits)."""
    kept = set(split.ids)
    lengths = dict(zip(split.ids, (len(x) for x in split.input_ids), strict=True))
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            if row.id not in kept:
                continue
            record = {
                "id": row.id,
                "format": "reasoned" if row.rationale else "fast",
                "tokens": lengths[row.id],
                "rationale": row.rationale,
                "obfuscation": row.obfuscation,
                "window_piece": row.window_piece,
                "canonical_signals": list(row.signals),
            }
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")


# -- the run ---------------------------------------------------------------------------------


def run_training(
    recipe: Recipe,
    output_dir: str | Path,
    *,
    resume: str | bool | None = None,
    say: Callable[[str], None] = print,
) -> TrainResult:
    """Train, export and evaluate as the recipe says; returns where everything went."""
    out = Path(output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    checkpoints = out / "checkpoints"
    resume_from = _checkpoint_to_resume(checkpoints, resume)
    if resume_from is not None:
        _check_same_run(out, recipe)
        say(f"resuming from {resume_from}")
    recipe_yaml = dump_recipe(recipe)
    (out / RESOLVED_RECIPE).write_text(recipe_yaml, encoding="utf-8")

    # The checks above are instant; torch and TRL take seconds to import.
    import torch
    from transformers import set_seed
    from trl import SFTTrainer

    set_seed(recipe.training.seed)
    cuda = torch.cuda.is_available()
    if recipe.training.bf16 and not cuda:
        say("training.bf16: no GPU here, training in float32 on CPU")
    profile = load_profile(recipe)

    files, train_examples, val_examples = _resolve_data(recipe, out / "data", say)
    source = _model_source(recipe, out, files.train, profile, say)
    model, tokenizer = _load_model(source, recipe)
    builder = PromptBuilder(tokenizer, profile)

    d = recipe.data
    seed = recipe.data_seed
    train_rows = assign_rationales(
        train_examples, use_rationales=d.use_rationales, share=d.rationale_share, source=d.rationales.source, seed=seed
    )
    val_rows = assign_rationales(
        val_examples,
        use_rationales=d.use_rationales,
        share=d.rationale_share,
        source=d.rationales.source,
        seed=seed + 1,
    )
    if d.obfuscate is not None:
        o = d.obfuscate
        before = len(train_rows)
        train_rows = add_obfuscated_copies(
            train_rows, share=o.share, families=o.families, seed=seed if o.seed is None else o.seed
        )
        say(f"obfuscation: {len(train_rows) - before} obfuscated copies added ({', '.join(o.families)})")
    if d.composites is not None:
        c = d.composites
        before = len(train_rows)
        window = trained_window(recipe)
        assert window is not None  # the recipe check requires one
        train_rows = add_composites(
            train_rows,
            share=c.share,
            window_tokens=window,
            encode=builder.encode_text_with_offsets,
            seed=seed if c.seed is None else c.seed,
        )
        say(
            f"composites: {len(train_rows) - before} window pieces of {window} tokens added "
            "(half with an attack inside)"
        )
    canonical_stats = None
    options = canonicalization_options(d.canonicalize)
    if options is not None:
        # What the server does to every query before its model reads it.
        train_rows, canonical_stats = canonicalize_rows(train_rows, options)
        val_rows, _ = canonicalize_rows(val_rows, options)
        canonical_stats["steps"] = list(options.steps)
        if canonical_stats["dropped_empty"]:
            say(f"canonicalization: {canonical_stats['dropped_empty']} training texts were empty after it: dropped")
        say(
            f"canonicalization ({', '.join(options.steps)}): {canonical_stats['changed']} of "
            f"{canonical_stats['texts']} training texts changed"
            + (f" ({_counts(canonical_stats['signals'])})" if canonical_stats["signals"] else "")
            + (
                f"; obfuscated copies identical to their original after it: "
                f"{_counts(canonical_stats['copies_same_as_original'])}"
                if canonical_stats["copies_same_as_original"]
                else ""
            )
        )
    fit = {"max_length": recipe.training.max_length, "max_text_tokens": d.max_text_tokens, "long_texts": d.long_texts}
    train_split = tokenize_rows(builder, train_rows, **fit)
    val_split = tokenize_rows(builder, val_rows, **fit)
    if not len(train_split):
        raise TrainError("every training text was dropped as too long (data.long_texts: drop); raise max_text_tokens")
    _write_formats(out / "data" / "formats.jsonl", train_rows, train_split)
    summary = {**train_split.summary(), "canonicalization": canonical_stats}
    say(
        f"train: {summary['examples']} examples ({summary['reasoned']} with rationale, {summary['fast']} FAST), "
        f"{summary['truncated_texts']} texts truncated, median {summary['tokens_median']} tokens; "
        f"val: {len(val_split)} examples"
    )

    peft_config = None
    if recipe.lora is not None:
        from peft import LoraConfig

        lo = recipe.lora
        peft_config = LoraConfig(
            r=lo.r,
            lora_alpha=lo.alpha,
            lora_dropout=lo.dropout,
            target_modules=list(lo.target_modules),
            task_type="CAUSAL_LM",
        )

    args = _sft_config(recipe, checkpoints, has_eval=bool(len(val_split)), cuda=cuda)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_split.to_dataset(),
        eval_dataset=val_split.to_dataset() if len(val_split) and args.eval_strategy != "no" else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=_callbacks(recipe_yaml, say),
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # Progress prints the same, one line per log
    started = time.monotonic()
    trainer.train(resume_from_checkpoint=resume_from)
    train_seconds = time.monotonic() - started
    global_step = int(trainer.state.global_step)
    say(f"trained to step {global_step} in {train_seconds:.0f} s")

    export_dir = (out / recipe.export.dir).resolve()
    trained_profile = dataclasses.replace(
        profile,
        rationale_trained=summary["reasoned"] > 0,
        hybrid_thinking=summary["fast"] > 0,
        window_tokens=trained_window(recipe),
    )
    export_model(trainer.model, tokenizer, trained_profile, recipe_yaml, export_dir, dtype=recipe.export.dtype)
    say(f"exported to {export_dir}")
    log_history = list(trainer.state.log_history)
    del trainer, model
    if cuda:
        torch.cuda.empty_cache()

    metrics: list[dict[str, Any]] = []
    eval_seconds = None
    eval_note = None
    eval_error: Exception | None = None
    if recipe.eval.enabled:
        eval_files = ([files.val] if files.val else []) + files.eval_files
        if eval_files:
            started = time.monotonic()
            try:
                metrics, eval_note = _evaluate(recipe, export_dir, eval_files, out / "eval", say)
            except Exception as exc:  # the export is done and kept: the card says what failed
                eval_error = exc
                eval_note = f"The evaluation failed: {type(exc).__name__}: {exc}"
            eval_seconds = time.monotonic() - started
    write_model_card(
        export_dir,
        recipe=recipe,
        recipe_yaml=recipe_yaml,
        profile=trained_profile,
        files=files,
        train_summary=summary,
        val_summary=val_split.summary() if len(val_split) else None,
        log_history=log_history,
        train_seconds=train_seconds,
        resumed_from=resume_from,
        metrics=metrics,
        eval_note=eval_note,
        device="cuda" if cuda else "cpu",
    )
    if eval_error is not None:
        raise TrainError(
            f"the model is trained and exported to {export_dir}, but its evaluation failed: {eval_error}; "
            f"run `promptgate eval --model {export_dir} --data FILE` to retry"
        ) from eval_error
    return TrainResult(
        output_dir=out,
        export_dir=export_dir,
        global_step=global_step,
        train_seconds=train_seconds,
        eval_seconds=eval_seconds,
        metrics=metrics,
        train_summary=summary,
    )


def _evaluate(
    recipe: Recipe, export_dir: Path, files: Sequence[Path], out: Path, say: Callable[[str], None]
) -> tuple[list[dict[str, Any]], str | None]:
    """Headline metrics per (file, mode) of the export, through the evaluator (the server's engine)."""
    from promptgate.trainer.evaluation import run_evaluation

    e = recipe.eval
    say(f"evaluating the export on {', '.join(f.name for f in files)} ({', '.join(e.modes)})")
    report = run_evaluation(
        export_dir,
        [str(f) for f in files],
        modes=list(e.modes),
        engine=e.engine,
        out_dir=out,
        limit=e.limit,
        max_rationale_tokens=e.max_rationale_tokens,
    )
    rows = []
    for path in files:
        for mode in e.modes:
            head = report.headline(mode, str(path))
            rows.append({"file": str(path), "mode": mode, **head})
            say(
                f"  {path.name} {mode}: accuracy {_fmt(head.get('accuracy'))} f1 {_fmt(head.get('f1'))} "
                f"roc_auc {_fmt(head.get('roc_auc'))} (n={head['n']})"
            )
    return rows, "; ".join(report.warnings) or None


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in counts.items())


def _fmt(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"
