"""The committed stubs are exactly what scripts/generate_proto.py makes from proto/."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

from .support import REPO


def test_generated_code_matches_proto(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(REPO / "scripts" / "generate_proto.py"), "--out", str(tmp_path)], check=True)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed_dir = REPO / "client" / "promptgate" / "v1"
    committed = sorted(
        p.relative_to(REPO / "client") for p in committed_dir.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    )
    assert generated == committed, "generated files differ from the committed ones: run scripts/generate_proto.py"
    drifted = [str(p) for p in generated if not filecmp.cmp(tmp_path / p, REPO / "client" / p, shallow=False)]
    assert not drifted, f"{drifted} drifted from proto/: run scripts/generate_proto.py and commit the result"
