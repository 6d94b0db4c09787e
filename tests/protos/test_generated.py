"""The committed protobuf/gRPC code must be what `python -m protos.generate` makes from the .proto."""
from __future__ import annotations

from protos import generate, planner_pb2


def test_generated_code_is_fresh():
    stale = generate.stale_files()
    assert stale == [], f"stale generated files {stale}: run `python -m protos.generate` and commit"


def test_stale_check_notices_an_edit(tmp_path, monkeypatch):
    # Point the check at a copy whose generated module differs: it must be reported.
    root = tmp_path / "repo"
    (root / "protos").mkdir(parents=True)
    for name in ("planner.proto", "planner_pb2.py", "planner_pb2.pyi", "planner_pb2_grpc.py"):
        (root / "protos" / name).write_bytes((generate.ROOT / "protos" / name).read_bytes())
    (root / "protos" / "planner_pb2.py").write_text("# edited by hand\n")
    monkeypatch.setattr(generate, "ROOT", root)
    assert generate.stale_files() == ["protos/planner_pb2.py"]


def test_contract_is_versioned():
    # v2: histories travel as packed columns (History) instead of one HistoryEntry per item;
    # v3: the numeric columns as little-endian arrays in bytes fields.
    assert planner_pb2.DESCRIPTOR.package == "recrl.planner.v3"
    columns = planner_pb2.History.DESCRIPTOR.fields_by_name
    assert all(columns[name].type == columns[name].TYPE_BYTES for name in ("item_ids", "category_ids", "feedback", "steps"))
