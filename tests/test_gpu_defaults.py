"""Per-GPU default tile configs as data (kernels/gpu_defaults.py) and --record-defaults (bench/record.py): a tuning
sweep's results become a GPU's defaults; the caller's config wins, then the user's record, the shipped one, the
family preset; two GPUs of one architecture can differ."""
import json

import pytest

from bench import record
from bench.cli import main
from kernels import device as devices
from kernels import gpu_defaults, registry
from model.ops import Backend

H100, H200 = "NVIDIA H100 80GB HBM3", "NVIDIA H200"


@pytest.fixture
def files(tmp_path, monkeypatch):
    shipped, user = tmp_path / "shipped.json", tmp_path / "user.json"
    monkeypatch.setattr(gpu_defaults, "shipped_path", lambda: str(shipped))
    monkeypatch.setenv(gpu_defaults.USER_ENV, str(user))
    return shipped, user


def _write(path, gpus):
    path.write_text(json.dumps({"version": 1, "gpus": gpus}))


def _impl(op="layer_norm", name="triton"):
    """The impl whatever this machine can run (its config rules are what is tested)."""
    return registry.resolve(op, name, "cpu").impl


def _on(monkeypatch, gpu):
    monkeypatch.setattr(devices, "name", lambda device: gpu)


def test_the_caller_then_the_user_then_the_shipped_record_then_the_preset(files, monkeypatch):
    shipped, user = files
    impl = _impl()
    _write(shipped, {H100: {"layer_norm/triton": {"config": {"ROWS": 4}}}})
    _on(monkeypatch, H100)
    cfg, src = gpu_defaults.config(impl, "layer_norm", "triton", None, "cuda:0")
    assert cfg["ROWS"] == 4 and src == f"shipped.json: {H100}"
    _write(user, {H100: {"layer_norm/triton": {"config": {"ROWS": 8}}}})
    assert gpu_defaults.config(impl, "layer_norm", "triton", {}, "cuda:0")[0]["ROWS"] == 8     # the user's first
    cfg, src = gpu_defaults.config(impl, "layer_norm", "triton", {"ROWS": 2}, "cuda:0")
    assert cfg["ROWS"] == 2 and src == "caller"                                            # the caller's whole
    _on(monkeypatch, H200)                                                                   # same arch, no record
    assert gpu_defaults.config(impl, "layer_norm", "triton", None, "cuda:0") == (impl.config(), "preset")
    assert gpu_defaults.config(impl, "layer_norm", "triton", None, "cpu") == (impl.config(), "preset")


def test_a_stale_entry_gives_way_to_the_preset_and_says_so(files, monkeypatch):
    shipped, _ = files
    _write(shipped, {H100: {"layer_norm/triton": {"config": {"NO_SUCH_PARAM": 1}}}})
    _on(monkeypatch, H100)
    impl = _impl()
    cfg, src = gpu_defaults.config(impl, "layer_norm", "triton", None, "cuda:0")
    assert cfg == impl.config() and src.startswith("preset (shipped.json") and "NO_SUCH_PARAM" in src


def test_the_model_runs_its_gpus_record_and_notes_it(files, monkeypatch):
    shipped, _ = files
    _write(shipped, {H100: {"layer_norm/triton": {"config": {"ROWS": 4}}}})
    _on(monkeypatch, H100)
    b = Backend("triton", log=lambda m: None)
    assert b._config("layer_norm", "triton", _impl(), "cuda:0")["ROWS"] == 4
    assert any("default config from shipped.json" in n for n in b.notes)


def test_a_malformed_record_is_one_line(files, capsys, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1, "gpus": {"X": {"no_slash": {"config": {}}}}}')
    with pytest.raises(ValueError, match="must be 'op/impl'"):
        gpu_defaults.read(str(bad))
    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join(json.dumps(r) for r in [_row(H100, {}, A, 1.0), _row(H100, {"BLOCK_M": 64}, A, 0.5)]))
    assert main(["--record-defaults", str(rows), "--defaults-file", str(bad)]) == 2
    assert "bad.json" in capsys.readouterr().err
    assert main(["--defaults-file", str(bad), "--list"]) == 2    # --defaults-file alone means nothing


def _row(gpu, cfg, shape, ms, impl="triton", status="ok"):
    return {"op": "linear", "impl": impl, "device_name": gpu, "device": "cuda:0", "config": cfg, "shape": shape, "dtype": "bf16",
            "pass": "fwd", "timer": "cuda_graph", "median_ms": ms, "status": status, "git_commit": "abc1234"}


A, B = {"M": 64, "N": 64, "K": 64}, {"M": 128, "N": 64, "K": 64}


def test_decide_records_a_win_beyond_the_margin_and_only_on_full_coverage():
    fast, close, partial = {"BLOCK_M": 64}, {"BLOCK_M": 32}, {"BLOCK_M": 16}
    rows = [_row(H100, {}, A, 1.0), _row(H100, {}, B, 2.0),
            _row(H100, fast, A, 0.9), _row(H100, fast, B, 1.8),
            _row(H100, close, A, 0.995), _row(H100, close, B, 1.99),
            _row(H100, partial, A, 0.1),                                # measured at one point of two: not a candidate
            _row(H100, {"BLOCK_M": 8}, A, 0.01, status="wrong"),        # never a wrong row
            _row(H200, {}, A, 1.0), _row(H200, fast, A, 0.995),         # the H200: within the margin, default kept
            {**_row(H200, close, A, 0.5), "interpreted": True},         # an interpreter's time: never
            {**_row(H200, close, A, 0.5), "device": "cpu"}]             # nor a CPU's
    d = {x["gpu"]: x for x in record.decide(rows)}
    assert d[H100]["record"] and d[H100]["config"] == fast and d[H100]["configs"] == 3 and d[H100]["points"] == 2
    assert d[H100]["gain"] == pytest.approx(0.1, abs=1e-3)
    assert not d[H200]["record"]
    assert "keep the default" in record.text(list(d.values()))


def test_record_writes_merges_and_drops(tmp_path):
    path = tmp_path / "rec.json"
    rows = [_row(H100, {}, A, 1.0), _row(H100, {"BLOCK_M": 64}, A, 0.5)]
    assert record.write(record.decide(rows), str(path), "2026-12-06") == (1, 0)
    entry = gpu_defaults.read(str(path))["gpus"][H100]["linear/triton"]
    assert entry["config"] == {"BLOCK_M": 64} and entry["measured"]["time_vs_default"] == 0.5
    assert entry["measured"]["commits"] == ["abc1234"] and entry["measured"]["date"] == "2026-12-06"
    # a later run where the default wins: the entry goes
    rows = [_row(H100, {}, A, 0.4), _row(H100, {"BLOCK_M": 64}, A, 0.5)]
    assert record.write(record.decide(rows), str(path), "2026-12-07") == (0, 1)
    assert gpu_defaults.read(str(path))["gpus"] == {}


def test_cli_records_into_the_file_named(tmp_path, capsys):
    rows = tmp_path / "results.jsonl"
    rows.write_text("\n".join(json.dumps(r) for r in [_row(H100, {}, A, 1.0), _row(H100, {"BLOCK_M": 64}, A, 0.8)]))
    out = tmp_path / "d.json"
    assert main(["--record-defaults", str(rows), "--defaults-file", str(out)]) == 0
    text = capsys.readouterr().out
    assert 'record {"BLOCK_M": 64}' in text and "1 entry recorded" in text
    assert gpu_defaults.read(str(out))["gpus"][H100]["linear/triton"]["config"] == {"BLOCK_M": 64}


def test_the_shipped_record_is_one_the_kernels_read():
    data = gpu_defaults.read(gpu_defaults.shipped_path())
    for gpu, entries in data["gpus"].items():
        for key, e in entries.items():
            op, impl = key.split("/")
            _impl(op, impl).config(e["config"])    # every shipped entry is a config its impl takes
            assert e["measured"]["date"] and e["measured"]["commits"]


def test_rows_a_record_cannot_stand_on_are_refused_or_left_out(tmp_path, capsys):
    ran_a_record = {**_row(H100, {}, A, 1.0), "config_source": f"gpu_defaults.json: {H100}"}
    with pytest.raises(record.RecordError, match="TILEBENCH_GPU_DEFAULTS=off"):
        record.decide([ran_a_record, _row(H100, {"BLOCK_M": 64}, A, 0.5)])
    with pytest.raises(record.RecordError, match="mix timers"):
        record.decide([_row(H100, {}, A, 1.0), _row(H100, {"BLOCK_M": 64}, A, 0.5),
                       {**_row(H100, {}, A, 1.0), "timer": "cuda_events"}])
    unchecked = {**_row(H100, {"BLOCK_M": 64}, A, 0.5), "stress": "off"}
    noisy = {**_row(H100, {"BLOCK_M": 32}, A, 0.5), "iqr_rel": 0.5}
    assert record.decide([_row(H100, {}, A, 1.0), unchecked, noisy]) == []
    rows = tmp_path / "results.jsonl"
    rows.write_text(json.dumps(ran_a_record) + "\n" + json.dumps(_row(H100, {"BLOCK_M": 64}, A, 0.5)))
    assert main(["--record-defaults", str(rows), "--defaults-file", str(tmp_path / "d.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ran a recorded config" in err and not (tmp_path / "d.json").exists()


def test_off_reads_no_record(files, monkeypatch):
    shipped, _ = files
    _write(shipped, {H100: {"layer_norm/triton": {"config": {"ROWS": 4}}}})
    _on(monkeypatch, H100)
    monkeypatch.setenv(gpu_defaults.USER_ENV, gpu_defaults.OFF)
    assert gpu_defaults.config(_impl(), "layer_norm", "triton", None, "cuda:0") == (_impl().config(), "preset")
    assert gpu_defaults.user_path().endswith(gpu_defaults.USER_DEFAULT)     # never a file named "off"
