"""Supervised fine-tuning from YAML recipes (TRL SFTTrainer), export and model card.

`load_recipe(path, overrides)` -> `Recipe`; `run_training(recipe, output_dir, resume=...)`
trains, exports a servable model directory and evaluates it. `promptgate train` is the
command line. Heavy libraries (torch, TRL) load inside the functions that need them.
"""

from __future__ import annotations

from importlib import import_module

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


# Lazy: `promptgate --help` imports this package to register `train`, and must work on a
# client-only install (no PyYAML there); train.py pulls in TRL's world.
_HOME = {
    "Recipe": "recipe",
    "RecipeError": "recipe",
    "apply_overrides": "recipe",
    "dump_recipe": "recipe",
    "load_recipe": "recipe",
    "parse_recipe": "recipe",
    "template_rationale": "standin",
    "TrainError": "train",
    "TrainResult": "train",
    "run_training": "train",
}


def __getattr__(name: str) -> object:
    if name in _HOME:
        return getattr(import_module(f".{_HOME[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
