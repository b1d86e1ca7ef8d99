"""Regenerate the Python gRPC code in client/ from proto/.

The generated modules are committed; tests/test_generated_code.py runs this script into
a temporary folder and fails on any difference, so edit the .proto and rerun:

    python scripts/generate_proto.py

grpcio-tools is pinned in pyproject.toml's `dev` extra: another version writes other code.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
# Only our own package is generated: google/rpc/status.proto is vendored in proto/ for
# other languages, while Python takes it from googleapis-common-protos.
PROTOS = sorted(p.relative_to(PROTO_ROOT) for p in (PROTO_ROOT / "promptgate").rglob("*.proto"))


def generate(out: Path) -> None:
    from grpc_tools import protoc

    out.mkdir(parents=True, exist_ok=True)
    well_known = resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *(str(p) for p in PROTOS),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    # Generated folders get an __init__.py so that `promptgate.v1` is a regular package
    # inside the `promptgate` namespace.
    for proto in PROTOS:
        init = out / proto.parent / "__init__.py"
        if not init.exists():
            init.write_text('"""Generated from proto/ by scripts/generate_proto.py; do not edit."""\n')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "client", help="output root (default: client/)")
    args = parser.parse_args(argv)
    generate(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
