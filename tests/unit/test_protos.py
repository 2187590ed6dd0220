"""The committed stubs in regraft/v1 are exactly what proto/generate.py produces."""

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "regraft" / "v1"
FIX = "run `python proto/generate.py` from the repository root and commit the result"


def _load_generator():
    spec = importlib.util.spec_from_file_location(
        "regraft_generate", ROOT / "proto" / "generate.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stubs(directory: pathlib.Path) -> dict[str, bytes]:
    found = {}
    for pattern in ("*_pb2.py", "*_pb2.pyi", "*_pb2_grpc.py"):
        for path in directory.glob(pattern):
            found[path.name] = path.read_bytes()
    return found


def test_committed_stubs_match_the_protos(tmp_path):
    _load_generator().generate(tmp_path)
    generated = _stubs(tmp_path / "regraft" / "v1")
    committed = _stubs(COMMITTED)
    protos = sorted(p.stem for p in (ROOT / "proto" / "regraft" / "v1").glob("*.proto"))
    # Every proto yields a message module, its type stubs and a gRPC module.
    assert sorted(generated) == sorted(
        f"{stem}{suffix}" for stem in protos for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
    )
    missing = sorted(set(generated) - set(committed))
    assert not missing, f"stubs not committed: {missing}: {FIX}"
    stale = sorted(set(committed) - set(generated))
    assert not stale, f"stubs without a .proto: {stale}: delete them, then {FIX}"
    differing = sorted(name for name in generated if generated[name] != committed[name])
    assert not differing, f"regraft/v1 stubs out of date: {differing}: {FIX}"
