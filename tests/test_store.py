"""The results file: a row cut off by a kill never costs the rows written after it, and is set aside
so the file stays readable."""
import json

from bench.measure.store import ResultStore


def test_a_cut_last_line_does_not_swallow_the_next_row(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"point_id": "a", "status": "ok"}\n{"point_id": "b", "sta')   # killed mid-write
    store = ResultStore(str(path))
    store.append({"point_id": "c", "status": "ok"})
    assert [r["point_id"] for r in store.rows()] == ["a", "c"]


def test_a_whole_last_row_without_its_newline_is_kept(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"point_id": "a", "status": "ok"}')
    store = ResultStore(str(path))
    store.append({"point_id": "b", "status": "ok"})
    assert [r["point_id"] for r in store.rows()] == ["a", "b"] and not (tmp_path / "r.jsonl.cut").exists()


def test_whole_lines_are_left_alone(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"point_id": "a", "status": "ok"}\n')
    ResultStore(str(path))
    ResultStore(str(tmp_path / "new.jsonl"))
    assert path.read_text() == '{"point_id": "a", "status": "ok"}\n' and not (tmp_path / "new.jsonl").exists()


def test_a_cut_line_is_set_aside_so_the_file_stays_readable(tmp_path, capsys):
    """pandas.read_json(lines=True) fails on a half line: the store moves it to results.jsonl.cut, nothing lost."""
    import pandas as pd
    path = tmp_path / "results.jsonl"
    good = [json.dumps({"point_id": p, "status": "ok", "median_ms": 1.0}) for p in "abc"]
    cut = '{"point_id": "d", "status": "o'
    path.write_text("\n".join(good) + "\n" + cut)
    store = ResultStore(str(path))
    assert path.read_text() == "\n".join(good) + "\n"
    assert (tmp_path / "results.jsonl.cut").read_text() == cut + "\n"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1 line" in err[0] and "results.jsonl.cut" in err[0]
    assert list(pd.read_json(path, lines=True)["point_id"]) == ["a", "b", "c"]
    assert store.done_ids() == {"a", "b", "c"}
    store.append({"point_id": "d", "status": "ok"})
    assert list(pd.read_json(path, lines=True)["point_id"]) == ["a", "b", "c", "d"]
    # a second cut line is appended to the .cut file, not written over the first
    with open(path, "a") as f:
        f.write("not json at all\n")
    ResultStore(str(path))
    assert (tmp_path / "results.jsonl.cut").read_text() == cut + "\nnot json at all\n"
    assert len(pd.read_json(path, lines=True)) == 4


def test_resume_sets_the_cut_line_aside_and_skips_the_done_points(tmp_path, monkeypatch, capsys):
    import pandas as pd

    from bench import cli

    from bench.measure import runner
    from bench import sweeps as sw
    sweeps = tmp_path / "s.yaml"
    sweeps.write_text("sweeps:\n  g:\n    op: gelu\n    impls: [eager]\n    dtypes: [fp32]\n    passes: [fwd]\n"
                      "    shapes:\n      - {M: [11, 12, 13, 14], C: 33}\n")
    pts = sw.points(sw.load(str(sweeps))["g"], "cpu")
    out = tmp_path / "res"
    out.mkdir()
    done = [json.dumps({**p, "status": "ok", "median_ms": 1.0}) for p in pts[:3]]
    (out / "results.jsonl").write_text("\n".join(done) + "\n" + done[0][:40])     # killed mid-write
    ran = []

    def fake_run(points, device, store, opts, on_row=None):
        for p in points:
            ran.append(p["point_id"])
            store.append({**p, "status": "ok", "median_ms": 1.0, "shape_label": "s"})
    monkeypatch.setattr(runner, "run", fake_run)
    assert cli.main(["--sweeps-file", str(sweeps), "--sweep", "g", "--device", "cpu", "--out", str(out),
                     "--resume", "--no-report"]) == 0
    assert "3 points already done, 1 to run" in capsys.readouterr().err
    assert ran == [pts[3]["point_id"]]
    assert sorted(pd.read_json(out / "results.jsonl", lines=True)["point_id"]) == sorted(p["point_id"] for p in pts)
    assert (out / "results.jsonl.cut").read_text() == done[0][:40] + "\n"
