"""cuTile linear's Hopper variants (issue 14): each compiles for sm_90 without spilling registers, the
resource reader sees spills where they are, and the launcher passes each variant's hints and grid."""
import pytest
import torch

from kernels import aot, cutile_env

m = pytest.importorskip("kernels.linear.cutile")   # needs cuda.tile importable

compilable = pytest.mark.skipif(cutile_env.why_not_compilable() is not None,
                                reason=f"cuTile cannot compile here: {cutile_env.why_not_compilable()}")
needs_cuobjdump = pytest.mark.skipif(aot.cuobjdump_path() is None, reason="no cuobjdump to read spills")


def test_spills_count_the_stack_frame():
    """tileiras spills into the stack frame: LOCAL stays 0 (the reader once said 0 spills for 1.8 KB)."""
    text = (" Function a:\n  REG:255 STACK:1816 SHARED:197752 LOCAL:0 CONSTANT[0]:1088 TEXTURE:0\n"
            " Function b:\n  REG:40 STACK:0 SHARED:0 LOCAL:8 CONSTANT[0]:1088 TEXTURE:0\n")
    assert aot.parse_resource_usage(text) == {"registers": 255, "smem_bytes": 197752, "spills": 1816}
    assert aot.parse_resource_usage("Resource usage:\n Common:\n  GLOBAL:0\n") == {}


@compilable
@needs_cuobjdump
def test_the_old_128x256_config_is_seen_spilling():
    """128x256 on the compiler's default 4 math warps (the preset that ran 0.07-0.3x) spills: the variants'
    no-spill test below can fail."""
    cfg = {**m.PRESETS["tile_128x256"], "num_worker_warps": None}
    rows = m._aot(cfg, "sm_90")
    fwd = next(r for r in rows if r["kernel"] == "linear_fwd")
    assert fwd["status"] == "ok" and fwd["spills"] > 0


@compilable
@needs_cuobjdump
@pytest.mark.parametrize("name", ["hopper", *m.HOPPER_VARIANTS])
def test_hopper_variant_exports_for_sm90_without_spills(name):
    rows = m._aot(m.IMPL.config(m.PRESETS[name]), "sm_90")
    bad = [f"{r['kernel']}: {r['status']} {r['message']} spills={r['spills']}" for r in rows
           if r["status"] != "ok" or r["spills"]]
    assert rows and not bad, f"{name}: " + "; ".join(bad)
    assert all(r["smem_bytes"] <= aot.SMEM_LIMIT["hopper"] for r in rows)


def test_variants_are_few_and_leave_the_default_alone():
    assert len(m.HOPPER_VARIANTS) <= 6 and set(m.HOPPER_VARIANTS) <= set(m.PRESETS)
    assert m.PRESETS["hopper"]["TILE_N"] == 128 and "num_worker_warps" not in m.PRESETS["hopper"]
    for name in m.HOPPER_VARIANTS:
        m.IMPL.config(m.PRESETS[name])      # every value is a valid choice


@pytest.mark.parametrize("name", ["hopper", "tile_128x256", "persistent_128x256"])
def test_launcher_passes_each_variants_hints_and_grid(monkeypatch, name):
    """The forward at GPT-2's c_fc shape on an H100-sized GPU (132 SMs off a GPU), kernels stood in."""
    calls = []
    monkeypatch.setattr(m.aot, "launch", lambda k, grid, args, **hints: calls.append((k, grid, hints)))
    c = m._config("sm_90", m.PRESETS[name])
    x, w = torch.empty(16384, 768, dtype=torch.bfloat16), torch.empty(3072, 768, dtype=torch.bfloat16)
    m.matmul(x, w, False, True, c)
    (k, grid, hints), = calls
    tiles = (16384 // c["TILE_M"]) * (3072 // c["TILE_N"])
    assert grid == ((min(tiles, 132 * c["occupancy"]),) if c["PERSISTENT"] else (tiles,))
    assert hints == {"occupancy": c["occupancy"], "num_ctas": 1, "num_worker_warps": c.get("num_worker_warps")}
    assert (hints["num_worker_warps"] == 8) == (c["TILE_N"] == 256)
