"""The model contract: profiles (system instruction, labels, categories) and prompt building.

Shared by the server, the trainer and the evaluation, so all three format the same text.
"""

from __future__ import annotations

from pathlib import Path

from ._builtin import BUILTIN_PROFILES, HUB_MODEL_PROFILES, NARASIMHA_B, NARASIMHA_M, PROMPTGATE
from ._profile import PROFILE_FILENAME, LabelSpec, ModelProfile, ProfileError, Verdict
from ._prompts import (
    CLOSE_THINK_BLOCK,
    EMPTY_THINK_BLOCK,
    OPEN_THINK_BLOCK,
    LabelSequences,
    PromptBuilder,
    qwen3_chat_template,
)

__all__ = [
    "BUILTIN_PROFILES",
    "CLOSE_THINK_BLOCK",
    "EMPTY_THINK_BLOCK",
    "HUB_MODEL_PROFILES",
    "NARASIMHA_B",
    "NARASIMHA_M",
    "OPEN_THINK_BLOCK",
    "PROFILE_FILENAME",
    "PROMPTGATE",
    "LabelSequences",
    "LabelSpec",
    "ModelProfile",
    "ProfileError",
    "PromptBuilder",
    "Verdict",
    "qwen3_chat_template",
    "resolve_profile",
]


def resolve_profile(model: str, override: str | None = None) -> ModelProfile:
    """The profile to serve `model` with.

    In order: `override` (a built-in name or a path to a profile JSON file), the model
    directory's `promptgate.json`, the built-in profile of a published hub id. Anything
    else is an error that lists the ways out.
    """
    if override:
        if override in BUILTIN_PROFILES:
            return BUILTIN_PROFILES[override]
        if Path(override).is_file():
            return ModelProfile.load(override)
        raise ProfileError(
            f"unknown profile {override!r}: use one of {sorted(BUILTIN_PROFILES)} or a path to a profile JSON file"
        )
    local = Path(model) / PROFILE_FILENAME
    if local.is_file():
        return ModelProfile.load(local)
    name = HUB_MODEL_PROFILES.get(model.rstrip("/"))
    if name is not None:
        return BUILTIN_PROFILES[name]
    raise ProfileError(
        f"no profile for model {model!r}: the model directory has no {PROFILE_FILENAME} and it is not a known "
        f"published model; pass --profile with one of {sorted(BUILTIN_PROFILES)} or a profile JSON file"
    )
