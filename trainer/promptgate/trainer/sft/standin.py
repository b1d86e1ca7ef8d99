"""STAND-IN rationales: one fixed sentence per (verdict, category), for offline training.

Real rationales come from a teacher model (`promptgate data rationales`). Where no teacher is
reachable (CI, this project's CPU machines), `data.rationales.source: template` fills every
example's rationale from this table so the REASONED format (think block, rationale, label)
can still be trained and tested end to end. These sentences say what kind of message it is,
derived from the gold label and category; they are NOT explanations of the particular text,
and a model trained on them learns the format, not to reason. They never contain a label
word, so the label is still something the model has to write after the rationale.
"""

from __future__ import annotations

__all__ = ["TEMPLATE_RATIONALES", "template_rationale"]

# (verdict, category) -> sentence; category None is the fallback for the verdict.
TEMPLATE_RATIONALES: dict[tuple[str, str | None], str] = {
    ("malicious", "jailbreak"): (
        "The message tries to free the assistant from its rules through a persona, role-play or "
        "hypothetical framing, which is a jailbreak attempt."
    ),
    ("malicious", "harmful_request"): (
        "The message asks for help with something dangerous, illegal or abusive that the assistant must refuse."
    ),
    ("malicious", "harmful_request_reformulated"): (
        "The message asks for help with something dangerous, illegal or abusive that the assistant must refuse."
    ),
    ("malicious", "prompt_injection"): (
        "The message tries to override the assistant's instructions with its own, which is a prompt injection."
    ),
    ("malicious", "indirect_prompt_injection"): (
        "The message hides instructions for the assistant inside content it is asked to process, "
        "an indirect prompt injection."
    ),
    ("malicious", "system_prompt_extraction"): (
        "The message tries to make the assistant reveal its hidden system instructions."
    ),
    ("malicious", "agent_abuse"): (
        "The message tries to make the agent run code or use its tools against the system it runs on."
    ),
    ("malicious", None): ("The message tries to make the assistant act against its instructions or its safety rules."),
    ("benign", "assistant_query"): (
        "The message is an everyday question for an assistant, with no attempt to change its instructions."
    ),
    ("benign", "coding"): (
        "The message asks for ordinary programming help and does not try to change the assistant's rules."
    ),
    ("benign", "general_instruction"): (
        "The message is an ordinary task instruction with nothing that targets the assistant's rules."
    ),
    ("benign", "role_play"): (
        "The message carries on a harmless role-play or story without trying to lift the assistant's rules."
    ),
    ("benign", "role_play_instruction"): (
        "The message sets up a harmless role or task for the assistant and does not ask it to drop its rules."
    ),
    ("benign", "security_benign"): (
        "The message asks about security in a legitimate, defensive way and does not attack the assistant."
    ),
    ("benign", "tool_use"): "The message asks the assistant to use a tool for an ordinary task.",
    ("benign", None): (
        "The message is an ordinary request that neither tries to change the assistant's instructions nor seeks harm."
    ),
}


def template_rationale(verdict: str, category: str | None) -> str:
    """The stand-in sentence for a gold verdict ('malicious' or 'benign') and category."""
    if verdict not in ("malicious", "benign"):
        raise ValueError(f"verdict must be 'malicious' or 'benign', got {verdict!r}")
    return TEMPLATE_RATIONALES.get((verdict, category)) or TEMPLATE_RATIONALES[(verdict, None)]
