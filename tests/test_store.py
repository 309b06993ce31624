"""The results file: a row cut off by a kill never costs the rows written after it."""
from bench.store import ResultStore


def test_a_cut_last_line_does_not_swallow_the_next_row(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"point_id": "a", "status": "ok"}\n{"point_id": "b", "sta')   # killed mid-write
    store = ResultStore(str(path))
    store.append({"point_id": "c", "status": "ok"})
    assert [r["point_id"] for r in store.rows()] == ["a", "c"]


def test_whole_lines_are_left_alone(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"point_id": "a", "status": "ok"}\n')
    ResultStore(str(path))
    ResultStore(str(tmp_path / "new.jsonl"))
    assert path.read_text() == '{"point_id": "a", "status": "ok"}\n' and not (tmp_path / "new.jsonl").exists()
