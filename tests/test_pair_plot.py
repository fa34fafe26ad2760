"""Pair (corner) plots (issue 21): labels on every axis, truth markers, CRLB ellipses beside the posterior
contours, MAP ensembles against the bound, no offset text."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.path import Path

import gnomon as gn
from gnomon.plot._mpl import text_overlaps
from gnomon.signals.signals import Signals

LAYOUT = gn.Layout({"sep": (), "pa": (), "zern": (2,)}, units={"sep": "µas", "pa": "deg", "zern": "nm"},
                   labels={"zern": ["Z4", "Z5"]})
TRUTH = np.array([9.5e6, 122.01, 0.3, -0.2])
SD = np.array([38.0, 1e-4, 0.2, 0.3])
CORR = np.array([[1.0, 0.8, 0.0, 0.0], [0.8, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.3], [0.0, 0.0, 0.3, 1.0]])
COV = CORR * np.outer(SD, SD)
NAMES_U = ["sep [µas]", "pa [deg]", "zern[Z4] [nm]", "zern[Z5] [nm]"]


def _crlb():
    return gn.cramer_rao(np.linalg.inv(COV), TRUTH, LAYOUT)


def _posterior(seed=0, n=1000):
    draws = np.random.default_rng(seed).multivariate_normal(TRUTH, COV, size=(4, n))
    return gn.Trace(kind="sampling", theta=draws, log_prob=np.zeros((4, n)), layout=LAYOUT)


def _grid(fig, k):
    """The K × K axes of a pair figure (row-major, as created)."""
    return np.array(fig.axes[: k * k], dtype=object).reshape(k, k)


def _text(t):
    """A label's full text (wrapped to its panel or not)."""
    return getattr(t, "_gnomon_full", None) or t.get_text()


def _ellipse_points(patch):
    """The on-curve vertices of an ellipse patch (every third of its cubic Bézier path) in data coordinates."""
    return patch.get_patch_transform().transform(patch.get_path().vertices[:-1:3])


def test_pair_labels_truth_markers_and_crlb_ellipses():
    cr = _crlb()
    truth = {"sep": TRUTH[0], "pa": TRUTH[1], "zern": TRUTH[2:]}
    fig = gn.plot.pair(_posterior(), ["sep", "pa", "zern"], truth=truth, crlb=cr)
    fig.canvas.draw()
    axes = _grid(fig, 4)
    for i in range(4):
        assert axes[i, i].get_ylabel() == "density"  # the density axis is not named after a parameter
        assert _text(axes[3, i].xaxis.label) == NAMES_U[i]
        if i:
            assert _text(axes[i, 0].yaxis.label) == NAMES_U[i]
    for i in range(1, 4):
        for j in range(i):
            ax = axes[i, j]
            ells = [p for p in ax.patches if (p.get_gid() or "").startswith("crlb:")]
            assert sorted(p.get_gid() for p in ells) == ["crlb:1σ", "crlb:2σ"]
            sub = np.linalg.inv(COV[np.ix_([j, i], [j, i])])  # Mahalanobis distance in the 2-d marginal
            for p in ells:
                k = float(p.get_gid()[5:-1])
                d = _ellipse_points(p) - TRUTH[[j, i]]
                np.testing.assert_allclose(np.einsum("ni,ij,nj->n", d, sub, d), k * k, rtol=1e-6)
            star = [ln for ln in ax.get_lines() if ln.get_gid() == "truth"]
            assert len(star) == 1 and (star[0].get_xdata()[0], star[0].get_ydata()[0]) == (TRUTH[j], TRUTH[i])
            assert [c for c in ax.collections if c.get_gid() == "contours"]
    for ax in fig.axes:
        if ax.get_visible() and ax.axison:
            assert ax.xaxis.get_offset_text().get_text() == "" and ax.yaxis.get_offset_text().get_text() == ""
            for t in ax.get_xticklabels() + ax.get_yticklabels():
                assert "e" not in t.get_text()  # 9500000 µas, 122.0100 deg: absolute values, every digit
    # the diagonal's Gaussian is the marginal bound about the truth
    diag = next(ln for ln in axes[0, 0].get_lines() if ln.get_gid() == "crlb:marginal")
    x, y = diag.get_xydata().T
    np.testing.assert_allclose(y, np.exp(-0.5 * ((x - TRUTH[0]) / SD[0]) ** 2) / (SD[0] * np.sqrt(2 * np.pi)))
    assert text_overlaps(fig) == []


def test_posterior_contours_hold_their_mass():
    """The 1σ and 2σ contours of a Gaussian posterior hold 39.3 % and 86.5 % of its draws (pooled over
    seeds, with margin): the regions are counted on the draws."""
    inside = {1.0: [], 2.0: []}
    for seed in range(3):
        tr = _posterior(seed, n=2500)
        ax = _grid(gn.plot.pair(tr, ["sep", "pa"]), 2)[1, 0]
        cs = next(c for c in ax.collections if c.get_gid() == "contours")
        pts = np.asarray(tr.theta).reshape(-1, 4)[:, :2]
        # one path per level, levels ascending: the lower density level bounds the larger (2σ) region
        for k, path in zip((2.0, 1.0), cs.get_paths(), strict=True):
            hit = np.zeros(len(pts), bool)
            for poly in path.to_polygons(closed_only=False):
                hit ^= Path(poly).contains_points(pts)
            inside[k].append(hit.mean())
    assert abs(np.mean(inside[1.0]) - (1 - np.exp(-0.5))) < 0.03
    assert abs(np.mean(inside[2.0]) - (1 - np.exp(-2.0))) < 0.03


def test_a_map_ensemble_from_a_batch_against_the_crlb_ellipse():
    """Estimates of many fits (a batched trace: each member's best row) scatter about the truth as the bound
    says; no contours for an ensemble."""
    rng = np.random.default_rng(3)
    b, t = 300, 5
    est = rng.multivariate_normal(TRUTH, COV, size=b)
    theta = est[:, None, :] + np.linspace(3.0, 0.0, t)[None, :, None] * SD  # the last row is the best
    loss = np.broadcast_to(np.linspace(5.0, 1.0, t), (b, t)).copy()
    batch = gn.Trace(kind="optimization", theta=theta, loss=loss, step=np.tile(np.arange(t), (b, 1)), layout=LAYOUT,
                     status=("converged",) * b, num_grad_evals=np.zeros(b))
    fig = gn.plot.pair(batch, ["sep", "pa"], crlb=_crlb(), truth={"sep": TRUTH[0], "pa": TRUTH[1]})
    ax = _grid(fig, 2)[1, 0]
    pts = next(c for c in ax.collections if c.get_gid() == "data").get_offsets()
    np.testing.assert_allclose(np.asarray(pts), est[:, [0, 1]])
    assert not [c for c in ax.collections if c.get_gid() == "contours"]
    assert len([p for p in ax.patches if p.get_gid() == "crlb:2σ"]) == 1
    assert "best estimates of 300 fits" in fig.get_suptitle()
    # a list of fits is the same ensemble
    fig = gn.plot.pair([batch[i] for i in range(b)], ["sep", "pa"])
    np.testing.assert_allclose(np.asarray(_grid(fig, 2)[1, 0].collections[0].get_offsets()), est[:, [0, 1]])


def test_an_epoch_series_ensemble_is_drawn_about_each_runs_truth(tmp_path):
    """From an experiment whose truth moves run by run: estimate − truth per run, the truth at zero."""
    lay = gn.Layout({"sep": (), "pa": ()}, units={"sep": "µas", "pa": "deg"})
    rng = np.random.default_rng(5)
    exp = gn.Experiment(tmp_path / "exp")
    res = []
    for e in range(12):
        truth = np.array([9.5e6 + 100.0 * e, 80.0 + 0.02 * e])
        est = truth + rng.normal(size=2) * [38.0, 1e-4]
        tr = gn.Trace(kind="optimization", theta=est[None], loss=np.ones(1), step=np.arange(1), layout=lay,
                      status="converged")
        exp.save(f"e{e:02d}", tr, crlb={"sep": 38.0, "pa": 1e-4}, truth={"sep": truth[0], "pa": truth[1]})
        res.append(est - truth)
    fig = gn.plot.pair(exp)
    axes = _grid(fig, 2)
    pts = np.asarray(next(c for c in axes[1, 0].collections if c.get_gid() == "data").get_offsets())
    np.testing.assert_allclose(np.sort(pts, axis=0), np.sort(np.array(res), axis=0), atol=1e-6)
    assert _text(axes[1, 0].xaxis.label) == "sep − truth [µas]" and _text(axes[1, 0].yaxis.label) == "pa − truth [deg]"
    marg = next(ln for ln in axes[0, 0].get_lines() if ln.get_gid() == "crlb:marginal")  # crlb.<label> of runs
    x, y = marg.get_xydata().T
    np.testing.assert_allclose(y.max() * 38.0 * np.sqrt(2 * np.pi), 1.0, rtol=1e-3)


def test_pair_bounds_without_correlation_and_refusals():
    d = np.random.default_rng(0).normal(size=(2, 300, 2))
    sig = Signals({"a": d[..., 0], "b": d[..., 1]}, kind="sampling", units={"a": "nm", "b": "1"})
    fig = gn.plot.pair(sig, crlb={"a": 1.0, "b": 1.0})  # marginals only: Gaussians, never ellipses
    axes = _grid(fig, 2)
    assert not axes[1, 0].patches and [ln for ln in axes[0, 0].get_lines() if ln.get_gid() == "crlb:marginal"]
    assert _text(axes[1, 0].yaxis.label) == "b"  # a dimensionless unit is not printed as "[1]"
    # a covariance in other units is converted (µm → nm: ×1e3 per axis)
    cr = type("CR", (), {"labels": ("a", "b"), "covariance": np.diag([1e-6, 4.0]), "units": ("µm", "1"),
                         "value": np.zeros(2)})()
    ax = _grid(gn.plot.pair(sig, crlb=cr), 2)[1, 0]
    e1 = next(p for p in ax.patches if p.get_gid() == "crlb:1σ")
    assert sorted([e1.width, e1.height]) == pytest.approx([2.0, 4.0])  # 2·1σ: 1 nm (was 1e-3 µm) and 2
    with pytest.raises(ValueError, match=r"\(2, 2\) covariance"):
        gn.plot.pair(sig, crlb=np.eye(3))
    with pytest.raises(ValueError, match="truth names none"):
        gn.plot.pair(sig, truth={"c": 1.0})
    with pytest.raises(ValueError, match="optimizer path"):
        gn.plot.pair(Signals({"a": d[0, :, 0]}))
    with pytest.raises(ValueError, match="no signal or component 'c'"):
        gn.plot.pair(sig, ["c"])


def test_a_saved_posterior_run_brings_its_truth_and_marginal_bounds(tmp_path):
    lay = gn.Layout({"sep": (), "pa": ()}, units={"sep": "µas", "pa": "deg"})
    d = np.random.default_rng(1).normal(size=(2, 300, 2)) * [38.0, 1e-4] + [9.5e6, 122.01]
    tr = gn.Trace(kind="sampling", theta=d, log_prob=np.zeros((2, 300)), layout=lay, status="sampled")
    gn.save_run(tmp_path / "run", tr, crlb={"sep": 38.0, "pa": 1e-4}, truth={"sep": 9.5e6, "pa": 122.01})
    fig = gn.plot.pair(gn.load_run(tmp_path / "run"))
    axes = _grid(fig, 2)
    assert [ln.get_xdata()[0] for ln in axes[0, 0].get_lines() if ln.get_gid() == "truth"] == [9.5e6]
    x, y = next(ln for ln in axes[1, 1].get_lines() if ln.get_gid() == "crlb:marginal").get_xydata().T
    np.testing.assert_allclose(y, np.exp(-0.5 * ((x - 122.01) / 1e-4) ** 2) / (1e-4 * np.sqrt(2 * np.pi)), rtol=1e-6)
    assert not axes[1, 0].patches  # marginal bounds only: no ellipses
    with pytest.warns(UserWarning, match="truth= is not used"):
        ens = [gn.Trace(kind="optimization", theta=np.array([[9.5e6 + e, 122.01]]), loss=np.ones(1),
                        step=np.arange(1), layout=lay) for e in range(3)]
        exp = gn.Experiment(tmp_path / "exp")
        for e, t in enumerate(ens):
            exp.save(f"r{e}", t, truth={"sep": 9.5e6 + 2 * e, "pa": 122.01})
        gn.plot.pair(exp, truth={"sep": 9.5e6})


def test_truth_as_a_flat_theta_goes_through_the_layouts_transforms():
    """Found by a new user: pair(post, names, truth=truth_theta) was refused although save_run and Signals take a
    flat θ. A flat base θ now goes through the layout (a positive block: θ holds log c, the plot shows c), drawing
    the same markers as the mapping; without a layout, or of the wrong size, it is refused by name."""
    layout = gn.Layout({"sep": (), "c": ()}, units={"sep": "µas"}, transforms={"c": "positive"})
    rng = np.random.default_rng(3)
    theta = np.stack([rng.normal(100.0, 1.0, (2, 400)), rng.normal(np.log(3.0), 0.05, (2, 400))], axis=-1)
    post = gn.Trace(kind="sampling", theta=theta, log_prob=np.zeros((2, 400)), layout=layout)
    truth_theta = np.array([100.2, np.log(3.0)])

    def markers(fig):
        return sorted(tuple(np.round(np.asarray(line.get_xydata()).ravel(), 9))
                      for ax in fig.axes for line in ax.get_lines() if line.get_gid() == "truth")

    by_theta = gn.plot.pair(post, ["sep", "c"], truth=truth_theta)
    by_name = gn.plot.pair(post, ["sep", "c"], truth={"sep": 100.2, "c": 3.0})
    assert markers(by_theta) == markers(by_name) and markers(by_name)
    with pytest.raises(ValueError, match=r"shape \(2,\) for this layout, got \(3,\)"):
        gn.plot.pair(post, ["sep", "c"], truth=np.zeros(3))
    bare = gn.Trace(kind="sampling", theta=theta, log_prob=np.zeros((2, 400)))
    with pytest.raises(ValueError, match="layout"):  # refused before the truth is read: no names without one
        gn.plot.pair(bare, truth=truth_theta)
