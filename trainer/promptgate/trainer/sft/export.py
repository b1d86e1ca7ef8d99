"""Export: a model directory that `promptgate serve --model DIR` loads as it is.

It holds the weights (LoRA merged into them) in the recipe's dtype, the tokenizer with the
Qwen3 chat template, `promptgate.json` (the profile the model was trained under), the
resolved recipe and a model card (README.md) with the data, the recipe, the loss curve and
the evaluation metrics.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptgate.profiles import ModelProfile, qwen3_chat_template

if TYPE_CHECKING:
    from .dataset import DataFiles
    from .recipe import Recipe

__all__ = ["export_model", "loss_curve", "write_model_card"]

RESOLVED_RECIPE = "recipe.resolved.yaml"
TRAINING_LOG = "training_log.json"


def export_model(
    model: Any,
    tokenizer: Any,
    profile: ModelProfile,
    recipe_yaml: str,
    export_dir: Path,
    *,
    dtype: str,
) -> Path:
    """Write the servable directory; a peft model is merged first, so the export needs no peft."""
    import torch

    export_dir.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "merge_and_unload"):  # a peft model: fold the adapters into the base weights
        model = model.merge_and_unload()
    model = model.to(getattr(torch, dtype))
    # Training turns the KV cache off (gradient checkpointing); serving wants it on.
    model.config.use_cache = True
    model.config.dtype = dtype
    model.save_pretrained(export_dir)
    tokenizer.chat_template = qwen3_chat_template()
    tokenizer.save_pretrained(export_dir)
    profile.save(export_dir)
    (export_dir / RESOLVED_RECIPE).write_text(recipe_yaml, encoding="utf-8")
    return export_dir


def loss_curve(log_history: Sequence[dict[str, Any]], points: int = 10) -> list[dict[str, Any]]:
    """About `points` evenly spaced training-loss entries, first and last included."""
    losses = [e for e in log_history if "loss" in e and "step" in e]
    if len(losses) <= points:
        return losses
    idx = sorted({round(i * (len(losses) - 1) / (points - 1)) for i in range(points)})
    return [losses[i] for i in idx]


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _labels(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {label}" for label, n in sorted(counts.items(), reverse=True))


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in counts.items())


def write_model_card(
    export_dir: Path,
    *,
    recipe: Recipe,
    recipe_yaml: str,
    profile: ModelProfile,
    files: DataFiles,
    train_summary: dict[str, Any],
    val_summary: dict[str, Any] | None,
    log_history: Sequence[dict[str, Any]],
    train_seconds: float,
    resumed_from: str | None,
    metrics: Sequence[dict[str, Any]],
    eval_note: str | None,
    device: str,
) -> Path:
    """README.md (model card) and training_log.json."""
    (export_dir / TRAINING_LOG).write_text(json.dumps(list(log_history), indent=1) + "\n", encoding="utf-8")
    m = recipe.model
    if m.name_or_path is not None:
        base = m.name_or_path
        base_line = f"`{m.name_or_path}`"
    else:
        assert m.init is not None
        base = None
        base_line = (
            f"none: a tiny Qwen3-shaped model built from scratch (shape `{m.init.shape}` with the recipe's "
            "overrides) with a tokenizer trained on the training texts"
        )
    method = (
        f"LoRA (r={recipe.lora.r}, alpha={recipe.lora.alpha}, dropout={recipe.lora.dropout}, "
        f"modules {', '.join(recipe.lora.target_modules)}), merged into the weights"
        if recipe.lora is not None
        else "full fine-tune"
    )
    front = ["---", "library_name: transformers", "pipeline_tag: text-generation"]
    if base:
        front.append(f"base_model: {base}")
    front += ["tags:", "  - promptgate", "  - prompt-injection", "  - jailbreak-detection", "  - trl", "  - sft", "---"]

    lines = [*front, "", f"# {recipe.name}", ""]
    if recipe.description:
        lines += [recipe.description.strip(), ""]
    lines += [
        "A promptgate screening model: it reads a user message sent to an AI agent and answers "
        f"{' / '.join(f'`{t}`' for t in profile.label_texts)}"
        + (", naming the attack category after a malicious label" if profile.category_separator else "")
        + ". Serve it with:",
        "",
        "```",
        f"promptgate serve --model {export_dir}",
        "```",
        "",
        "## Model",
        "",
        f"- Base model: {base_line}",
        f"- Training: {method}; TRL SFTTrainer, loss on the assistant turn only",
        f"- Profile: `{profile.name}` (`promptgate.json`); rationale-trained: {profile.rationale_trained}; "
        f"FAST format in training (hybrid thinking): {profile.hybrid_thinking}",
        f"- Weights: `{recipe.export.dtype}`",
        "",
        "## Data",
        "",
        "| role | file | sha256 | examples | malicious | benign |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    for info in files.info:
        lines.append(
            f"| {info['role']} | `{info['path']}` | `{info['sha256'][:16]}…` | {_fmt(info.get('examples'))} | "
            f"{_fmt(info.get('malicious'))} | {_fmt(info.get('benign'))} |"
        )
    d = recipe.data
    rationale_source = {
        "field": "the examples' own `rationale` field (from `promptgate data rationales`, a teacher model)",
        "template": "STAND-IN template sentences made from the gold label and category (no teacher model was "
        "used: the REASONED format is trained, real reasoning is not)",
    }[d.rationales.source]
    lines += [
        "",
        f"- Training examples as trained: {train_summary['examples']} ({_labels(train_summary['labels'])}); "
        f"{train_summary['reasoned']} with a rationale, {train_summary['fast']} in the FAST format (empty think "
        "block)",
        f"- Rationales: {rationale_source if d.use_rationales else 'none (plain-label baseline)'}"
        + (f"; share trained with a rationale {d.rationale_share}" if d.use_rationales else ""),
        f"- Texts over {d.max_text_tokens or 'what training.max_length leaves'} tokens: "
        + (
            f"{train_summary['truncated_texts']} cut to their first and last halves (the server's truncation)"
            if d.long_texts == "keep_both_ends"
            else f"{train_summary['dropped_long_texts']} dropped"
        ),
        f"- Leakage guard: {files.excluded_train} train / {files.excluded_val} val examples dropped "
        "because their text is in an excluded file",
    ]
    canonical = train_summary.get("canonicalization")
    lines.append(
        "- Canonicalization (data.canonicalize): "
        + (
            f"every text went through the server's canonicalization ({', '.join(canonical['steps'])}) "
            f"before tokenization; it changed {canonical['changed']} of {canonical['texts']} training texts"
            + (f" ({_counts(canonical['signals'])})" if canonical["signals"] else "")
            if canonical is not None
            else "off: the model trained on raw texts; serve it with canonicalization off (canonicalize_steps none)"
        )
    )
    copies = train_summary.get("obfuscated_copies") or {}
    if copies:
        same = (canonical or {}).get("copies_same_as_original") or {}
        lines.append(
            f"- Obfuscated copies (data.obfuscate): {sum(copies.values())} added ({_counts(copies)})"
            + (f"; identical to their original once canonicalized: {_counts(same)}" if same else "")
        )
    pieces = train_summary.get("window_pieces") or {}
    if pieces:
        lines.append(
            f"- Window pieces (data.composites): {sum(pieces.values())} added ({_counts(pieces)}), each at most "
            f"the {profile.window_tokens} tokens the server windows long text by"
        )
    if files.limited_from is not None:
        lines.append(f"- Subset: {train_summary['examples']} of {files.limited_from} training examples (data.limit)")
    if files.prepare_summary:
        lines.append(f"- Prepared with `promptgate data prepare` (data.prepare): {files.prepare_summary}")
    if val_summary:
        lines.append(f"- Validation examples: {val_summary['examples']} ({_labels(val_summary['labels'])})")

    curve = loss_curve(log_history)
    final = next((e for e in reversed(log_history) if "train_loss" in e), {})
    evals = [e for e in log_history if "eval_loss" in e]
    lines += [
        "",
        "## Training",
        "",
        f"- Device: {device}; {final.get('step', curve[-1]['step'] if curve else 0)} optimizer steps, "
        f"{_fmt(final.get('epoch'), 2)} epochs, {train_seconds:.0f} s"
        + (f" (resumed from `{Path(resumed_from).name}`; the time is the resumed part's)" if resumed_from else ""),
        f"- Mean training loss: {_fmt(final.get('train_loss'))}",
    ]
    if evals:
        lines.append(
            f"- Validation loss: {_fmt(evals[0]['eval_loss'])} (step {evals[0]['step']}) -> "
            f"{_fmt(evals[-1]['eval_loss'])} (step {evals[-1]['step']})"
        )
    if curve:
        lines += [
            "",
            "Loss curve (training loss on the assistant tokens):",
            "",
            "| step | epoch | loss |",
            "| ---: | ---: | ---: |",
        ]
        lines += [f"| {e['step']} | {_fmt(e.get('epoch'), 2)} | {_fmt(e['loss'], 4)} |" for e in curve]
        lines.append("")
        lines.append(f"Every logged step is in `{TRAINING_LOG}`.")

    lines += ["", "## Metrics", ""]
    if metrics:
        lines += [
            "Evaluated after export with `promptgate eval` (the server's own engine, "
            f"`{recipe.eval.engine}`), threshold 0.5:",
            "",
            "| file | mode | n | accuracy | precision | recall | F1 | FPR | ROC-AUC | ECE "
            "| recall@1%FPR | recall@5%FPR |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in metrics:
            lines.append(
                f"| `{Path(r['file']).name}` | {r['mode']} | {r['n']} | {_fmt(r['accuracy'])} | "
                f"{_fmt(r['precision'])} | {_fmt(r['recall'])} | {_fmt(r['f1'])} | {_fmt(r['fpr'])} | "
                f"{_fmt(r['roc_auc'])} | {_fmt(r['ece'])} | {_fmt(r['recall_at_1pct_fpr'])} | "
                f"{_fmt(r['recall_at_5pct_fpr'])} |"
            )
        if eval_note:
            lines += ["", f"Warnings: {eval_note}"]
    else:
        lines.append(eval_note or "Not evaluated (eval.enabled is false or there was no val split or eval file).")
    lines += ["", "## Recipe", "", f"Resolved (`{RESOLVED_RECIPE}`):", "", "```yaml", recipe_yaml.rstrip(), "```", ""]
    path = export_dir / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
