"""Plot core: headless rendering, lines per axis for each mode, residual views, units, titles, saving."""

from __future__ import annotations

import numpy as np
import pytest

import gnomon as gn
from gnomon.signals.signals import Signals

T, K, C = 30, 5, 3
PNG = b"\x89PNG\r\n\x1a\n"


def _data_lines(ax):
    return [ln for ln in ax.get_lines() if (ln.get_gid() or "").startswith("data:")]


def _sig(kind="optimization", truth=True, seed=0):
    rng = np.random.default_rng(seed)
    lead = (T,) if kind == "optimization" else (C, T)
    z = rng.normal(size=lead + (K,)) * np.array([1.0, 5.0, 0.1, -3.0, 2.0])
    pos = 1.0 + 2e-5 * rng.normal(size=lead)  # arcsec; residuals ~ 20 µas
    loss = np.geomspace(1e3, 1.0, T) if kind == "optimization" else rng.normal(size=lead)
    name = "loss" if kind == "optimization" else "log_prob"
    t = {"z": np.zeros(K), "pos": 1.0} if truth else None
    return Signals(
        {"z": z, "pos": pos, name: loss},
        kind=kind,
        units={"z": "nm", "pos": "arcsec"},
        truth=t,
        x=np.arange(T) * 10 if kind == "optimization" else None,
    )


@pytest.mark.parametrize("kind, chains", [("optimization", 1), ("sampling", C)])
@pytest.mark.parametrize("mode, per_chain", [("components", K), ("summary", 1), ("hybrid", 1 + 2)])
def test_lines_per_axis_for_each_mode(kind, chains, mode, per_chain):
    fig = gn.plot.history(_sig(kind), "z", mode=mode, top=2)
    (ax,) = fig.axes
    assert len(_data_lines(ax)) == per_chain * chains
    assert ax.get_xlabel() == ("step" if kind == "optimization" else "draw")
    # a scalar signal is one line per chain in every mode
    fig = gn.plot.history(_sig(kind), "pos", mode=mode)
    assert len(_data_lines(fig.axes[0])) == chains


def test_summary_line_is_the_rms_and_hybrid_picks_largest_final_components():
    sig = _sig(truth=False)
    z = sig.values("z")
    fig = gn.plot.history(sig, "z", mode="summary", summary="rms")
    np.testing.assert_allclose(_data_lines(fig.axes[0])[0].get_ydata(), np.sqrt((z**2).mean(1)))
    fig = gn.plot.history(sig, "z", mode="summary", summary="norm")
    np.testing.assert_allclose(_data_lines(fig.axes[0])[0].get_ydata(), np.linalg.norm(z, axis=1))
    fig = gn.plot.history(sig, "z", mode="hybrid", top=2)
    labels = [ln.get_label() for ln in _data_lines(fig.axes[0])]
    top2 = sorted(np.argsort(-np.abs(z[-1]))[:2])
    assert labels == ["rms"] + [f"[{k}]" for k in top2]


def test_residual_view_when_truth_known_in_the_units_as_given():
    sig = _sig()
    fig = gn.plot.history(sig, "pos")
    ax = fig.axes[0]
    y = _data_lines(ax)[0].get_ydata()
    np.testing.assert_allclose(y, sig.values("pos") - 1.0, rtol=1e-9)  # arcsec stays arcsec
    assert ax.get_ylabel() == "pos residual [arcsec]"
    final = sig.values("pos")[-1] - 1.0
    assert ax.get_title() == f"pos residual: final {final:+.4g} arcsec"
    # automatic scaling is opt-in
    fig = gn.plot.history(sig, "pos", auto_units=True)
    np.testing.assert_allclose(_data_lines(fig.axes[0])[0].get_ydata(), (sig.values("pos") - 1.0) * 1e6)
    assert fig.axes[0].get_ylabel() == "pos residual [µas]"
    # the value view keeps the stored unit and draws the truth as a dashed reference
    fig = gn.plot.history(sig, "pos", residual=False)
    ax = fig.axes[0]
    assert ax.get_ylabel() == "pos [arcsec]"
    np.testing.assert_allclose(_data_lines(ax)[0].get_ydata(), sig.values("pos"))
    refs = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert len(refs) == 1 and refs[0].get_ydata()[0] == pytest.approx(1.0)


def test_unit_overrides():
    sig = _sig()
    fig = gn.plot.history(sig, "pos", units={"pos": "mas"})
    ax = fig.axes[0]
    assert ax.get_ylabel().endswith("[mas]")
    np.testing.assert_allclose(_data_lines(ax)[0].get_ydata(), (sig.values("pos") - 1.0) * 1e3)
    fig = gn.plot.history(sig, "pos")
    assert fig.axes[0].get_ylabel().endswith("[arcsec]")


def test_missing_truth_keeps_line_count_and_says_so():
    with_truth = gn.plot.history(_sig(truth=True), "z", residual=True)
    without = gn.plot.history(_sig(truth=False), "z", residual=True)
    lw, lo = _data_lines(with_truth.axes[0]), _data_lines(without.axes[0])
    assert len(lw) == len(lo) == K
    assert all(np.isnan(ln.get_ydata()).all() for ln in lo)
    assert any("no truth" in t.get_text() for t in without.axes[0].texts)
    assert "no truth" in without.axes[0].get_title()


def test_log_axes():
    sig = _sig()
    fig = gn.plot.history(sig, "loss", logy=True)
    assert fig.axes[0].get_yscale() == "log"
    fig = gn.plot.history(sig, "z", logy=True, residual=False)  # values cross zero
    assert fig.axes[0].get_yscale() == "symlog"
    fig = gn.plot.history(sig, "loss", logy="auto")
    assert fig.axes[0].get_yscale() == "log"


@pytest.mark.parametrize("start", [4e4, -4e4])
def test_log_axes_keep_the_starting_values_visible(start):
    """A residual from far away that converges (and crosses zero) keeps every point, the start included,
    inside the axis limits; with a known σ the symlog axis is linear within ±σ."""
    t = np.arange(200)
    r = start * np.exp(-t / 8.0) + 3.0 * np.cos(t)  # decays, then oscillates about zero within ±3
    sig = Signals({"x": 10.0 + r}, truth={"x": 10.0}, units={"x": "µas"}).with_sigma({"x": 2.5})
    ax = gn.plot.history(sig, "x", logy=True).axes[0]
    lo, hi = ax.get_ylim()
    y = _data_lines(ax)[0].get_ydata()
    assert lo < y.min() and y.max() < hi and lo < y[0] < hi
    assert ax.get_yscale() == "symlog" and ax.yaxis.get_transform().linthresh == 2.5
    pos = Signals({"e": np.abs(start) * np.exp(-t / 8.0) + 1e-3})
    ax = gn.plot.history(pos, "e", logy=True).axes[0]
    assert ax.get_yscale() == "log" and ax.get_ylim()[0] < 1e-3 and ax.get_ylim()[1] > abs(start)


def test_units_exactly_as_given_and_errors_not_called_residuals():
    """The user study: T.error(..., units="µas") must stay µas, labelled by its name, not 'x_err residual' in
    mas."""
    from gnomon.signals import transforms as T

    x = 0.12 + 3e-6 * np.random.default_rng(1).normal(size=40)  # arcsec: errors of a few µas
    sig = Signals({"x": x}, units={"x": "arcsec"}, truth={"x": 0.12}).apply(T.error("x", "x_err", units="µas"))
    ax = gn.plot.history(sig, "x_err").axes[0]
    np.testing.assert_allclose(_data_lines(ax)[0].get_ydata(), (x - 0.12) * 1e6, rtol=1e-9)
    assert ax.get_ylabel() == "x_err [µas]" and "residual" not in ax.get_title()
    assert ax.get_title() == f"x_err: final {(x[-1] - 0.12) * 1e6:+.4g} µas"
    assert gn.plot.history(sig, "x_err", residual=True).axes[0].get_ylabel() == "x_err [µas]"


def _yspan(patch):
    return (round(float(patch.get_y()), 9), round(float(patch.get_y() + patch.get_height()), 9))


def test_residual_in_sigma_and_crlb_bands():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(T, 3)) * [1.0, 2.0, 4.0]
    sig = Signals({"z": z}, truth={"z": [0.5, 0.0, -1.0]}, units={"z": "nm"}).with_sigma({"z": [0.5, 1.0, 2.0]})
    ax = gn.plot.history(sig, "z", residual="sigma").axes[0]
    ys = np.stack([ln.get_ydata() for ln in _data_lines(ax)], axis=1)
    np.testing.assert_allclose(ys, (z - [0.5, 0.0, -1.0]) / [0.5, 1.0, 2.0])
    assert ax.get_ylabel() == "z residual [σ]"
    spans = sorted({_yspan(p) for p in ax.patches if (p.get_gid() or "").startswith("band:")})
    assert spans == [(-2.0, 2.0), (-1.0, 1.0)]  # bands at ±1σ and ±2σ
    # values: bands around the truth at ±σ, ±2σ of each component; a CRLB-like object works as sigma=
    crlb = type("CRLB", (), {"labels": ["z[0]", "z[1]", "z[2]"], "marginal": np.array([0.5, 1.0, 2.0])})()
    ax = gn.plot.history(Signals({"z": z}, truth={"z": [0.5, 0.0, -1.0]}), "z", residual=False, sigma=crlb).axes[0]
    bands = {_yspan(p) for p in ax.patches}
    assert (0.0, 1.0) in bands and (-0.5, 1.5) in bands and (-5.0, 3.0) in bands
    assert len([p for p in ax.patches if p.get_gid() == "band:z"]) == 6
    # sampler chains without a CRLB: residuals in posterior sds; no bands (bands show bounds only)
    ch = _sig("sampling")
    ax = gn.plot.history(ch, "pos", residual="sigma").axes[0]
    pos = ch["pos"].values
    np.testing.assert_allclose(_data_lines(ax)[0].get_ydata(), (pos[0] - 1.0) / np.std(pos, ddof=1))
    assert not [p for p in gn.plot.history(ch, "pos").axes[0].patches if p.get_gid()]
    ax = gn.plot.history(Signals({"a": z[:, 0]}, truth={"a": 0.0}), "a", residual="sigma").axes[0]
    assert "no σ" in ax.get_title() and np.isnan(_data_lines(ax)[0].get_ydata()).all()


def test_layout_component_labels_in_legends():
    """Legends read the layout's component labels (Noll indices), not [1] [2] [3]."""
    layout = gn.Layout({"zern": (3,)}, units={"zern": "nm"}, labels={"zern": ["Z4", "Z5", "Z6"]})
    tr = gn.Trace(kind="optimization", theta=np.random.default_rng(0).normal(size=(6, 3)), loss=np.ones(6),
                  step=np.arange(6), layout=layout)
    sig = Signals.from_trace(tr)
    assert sig["zern"].labels == ("zern[Z4]", "zern[Z5]", "zern[Z6]")
    ax = gn.plot.history(sig, "zern").axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["Z4", "Z5", "Z6"]
    plain = gn.plot.history(Signals({"v": np.zeros((4, 2))}), "v").axes[0]
    assert [t.get_text() for t in plain.get_legend().get_texts()] == ["[0]", "[1]"]


def test_chain_titles_describe_what_is_plotted():
    """The chain figure's title said 'mean rms 0.06 nm' over a curve near 1: a summary title now reports the
    plotted curve (the per-draw RMS), a components title the posterior means and sds."""
    ch = _sig("sampling")
    ax = gn.plot.history(ch, "z", mode="summary").axes[0]
    curve = np.concatenate([ln.get_ydata() for ln in _data_lines(ax)])
    from gnomon.util.format import format_uncertain

    assert f"rms per draw {format_uncertain(curve.mean(), curve.std(ddof=1))} nm" in ax.get_title()
    ax = gn.plot.history(ch, "z").axes[0]
    assert "posterior means rms" in ax.get_title() and "sds rms" in ax.get_title()


@pytest.mark.parametrize("ncols, n", [(3, 9), (2, 5)])
def test_no_overlapping_text_at_any_grid_size(ncols, n):
    """Long names, multi-signal titles, symlog axes: no two texts (tick labels, axis labels, offsets,
    titles, suptitle) of the rendered grid intersect."""
    from gnomon.plot._mpl import text_overlaps

    rng = np.random.default_rng(3)
    names = [f"block_with_a_long_name_{i}.x_position_error_as" for i in range(n)]
    data = {nm: 9.5 + 1e-5 * np.exp(-np.arange(T) / 5) * rng.normal(size=T) for nm in names}
    sig = Signals(data, units={nm: "arcsec" for nm in names}, truth={nm: 9.5 for nm in names})
    sig = sig.with_sigma({nm: 1e-7 for nm in names})
    panels = [[names[0], names[1]]] + [{"names": [nm], "logy": i % 2 == 0} for i, nm in enumerate(names[2:])]
    fig = gn.plot.grid(sig, panels, ncols=ncols, suptitle="a suptitle " * 6)
    assert text_overlaps(fig) == []
    # the check itself finds overlaps: a title far wider than its panel runs into its neighbour's
    fig.axes[0].set_title("W" * 300)
    assert any("axes 0 title" in a and "axes 1 title" in b for a, b in text_overlaps(fig))


def test_grid_panels_titles_and_shared_x():
    sig = _sig()
    panels = ["loss", ["z", "pos"], {"names": "z", "mode": "summary", "logy": True, "title": "z rms"}]
    fig = gn.plot.grid(sig, panels, ncols=2)
    axes = fig.axes
    assert len(axes) == 3
    assert [len(_data_lines(ax)) for ax in axes] == [1, K + 1, 1]
    assert axes[0].get_title() == f"loss: final {sig.values('loss')[-1]:.4g}"
    assert "pos residual: final" in axes[1].get_title() and "z residual: final rms" in axes[1].get_title()
    assert axes[2].get_title() == "z rms" and axes[2].get_yscale() == "log"
    # x label only on the lowest axis of each column; the axes share x
    assert [ax.get_xlabel() for ax in axes] == ["", "step", "step"]
    assert axes[0].get_shared_x_axes().joined(axes[0], axes[2])
    with pytest.raises(ValueError, match="unknown signal"):
        gn.plot.grid(sig, [["z", "nope"]])


def test_grid_default_panels_and_chains():
    sig = _sig("sampling")
    fig = gn.plot.grid(sig)
    assert [len(_data_lines(ax)) for ax in fig.axes] == [C, C * K, C]
    assert all(ax.get_xlabel() in ("", "draw") for ax in fig.axes)
    assert "mean" in fig.axes[1].get_title()


def test_loss_with_reference_and_relative():
    sig = _sig()
    fig = gn.plot.loss(sig, reference=1.0)
    ax = fig.axes[0]
    refs = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert len(refs) == 1 and refs[0].get_ydata()[0] == 1.0
    assert "reference 1" in ax.get_title() and ax.get_yscale() == "log"
    fig = gn.plot.loss(sig, reference=0.5, relative=True)
    np.testing.assert_allclose(_data_lines(fig.axes[0])[0].get_ydata(), sig.values("loss") - 0.5)
    tr = gn.Trace(kind="optimization", theta=np.zeros((T, 1)), loss=sig.values("loss"), step=np.arange(T))
    assert len(_data_lines(gn.plot.loss(tr).axes[0])) == 1
    assert len(_data_lines(gn.plot.loss(_sig("sampling")).axes[0])) == C
    with pytest.raises(ValueError, match="reference"):
        gn.plot.loss(sig, relative=True)


def _opt(loss, step=None, method=None):
    loss = np.asarray(loss, dtype=float)
    return gn.Trace(
        kind="optimization",
        theta=np.zeros((loss.size, 1)),
        loss=loss,
        step=np.arange(loss.size) * 2 if step is None else step,
        info={} if method is None else {"method": method},
    )


def _legend(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_loss_overlays_several_sources_relative_to_the_best():
    rng = np.random.default_rng(3)
    losses = {
        "a": 5.0 + np.geomspace(1e2, 1e-4, 40),  # reaches the best, 5 + 1e-4
        "b": 5.0 + np.geomspace(1e2, 1e-1, 25),
        "c": 5.0 + np.geomspace(1e2, 1.0, 30) * (1 + 0.01 * rng.random(30)),
    }
    traces = {k: _opt(v) for k, v in losses.items()}
    best = min(v.min() for v in losses.values())
    fig = gn.plot.loss(traces, relative_to="best", floor=1e-3)
    ax = fig.axes[0]
    lines = _data_lines(ax)
    assert len(lines) == 3 and ax.get_yscale() == "log"
    for ln, v in zip(lines, losses.values(), strict=True):
        np.testing.assert_array_equal(ln.get_xdata(), np.arange(v.size) * 2)
        np.testing.assert_allclose(ln.get_ydata(), np.maximum(v - best, 1e-3), rtol=1e-12)
    legend = _legend(ax)
    assert [t.split(" ")[0] for t in legend] == ["a", "b", "c"]
    for t, v in zip(legend, losses.values(), strict=True):
        assert f"final Δ {v[-1] - best:.4g}" in t
    assert "floored at 0.001" in ax.get_ylabel() and "best loss" in ax.get_ylabel()
    assert "relative to the best" in ax.get_title() and "(a)" in ax.get_title()

    # default floor: the smallest positive excess, so the best run's zero sits at the bottom of its data
    lines = _data_lines(gn.plot.loss(traces, relative_to="best").axes[0])
    excess = np.concatenate([v - best for v in losses.values()])
    floor = excess[excess > 0].min()
    np.testing.assert_allclose(lines[0].get_ydata(), np.maximum(losses["a"] - best, floor), rtol=1e-12)
    assert lines[0].get_ydata().min() == pytest.approx(floor)

    # a list takes labels from each trace's method; a number is a fixed reference; linear axis on request
    fig = gn.plot.loss([_opt(losses["a"], method="gd"), _opt(losses["b"], method="adam")], relative_to=4.0,
                       logy=False)
    ax = fig.axes[0]
    assert [t.split(" ")[0] for t in _legend(ax)] == ["gd", "adam"] and ax.get_yscale() == "linear"
    np.testing.assert_allclose(_data_lines(ax)[1].get_ydata(), losses["b"] - 4.0)
    assert "final Δ +1.1" in _legend(ax)[1]


def test_loss_several_sampler_sources_and_single_source_relative_to_best():
    a, b = _sig("sampling", seed=1), _sig("sampling", seed=2)
    fig = gn.plot.loss({"run 1": a, "run 2": b}, relative_to="best", logy=False)
    ax = fig.axes[0]
    lines = _data_lines(ax)
    assert len(lines) == 2 * C and len(_legend(ax)) == 2
    top = max(a.values("log_prob").max(), b.values("log_prob").max())
    np.testing.assert_allclose(lines[C].get_ydata(), top - b.values("log_prob")[0])  # best − log_prob ≥ 0
    assert "mean Δ" in _legend(ax)[0] and ax.get_ylabel() == "best log_prob − log_prob"
    # one source: relative to its own minimum (single-source labels and legend rules otherwise unchanged)
    sig = _sig()
    v = sig.values("loss")
    fig = gn.plot.loss(sig, relative_to="best", floor=1e-2)
    np.testing.assert_allclose(_data_lines(fig.axes[0])[0].get_ydata(), np.maximum(v - v.min(), 1e-2))
    assert _legend(fig.axes[0]) == ["loss"] and fig.axes[0].get_title().startswith("loss: final 1 (best 1,")


def test_loss_several_sources_errors():
    with pytest.raises(ValueError, match="cannot overlay log_prob and loss"):
        gn.plot.loss({"opt": _sig(), "mcmc": _sig("sampling")})
    with pytest.raises(ValueError, match="either relative=True"):
        gn.plot.loss([_opt([3.0, 2.0]), _opt([2.0, 1.0])], relative=True, relative_to="best")
    with pytest.raises(ValueError, match="'best' or a number"):
        gn.plot.loss({"a": _opt([3.0, 2.0])}, relative_to="worst")
    with pytest.raises(ValueError, match="floor"):
        gn.plot.loss({"a": _opt([3.0, 2.0])}, relative_to="best", floor=0.0)
    with pytest.raises(ValueError, match="source 'b'.*one-dimensional"):
        gn.plot.loss({"a": _opt([3.0, 2.0]), "b": np.zeros((2, 2))})


def test_axis_injection_saving_and_no_pyplot_figures(tmp_path):
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    before = plt.get_fignums()
    fig = Figure()
    ax = fig.add_subplot()
    assert gn.plot.history(_sig(), "z", ax=ax) is fig
    out = gn.plot.grid(_sig(), save=tmp_path / "g.png")
    assert (tmp_path / "g.png").read_bytes()[:8] == PNG
    gn.plot.history(_sig(), "z", save=tmp_path / "h.svg")
    assert b"<svg" in (tmp_path / "h.svg").read_bytes()[:400]
    assert plt.get_fignums() == before  # nothing registered with pyplot: no window can open
    assert out.get_size_inches()[0] > 0
    with pytest.raises(FileNotFoundError, match="does not exist"):
        gn.plot.history(_sig(), "z", save=tmp_path / "missing" / "x.png")


def test_invalid_arguments():
    sig = _sig()
    with pytest.raises(ValueError, match="mode"):
        gn.plot.history(sig, "z", mode="all")
    with pytest.raises(ValueError, match="summary"):
        gn.plot.history(sig, "z", mode="summary", summary="max")
    with pytest.raises(ValueError, match="Signals"):
        gn.plot.history({"z": np.zeros(3)}, "z")


def test_counts_and_scales_are_refused_naming_the_bad_value():
    from gnomon.util.validate import positive_float

    assert positive_float(np.float32(0.5), "floor") == 0.5 and positive_float(3, "floor") == 3.0
    for bad in (0, -1.0, np.nan, np.inf, True, "1", None):
        with pytest.raises(ValueError, match=f"floor must be a finite number > 0, got {bad!r}"):
            positive_float(bad, "floor")
    sig = _sig()
    with pytest.raises(ValueError, match="floor must be a finite number > 0, got 0"):
        gn.plot.loss(sig, relative_to="best", floor=0.0)
    with pytest.raises(ValueError, match="top must be an int ≥ 0, got -1"):
        gn.plot.history(sig, "z", mode="hybrid", top=-1)
    with pytest.raises(ValueError, match="ncols must be an int ≥ 1, got 0"):
        gn.plot.grid(sig, ["z", "pos"], ncols=0)
    with pytest.raises(ValueError, match=r"power must be a finite number > 0, got -0.5"):
        gn.plot.curvature(np.ones(3), power=-0.5)
    # a valid floor and top still draw
    assert gn.plot.loss(sig, relative_to="best", floor=1e-3).axes[0].get_yscale() == "log"
    assert len(_data_lines(gn.plot.history(sig, "z", mode="hybrid", top=0).axes[0])) == 1


def test_curvature_view():
    layout = gn.Layout({"a": (), "b": (2,), "c": ()}, blocks={"a": "g1", "b": "g2", "c": "g1"})
    diag = np.array([1e4, 1.0, 1e-2, 50.0])
    fig = gn.plot.curvature(diag, layout=layout, base_lr=0.5, power=1.0)
    top, bottom = fig.axes
    np.testing.assert_allclose([p.get_height() for p in top.patches], diag)
    np.testing.assert_allclose([p.get_height() for p in bottom.patches], 0.5 / diag)
    assert [t.get_text() for t in bottom.get_xticklabels()] == layout.index_labels()
    assert top.get_yscale() == "log"
    colors = [p.get_facecolor() for p in top.patches]
    assert colors[0] == colors[3] != colors[1] == colors[2]  # coloured by block group


def test_eigen_spectrum_labels_modes_by_dominant_parameter():
    rng = np.random.default_rng(0)
    layout = gn.Layout({"p": (), "q": (), "r": (2,)})
    V = np.linalg.qr(rng.normal(size=(4, 4)))[0]
    lam = np.array([1.0, 100.0, 1e-3, 10.0])
    fig = gn.plot.eigen_spectrum(lam, V, layout=layout)
    ax = fig.axes[0]
    order = np.argsort(-lam)
    np.testing.assert_allclose(_data_lines(ax)[0].get_ydata(), lam[order])
    labels = layout.index_labels()
    want = [labels[int(np.argmax(V[:, i] ** 2))] for i in order]
    got = [t.get_text().split(": ", 1)[1].rsplit(" (", 1)[0] for t in ax.get_xticklabels()]
    assert got == want
    assert len(fig.axes) == 3  # spectrum, loadings heatmap, colorbar
    with pytest.raises(ValueError, match="eigenvectors"):
        gn.plot.eigen_spectrum(lam, V[:, :3])


def test_eigen_spectrum_from_an_eigenmap():
    layout = gn.Layout({"p": (), "q": (), "r": (2,)})
    rng = np.random.default_rng(1)
    a = rng.normal(size=(4, 4))
    emap = gn.EigenMap.from_matrix(a @ a.T + np.eye(4), np.zeros(4), layout=layout)
    fig = gn.plot.eigen_spectrum(emap)
    np.testing.assert_allclose(_data_lines(fig.axes[0])[0].get_ydata(), np.sort(emap.eigenvalues)[::-1])
    assert fig.axes[0].get_xticklabels()[0].get_text().startswith("0: ")


def test_arviz_sampler_views():
    from gnomon.plot._mpl import text_overlaps

    sig = _sig("sampling")
    fig = gn.plot.rank(sig, ["pos", "z"])
    assert len(fig.axes) >= 1 + K
    fig = gn.plot.trace_dist(sig, ["pos"])
    assert len(fig.axes) >= 2
    assert any("pos [arcsec]" in ax.get_xlabel().replace("\n", " ") for ax in fig.axes)  # names with units
    assert text_overlaps(fig) == []


def test_arviz_views_of_a_trace_carry_layout_names_units_and_labels():
    """Through a sampling Trace: precise (float64 identity blocks), named, in units, component labels as
    coordinates; the pair plot's long labels are fitted (nothing overlaps, nothing outside the figure)."""
    from gnomon.plot._mpl import renderer, text_overlaps

    layout = gn.Layout({"binary.separation_as": (), "zern": (2,)}, units={"binary.separation_as": "arcsec",
                                                                          "zern": "nm"}, labels={"zern": ["Z4", "Z5"]})
    rng = np.random.default_rng(4)
    theta = rng.normal(size=(2, 60, 3)) * [1e-5, 1.0, 1.0] + [9.5, 0.0, 0.0]
    tr = gn.Trace(kind="sampling", theta=theta, log_prob=rng.normal(size=(2, 60)), layout=layout)
    dt = gn.plot.to_datatree(tr)
    post = dt["posterior"].to_dataset()
    assert post["binary.separation_as"].attrs["units"] == "arcsec"
    assert list(post["zern"].coords["component"].values) == ["Z4", "Z5"]
    np.testing.assert_array_equal(post["binary.separation_as"].values, theta[..., 0])  # no float32 rounding
    fig = gn.plot.pair(tr)
    labels = " ".join(ax.get_xlabel().replace("\n", "") for ax in fig.axes)
    assert "binary.separation_as [arcsec]" in labels and "zern[Z4] [nm]" in labels and "zern[Z5] [nm]" in labels
    assert text_overlaps(fig) == []
    r, box = renderer(fig), fig.bbox
    for ax in fig.axes:
        for t in (ax.xaxis.label, ax.yaxis.label):
            if t.get_visible() and t.get_text():
                e = t.get_window_extent(r)
                assert box.x0 - 1 <= e.x0 and e.x1 <= box.x1 + 1 and box.y0 - 1 <= e.y0 and e.y1 <= box.y1 + 1
    from gnomon.signals import transforms as tfm

    sig = Signals.from_trace(tr, truth={"binary.separation_as": 9.5, "zern": [0.0, 0.0]})
    sig = sig.apply(tfm.residual_in_sigma("binary.separation_as"), tfm.residual_in_sigma("zern"))
    fig = gn.plot.forest(sig, ["binary.separation_as_z", "zern_z"])
    assert text_overlaps(fig) == [] and len(fig.axes) >= 1
    with pytest.raises(ValueError, match="sampler"):
        gn.plot.rank(_sig("optimization"))


# ---------------------------------------------------------------------------------------------- issue 21
def _overshoot_trace():
    """A backtracking fit: rows 7 and 15 are rejected trial points (one at 1e220), the rest converge."""
    t = np.arange(40)
    loss = 1.0 + 50.0 * np.exp(-t / 6.0)
    loss[7], loss[15] = 1e220, 20.0
    acc = np.ones(40)
    acc[[7, 15]] = 0.0
    acc[-1] = np.nan  # the final row has no verdict
    theta = (1.0 + np.exp(-t / 6.0))[:, None] * np.ones((1, 2))
    theta[7] = 1e30  # the rejected overshoot in θ too
    layout = gn.Layout({"a": (), "b": ()}, units={"a": "nm", "b": "nm"})
    return gn.Trace(kind="optimization", theta=theta, loss=loss, step=t, stats={"accepted": acc}, layout=layout)


def test_loss_axis_from_accepted_rows_rejected_trials_drawn_faintly():
    tr = _overshoot_trace()
    ax = gn.plot.loss(tr).axes[0]
    (line,) = _data_lines(ax)
    acc = np.asarray(tr.stats["accepted"]) != 0
    np.testing.assert_array_equal(line.get_xdata(), np.arange(40)[acc])  # the line joins accepted rows only
    lo, hi = ax.get_ylim()
    kept = np.asarray(tr.loss)[acc] - np.asarray(tr.loss)[acc].min()
    assert hi < 10 * kept.max() and lo <= np.sort(kept)[1]  # the 1e220 trial does not set the range
    marks = [ln for ln in ax.get_lines() if ln.get_gid() == "rejected:loss"]
    above = next(m for m in marks if m.get_marker() == "^")
    assert list(above.get_xdata()) == [7] and above.get_ydata()[0] == pytest.approx(hi)  # on the edge
    inside = next(m for m in marks if m.get_marker() == "x")
    assert list(inside.get_xdata()) == [15]
    assert "up to 1e+220" in " ".join(_legend(ax)) and "2 rejected trials" in ax.get_title()
    # the grid of the run: the parameter panels are scaled to the accepted rows too
    fig = gn.plot.grid(Signals.from_trace(tr))
    ax_a = fig.axes[1]
    assert ax_a.get_ylim()[1] < 10.0 and [ln for ln in ax_a.get_lines() if ln.get_gid() == "rejected:a"]
    assert fig.axes[0].get_ylim()[1] < 1e3


def test_loss_scale_follows_what_the_loss_spans():
    t = np.arange(50)
    decades = 1e-3 + 1e3 * np.exp(-t / 4.0)  # positive over six decades: log of the loss itself
    ax = gn.plot.loss(decades).axes[0]
    assert ax.get_yscale() == "log" and ax.get_ylabel() == "loss"
    narrow = 2079.0 + 1e3 * np.exp(-t / 4.0)  # 3079 → 2079: a linear axis would show a flat line
    ax = gn.plot.loss(narrow).axes[0]
    y = _data_lines(ax)[0].get_ydata()
    floor = np.sort(narrow - narrow.min())[1]
    np.testing.assert_allclose(y, np.maximum(narrow - narrow.min(), floor))
    assert ax.get_yscale() == "log" and ax.get_ylabel().replace("\n", " ") == \
        f"loss − {narrow.min():.4g} (its minimum) (floored at {floor:.4g})"
    negative = -1e5 + 10.0 * np.exp(-t / 4.0)  # a Poisson deviance-like loss below zero: the same excess
    ax = gn.plot.loss(negative).axes[0]
    assert ax.get_yscale() == "log" and "its minimum" in ax.get_ylabel()
    ax = gn.plot.loss(narrow, logy=False).axes[0]  # asked linear: the loss as it is, absolute tick labels
    assert ax.get_yscale() == "linear" and ax.get_ylabel() == "loss"
    assert ax.yaxis.get_offset_text().get_text() == ""
    assert gn.plot.loss(_sig("sampling")).axes[0].get_yscale() == "linear"  # chains' log_prob


def _band_fraction(ax, sigma, centre=0.0):
    lo, hi = ax.transData.transform([[0.0, centre - sigma], [0.0, centre + sigma]])[:, 1]
    return (hi - lo) / ax.get_window_extent().height


def test_default_grid_keeps_the_crlb_band_visible():
    """A separation 2000 µas from the truth at the start that converges within its ±38 µas bound: on a linear
    axis the band is a line; the default grid draws it on a symlog axis linear within ±σ."""
    t = np.arange(80)
    sep = 9.5e6 + 2000.0 * np.exp(-t / 8.0) + 20.0 * np.cos(t)
    sig = Signals({"sep": sep, "loss": 1 + np.exp(-t / 8.0)}, units={"sep": "µas"}, truth={"sep": 9.5e6})
    sig = sig.with_sigma({"sep": 38.0})
    linear = gn.plot.history(sig, "sep", logy=False).axes[0]
    assert _band_fraction(linear, 38.0) < 0.05  # the problem (asked for a linear axis)
    # the default of history, and of a grid whose panels are named (a new user met a hairline band there)
    assert gn.plot.history(sig, "sep").axes[0].get_yscale() == "symlog"
    assert gn.plot.grid(sig, panels=["loss", "sep"]).axes[1].get_yscale() == "symlog"
    fig = gn.plot.grid(sig)
    ax = fig.axes[1]
    assert ax.get_yscale() == "symlog" and ax.yaxis.get_transform().linthresh == pytest.approx(38.0)
    assert _band_fraction(ax, 38.0) > 0.1
    y = _data_lines(ax)[0].get_ydata()
    lo, hi = ax.get_ylim()
    assert lo < y.min() and y.max() < hi  # the start stays on the axis
    # a path that stays near its bound keeps a linear axis
    near = Signals({"sep": 9.5e6 + 60.0 * np.cos(t)}, units={"sep": "µas"}, truth={"sep": 9.5e6}).with_sigma(
        {"sep": 38.0})
    assert gn.plot.grid(near).axes[0].get_yscale() == "linear"


def test_no_offset_text_and_no_unit_one():
    """A position angle of 122.01° with µ° scatter: absolute tick labels (122.0100), never '+1.22e2'; a
    dimensionless contrast reads '3.2', never '3.2 1'."""
    rng = np.random.default_rng(0)
    pa = 122.01 + 1e-4 * rng.normal(size=40)
    sig = Signals({"pa": pa, "contrast": 3.2 + 0 * pa}, units={"pa": "deg", "contrast": "1"})
    fig = gn.plot.grid(sig, ["pa", "contrast"])
    fig.canvas.draw()
    for ax in fig.axes:
        assert ax.yaxis.get_offset_text().get_text() == "" and ax.xaxis.get_offset_text().get_text() == ""
    ticks = [float(t.get_text().replace("−", "-")) for t in fig.axes[0].get_yticklabels() if t.get_text()]
    lo, hi = fig.axes[0].get_ylim()
    assert all(lo - 1e-3 <= v <= hi + 1e-3 for v in ticks) and min(ticks) > 122.0  # absolute values
    assert fig.axes[1].get_title() == "contrast: final 3.2" and fig.axes[1].get_ylabel() == "contrast"


def test_arviz_views_name_every_axis_with_units():
    from gnomon.signals import transforms as tfm

    sig = _sig("sampling")
    fig = gn.plot.rank(sig, ["pos"])
    assert fig.axes[0].get_ylabel().replace("\n", " ") == "Δ-ECDF (observed − uniform)"
    assert "pos [arcsec]" in fig.axes[0].get_title()
    fig = gn.plot.trace_dist(sig, ["pos"])
    fig.canvas.draw()
    labels = [ax.get_xlabel() for ax in fig.axes] + [ax.get_ylabel() for ax in fig.axes]
    assert "draw" in labels and "pos [arcsec]" in labels
    assert all(ax.xaxis.get_offset_text().get_text() == "" == ax.yaxis.get_offset_text().get_text()
               for ax in fig.axes)
    zsig = sig.apply(tfm.residual_in_sigma("pos", 2e-5))
    fig = gn.plot.forest(zsig, ["pos_z"])
    assert "residual [σ]" in [ax.get_xlabel() for ax in fig.axes]
    with pytest.warns(UserWarning, match="different units"):
        gn.plot.forest(sig, ["pos", "z"])
