"""The committed stubs are exactly what scripts/generate_proto.py makes from proto/."""

from __future__ import annotations

import filecmp
import json
import re
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


def test_openapi_describes_every_unary_method_with_resolvable_schemas() -> None:
    from promptgate.v1 import classifier_pb2 as pb

    document = json.loads((REPO / "client" / "promptgate" / "v1" / "openapi.json").read_text(encoding="utf-8"))
    assert document["openapi"].startswith("3.1")
    service = pb.DESCRIPTOR.services_by_name["ClassifierService"]
    unary = [m for m in service.methods if not (m.client_streaming or m.server_streaming)]
    assert {f"/{service.full_name}/{m.name}" for m in unary} <= set(document["paths"])
    for method in unary:
        post = document["paths"][f"/{service.full_name}/{method.name}"]["post"]
        body = post["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{method.input_type.full_name}"}
        assert post["responses"]["429"] == {"$ref": "#/components/responses/Error429"}
    # Every reference resolves, and each message schema names its fields as proto3 JSON does.
    refs = re.findall(r'"\$ref": "#/components/([a-z]+)/([^"]+)"', json.dumps(document))
    for kind, name in refs:
        assert name in document["components"][kind], name
    request = document["components"]["schemas"]["promptgate.v1.ClassifyResponse"]["properties"]
    assert {"maliciousProbability", "labelScores", "truncated", "error"} <= set(request)
    # GetModelInfo has no side effects: Connect allows GET for it.
    assert "get" in document["paths"][f"/{service.full_name}/GetModelInfo"]
    assert "get" not in document["paths"][f"/{service.full_name}/Classify"]
