"""Campaign outputs (issue 21, items 5 and 6): per-member CRLBs and truths in save_batch and run_many, and
derived quantities of ``cramer_rao(..., derived=...)`` carried as parameters — estimate, sd, CRLB, truth and z
in summary.json, in ``gnomon show`` and in ``aggregate --params``."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gnomon as gn
from gnomon.interface.cli import main

LAY = gn.Layout({"a": (2,), "s": ()}, transforms={"s": "positive"}, units={"a": "arcsec", "s": "nm"},
                labels={"a": ["x", "y"]})


def radius(p):
    return jnp.hypot(p["a"][0], p["a"][1])


def fisher_bound(theta, sigma=0.5):
    """The CRLB of a direct measurement of (a, log s) with noise σ, and |a| as a derived quantity."""
    with jax.enable_x64(True):
        obj = gn.Objective.from_likelihood(lambda t: t, np.zeros(3), gn.family.gaussian(sigma), LAY)
        return gn.cramer_rao(obj, jnp.asarray(theta), derived={"r": (radius, "arcsec")})


def batch_trace(finals):
    finals = np.asarray(finals, float)
    b = len(finals)
    theta = np.stack([finals + 1.0, finals], axis=1)  # (B, 2, D): start, final
    return gn.Trace(kind="optimization", theta=theta, loss=np.tile([1.0, 0.0], (b, 1)),
                    step=np.tile(np.arange(2, dtype=np.int32), (b, 1)), status=("converged",) * b,
                    num_grad_evals=np.full(b, 2), extras={"num_rows": np.full(b, 2)})


def summaries(exp):
    return {rid: json.loads((exp.run_dir(rid) / "summary.json").read_text()) for rid in exp.runs()}


def test_save_batch_takes_one_crlb_and_truth_per_member(tmp_path):
    finals = [[3.0, 4.0, 0.1], [6.0, 8.0, 0.2], [0.0, 1.0, 0.3]]
    truths = [LAY.pack({"a": np.array([3.1, 4.0]), "s": 1.0}), {"a": [6.0, 8.2], "s": 1.2},
              {"a[x]": 0.0, "a[y]": 1.5, "s": 1.4}]
    bounds = [fisher_bound(f) for f in finals]
    exp = gn.Experiment(tmp_path / "e")
    exp.save_batch(batch_trace(finals), layout=LAY, crlb=bounds, truth=truths, prefix="b")
    got = summaries(exp)
    for i, rid in enumerate(sorted(got)):
        s, cr = got[rid], bounds[i]
        assert s["crlb.a[x]"] == pytest.approx(cr["a[x]"]) and s["crlb.r"] == pytest.approx(cr["r"])
        a_true = (np.asarray(truths[i])[:2] if i == 0 else
                  np.asarray(truths[1]["a"]) if i == 1 else np.array([0.0, 1.5]))
        assert s["truth.a[x]"] == pytest.approx(a_true[0]) and s["truth.a[y]"] == pytest.approx(a_true[1])
        assert s["z.a[y]"] == pytest.approx((finals[i][1] - a_true[1]) / cr["a[y]"], rel=1e-5)  # float32 pack
        r_hat, r_true = np.hypot(*finals[i][:2]), np.hypot(*a_true)
        assert s["estimate.r"] == pytest.approx(r_hat) and s["truth.r"] == pytest.approx(r_true)
        assert s["z.r"] == pytest.approx((r_hat - r_true) / cr["r"], rel=1e-5, abs=1e-6)
    # a (B, D) array of truths, one CRLB for all; a wrong count is refused before anything is written
    exp2 = gn.Experiment(tmp_path / "e2")
    exp2.save_batch(batch_trace(finals), layout=LAY, crlb=bounds[0], truth=np.asarray(finals) + 0.5, prefix="c")
    for s in summaries(exp2).values():
        assert s["z.a[x]"] == pytest.approx(-0.5 / bounds[0]["a[x]"]) and s["crlb.r"] == pytest.approx(bounds[0]["r"])
    with pytest.raises(ValueError, match="crlb: 2 values for 3 members"):
        exp2.save_batch(batch_trace(finals), layout=LAY, crlb=bounds[:2], prefix="d")
    with pytest.raises(ValueError, match=r"truth: a \(2, 3\) array has one row per member, but there are 3"):
        exp2.save_batch(batch_trace(finals), layout=LAY, truth=np.zeros((2, 3)), prefix="d")
    assert not any(r.startswith("d-") for r in exp2.runs()) and not list(exp2.runs_dir.glob("d-*"))


def fit_item(item):
    th = np.asarray(item, float)
    return gn.Trace(kind="optimization", theta=th[None], loss=np.zeros(1), status="converged", layout=LAY)


def test_run_many_takes_per_item_truths_and_what_fn_returns_wins(tmp_path):
    items = [[1.0, 2.0, 0.0], [2.0, 2.0, 0.0]]
    exp = gn.Experiment(tmp_path / "e")
    truths = [{"a": [1.5, 2.0], "s": 1.0}, None]
    res = exp.run_many(fit_item, items, save_kwargs={"truth": truths, "crlb": {"a": [0.5, 0.5], "s": 0.1}})
    assert res.ok
    s0, s1 = summaries(exp).values()
    assert s0["z.a[x]"] == pytest.approx(-1.0) and "truth.a[x]" not in s1 and s1["crlb.a[x]"] == 0.5

    def with_own_truth(item):
        return {"trace": fit_item(item), "truth": {"a": [0.0, 0.0], "s": 1.0}}

    exp2 = gn.Experiment(tmp_path / "e2")
    exp2.run_many(with_own_truth, items, save_kwargs={"truth": truths})
    assert [s["truth.a[x]"] for s in summaries(exp2).values()] == [0.0, 0.0]


def test_derived_quantity_of_a_posterior_from_the_draws_and_in_show_and_aggregate(tmp_path, capsys):
    rng = np.random.default_rng(0)
    draws = np.concatenate([np.array([3.0, 4.0]) + 0.2 * rng.standard_normal((2, 300, 2)),
                            0.1 * rng.standard_normal((2, 300, 1))], axis=-1)
    post = gn.Trace(kind="sampling", theta=draws, log_prob=np.zeros((2, 300)), status="sampled", layout=LAY)
    cr = fisher_bound([3.0, 4.0, 0.0], sigma=0.2)
    exp = gn.Experiment(tmp_path / "e")
    exp.save("nuts", post, crlb=cr, truth={"a": [3.0, 4.0], "s": 1.0})
    s = exp.load("nuts").summary
    r = np.hypot(draws[..., 0], draws[..., 1]).ravel()  # the derived quantity on every draw
    # (JAX evaluates the function in its default float32 here: the library never switches x64 on)
    assert s["estimate.r"] == pytest.approx(r.mean(), rel=1e-6) and s["sd.r"] == pytest.approx(r.std(ddof=1), rel=1e-5)
    assert s["truth.r"] == pytest.approx(5.0) and s["crlb.r"] == pytest.approx(0.2)
    assert s["z.r"] == pytest.approx((r.mean() - 5.0) / 0.2, rel=1e-5)
    assert exp.load("nuts").meta["crlb"]["derived"] == {"r": "arcsec"}
    assert main(["show", str(exp.run_dir("nuts"))]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.strip().startswith("r "))
    assert "arcsec" in row and f"{(r.mean() - 5.0) / 0.2:+.2f}" in row and "5" in row
    assert main(["aggregate", str(exp.path), "--params", "r"]) == 0
    out = capsys.readouterr().out
    assert "estimate.r" in out and "sd.r" in out and "crlb.r" in out and "truth.r" in out and "z.r" in out
    df = exp.aggregate(params=["r"])
    assert list(df.columns[-5:]) == ["estimate.r", "sd.r", "crlb.r", "truth.r", "z.r"]


def test_derived_quantity_without_a_layout_and_a_truth_that_names_too_little(tmp_path):
    with jax.enable_x64(True):
        obj = gn.Objective.from_likelihood(lambda t: t, np.zeros(2), gn.family.gaussian(1.0), 2)
        cr = gn.cramer_rao(obj, jnp.array([1.0, 2.0]), derived={"sum": lambda t: t[0] + t[1]})
    fit = gn.Trace(kind="optimization", theta=np.array([[0.0, 0.0], [1.0, 2.5]]), loss=np.array([1.0, 0.0]),
                   status="converged")
    gn.save_run(tmp_path / "r", fit, crlb=cr, truth=[1.0, 2.0])
    s = gn.load_run(tmp_path / "r").summary
    assert s["estimate.sum"] == pytest.approx(3.5) and s["truth.sum"] == pytest.approx(3.0)
    assert s["z.sum"] == pytest.approx(0.5 / np.sqrt(2))
    # a truth naming only some parameters: the derived truth (and z) are left out, not guessed
    cr2 = fisher_bound([3.0, 4.0, 0.0])
    gn.save_run(tmp_path / "r2", fit_item([3.0, 4.0, 0.0]), crlb=cr2, truth={"a": [3.0, 4.0]})
    s2 = gn.load_run(tmp_path / "r2").summary
    assert s2["estimate.r"] == pytest.approx(5.0) and "truth.r" not in s2 and "z.r" not in s2
    assert s2["z.a[x]"] == 0.0
