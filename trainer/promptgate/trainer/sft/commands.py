"""`promptgate train RECIPE.yaml [--output-dir DIR] [--resume [CHECKPOINT]] [--set key.path=value ...]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

TRAIN_EXTRA_HINT = "the trainer needs the train extra: pip install 'promptgate[train]'"


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands; each sets `handler(args) -> exit code`."""
    p = sub.add_parser(
        "train",
        help="fine-tune a screening model from a YAML recipe (TRL SFT), export and evaluate it",
        description=(
            "Train as RECIPE says, export a model directory that `promptgate serve --model` loads, and "
            "evaluate it on the val split and the recipe's eval files. Relative paths in the recipe resolve "
            "against the recipe file's directory; paths given with --set against the current directory."
        ),
    )
    p.add_argument("recipe", type=Path, help="recipe YAML file (see trainer/recipes/)")
    p.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where the run writes checkpoints, data, the export (model/) and eval/ (default: runs/<recipe name>)",
    )
    p.add_argument(
        "--resume",
        nargs="?",
        const="",
        default=None,
        metavar="CHECKPOINT",
        help="continue from the last checkpoint in the output directory, or from CHECKPOINT",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a recipe key (value parsed as YAML), e.g. --set training.max_steps=20; repeatable",
    )
    p.set_defaults(handler=_train)


def _train(args: argparse.Namespace) -> int:
    from .recipe import RecipeError, load_recipe

    try:
        recipe = load_recipe(args.recipe, args.overrides)
    except RecipeError as exc:
        print(f"promptgate train: {exc}", file=sys.stderr)
        return 2
    try:
        from .train import TrainError, run_training
    except ImportError as exc:
        print(f"promptgate train: {TRAIN_EXTRA_HINT} ({exc})", file=sys.stderr)
        return 1
    output_dir = args.output_dir or Path("runs") / recipe.name
    resume = None if args.resume is None else (True if args.resume == "" else args.resume)
    from promptgate.profiles import ProfileError
    from promptgate.trainer.data import DataError

    try:
        result = run_training(recipe, output_dir, resume=resume, say=lambda line: print(line, flush=True))
    except (TrainError, RecipeError, DataError, ProfileError) as exc:
        print(f"promptgate train: {exc}", file=sys.stderr)
        return 1
    except ImportError as exc:
        print(f"promptgate train: {TRAIN_EXTRA_HINT} ({exc})", file=sys.stderr)
        return 1
    print(f"model: {result.export_dir}")
    print(f"serve it: promptgate serve --model {result.export_dir}")
    return 0
