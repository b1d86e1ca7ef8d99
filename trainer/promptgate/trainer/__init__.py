"""Training and model building for promptgate (the SFT trainer comes with its own issue)."""
