"""Supervised fine-tuning from YAML recipes (TRL SFTTrainer), export and model card.

`load_recipe(path, overrides)` -> `Recipe`; `run_training(recipe, output_dir, resume=...)`
trains, exports a servable model directory and evaluates it. `promptgate train` is the
command line. Heavy libraries (torch, TRL) load inside the functions that need them.
"""

from __future__ import annotations

from .recipe import Recipe, RecipeError, apply_overrides, dump_recipe, load_recipe, parse_recipe
from .standin import template_rationale

__all__ = [
    "Recipe",
    "RecipeError",
    "TrainError",
    "TrainResult",
    "apply_overrides",
    "dump_recipe",
    "load_recipe",
    "parse_recipe",
    "run_training",
    "template_rationale",
]


def __getattr__(name: str) -> object:  # lazy: train.py pulls in TRL's world when used
    if name in ("TrainError", "TrainResult", "run_training"):
        from . import train

        return getattr(train, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
