"""One colour per impl, the same in every chart of every report (PNG and interactive alike), so cuTile is the same
blue on the speed-up chart, the throughput chart, the e2e chart and the history page, today and next month.

`impl_color` is the only place a chart gets an impl's colour from. Known impls have a fixed entry; a name not in
the table (a plugin, a new peer) gets one from a second palette picked by a hash of its name (sha1, not Python's
salted hash()), so it too keeps its colour from report to report. e2e variants ("triton +graph") take their
impl's colour."""
from __future__ import annotations

import hashlib

# Ours in strong blue/orange, peers in distinct hues, eager and the plain baselines in greys (Okabe-Ito based).
KNOWN = {
    "cutile": "#0072B2",
    "triton": "#E69F00",
    "eager": "#7F7F7F",
    "eager_sdpa": "#A6A6A6",
    "eager_chunked": "#B5B5B5",
    "sdpa_cudnn": "#009E73",
    "sdpa_flash": "#CC79A7",
    "sdpa_efficient": "#56B4E9",
    "sdpa_math": "#BCBD22",
    "torch_compile": "#D55E00",
    "torch_compile_max_autotune": "#8C2D04",
    "torch_compile_graphs": "#F16913",
    "torch_compile_best": "#A63603",
    "tilegym": "#9467BD",
    "liger": "#8C564B",
    "cublaslt": "#17BECF",
    "auto": "#222222",
}
# for names not in KNOWN: none of these is in KNOWN, so a new impl never looks like a known one
EXTRA = ("#E377C2", "#393B79", "#637939", "#8C6D31", "#843C39", "#7B4173", "#3182BD", "#31A354", "#756BB1",
         "#636363", "#E6550D", "#9C9EDE", "#CEDB9C", "#E7BA52", "#AD494A", "#A55194")
SUFFIXES = (" +graph",)


def impl_color(impl: str) -> str:
    """The impl's colour, as '#RRGGBB'."""
    name = str(impl)
    for s in SUFFIXES:
        name = name.removesuffix(s)
    if name in KNOWN:
        return KNOWN[name]
    return EXTRA[int(hashlib.sha1(name.encode()).hexdigest(), 16) % len(EXTRA)]


def color_map(impls) -> dict[str, str]:
    return {str(i): impl_color(i) for i in impls}
