"""Regenerate the Python stubs of proto/regraft/v1 into regraft/v1 (committed).

Run from the repository root: `python proto/generate.py`. tests/unit/test_protos.py
fails when the committed stubs differ from what this produces.
"""

import pathlib
import sys

from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCES = ROOT / "proto"


def generate(out: pathlib.Path) -> None:
    """Compile every .proto under proto/ into `out` (message and gRPC stubs)."""
    protos = sorted(str(p.relative_to(SOURCES)) for p in SOURCES.rglob("*.proto"))
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    out.mkdir(parents=True, exist_ok=True)
    code = protoc.main(
        [
            "protoc",
            f"-I{SOURCES}",
            f"-I{include}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            *protos,
        ]
    )
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")


if __name__ == "__main__":
    generate(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
