"""Ill-conditioned quadratics: gradient evaluations to a 1e-8 relative gap, per optimizer.

f(θ) = ½ (θ − θ*)ᵀ H (θ − θ*) in D = 100 with eigenvalues log-spaced over [1, κ], κ = 1e2, 1e4, 1e6;
H axis-aligned (diagonal) or rotated (H = Q Λ Qᵀ, Q random orthogonal). Start θ0 = 0.
Target: f(θ_t) ≤ 1e-8 · f(θ0). θ* is a fixed standard-normal draw (a uniform θ* − θ0 would let Adam's
first sign-like step land exactly on it). Cost: every gradient evaluation the method spends (curvature
estimation, power iterations, line searches and, for the eigen map, the dense Hessian included). Each row is
re-run with num_steps = first hitting step so that num_grad_evals is exact (the re-run does not recompile).

Methods: gd (default η = 1/λmax), preconditioned_gd (default Barzilai–Borwein steps) with curvature exact /
hutchinson (variance-reduced) / hutchinson plain / gauss_newton (the quadratic as residuals L(θ−θ*),
LᵀL = H), eigen-whitened gd
(EigenMap from the exact dense Hessian, η = 1), preconditioned_gd with exact curvature and a fixed step
η = 1/λmax (power iteration), Adam (best of a learning-rate grid), L-BFGS (default: preconditioned by the
curvature diagonal at θ0, here variance-reduced Hutchinson) and plain L-BFGS (``curvature="identity"``).
Ratios are against gd measured in the same run.

``--defaults``: the choice of ``gn.optimize``'s default method. gd (the old default), preconditioned_gd and lbfgs,
each with its own defaults only, on objectives they know nothing about: two numpyro models (a logistic
regression on the German credit data; a centred hierarchical normal model, 8 groups, Jacobian in the loss), a
badly scaled logistic regression (``from_loss``, features scaled over 1e-2…1e2), ill-conditioned quadratics
(axis-aligned κ = 1e6, rotated κ = 1e4, D = 100) and, when dLux is installed, a dLux binary star
(``from_likelihood``, D = 14). Per run: gradient evaluations to a relative gap (f − f*)/max(|f*|, 1) ≤ 1e-6 (f*
the best loss any run reached, or Newton's where known), the final gap after ``--max-steps`` and the status.

``--dlux``: the issue-18 check on examples/dlux_binary.py's model (11 parameters, Poisson, float64) with defaults
only: preconditioned_gd and lbfgs from starts 5 CRLB away (random signs, 3 keys) must reach the MLE
(max |θ − MLE| / CRLB ≤ 0.05), then ``gn.sample(obj, init=fit, key=key)`` (4 chains) must give posterior sd /
CRLB within 0.8–1.25 and R̂ ≤ 1.05.

Run:  python benchmarks/bench_optimizers.py [--max-steps N] [--defaults] [--dlux] [--methods a,b,lbfgs[backtracking]]
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import gnomon as gn  # noqa: E402

D = 100
TARGET = 1e-8
ADAM_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)


def problem(kappa: float, rotated: bool, seed: int = 0):
    lam = np.logspace(0, np.log10(kappa), D)
    if rotated:
        q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((D, D)))
        h = q @ np.diag(lam) @ q.T
    else:
        h = np.diag(lam)
    h = 0.5 * (h + h.T)
    return h, np.linalg.cholesky(h).T  # L with LᵀL = H


THETA_STAR = jnp.asarray(np.random.default_rng(42).standard_normal(D))
LOSS = gn.Objective.from_loss(lambda t, h: 0.5 * (t - THETA_STAR) @ h @ (t - THETA_STAR), D, takes_data=True)
RESID = gn.Objective.from_residuals(lambda t, l: l @ (t - THETA_STAR), D, takes_data=True)


def evals_to_target(obj, theta0, data, max_steps, f0, **kw):
    """(grad evals to reach the target, steps) or (None, None) within max_steps."""
    tr = gn.optimize(obj, theta0, data=data, num_steps=max_steps, **kw)
    hit = np.nonzero(np.asarray(tr.loss) <= TARGET * f0)[0]
    if hit.size == 0:
        return None, None
    t = int(tr.step[hit[0]])
    tr2 = gn.optimize(obj, theta0, data=data, num_steps=t, **kw)
    return int(tr2.num_grad_evals), t


def run(max_steps: int) -> list[dict]:
    rows = []
    th0 = jnp.zeros(D)
    for rotated in (False, True):
        for kappa in (1e2, 1e4, 1e6):
            h, l = problem(kappa, rotated)
            hj, lj = jnp.asarray(h), jnp.asarray(l)
            f0 = float(LOSS.loss(th0, hj))
            res = {}
            res["gd"] = evals_to_target(LOSS, th0, hj, max_steps, f0, method="gd")
            for c in ("exact", "hutchinson"):
                res[f"pgd[{c}]"] = evals_to_target(
                    LOSS, th0, hj, max_steps, f0, method="preconditioned_gd", curvature=c
                )
            res["pgd[exact, fixed step]"] = evals_to_target(
                LOSS, th0, hj, max_steps, f0, method="preconditioned_gd", curvature="exact", step_rule="fixed"
            )
            res["pgd[hutchinson plain]"] = evals_to_target(
                LOSS,
                th0,
                hj,
                max_steps,
                f0,
                method="preconditioned_gd",
                curvature="hutchinson",
                hutchinson_mode="plain",
            )
            res["pgd[gauss_newton]"] = evals_to_target(
                RESID, th0, lj, max_steps, f0, method="preconditioned_gd"
            )
            # eigen-whitened gd: dense exact Hessian (2D evals) -> EigenMap -> gd with η = 1
            curv = gn.estimate_curvature(LOSS, th0, "exact", dense=True, data=hj)
            em = gn.EigenMap.from_matrix(curv.matrix, th0)
            zobj = LOSS.reparameterize(em)
            ev, t = evals_to_target(zobj, jnp.zeros(D), hj, max_steps, f0, method="gd", learning_rate=1.0)
            res["eigen-whitened gd"] = (None if ev is None else ev + curv.num_grad_evals, t)
            best = (None, None, None)
            for lr in ADAM_GRID:
                ev, t = evals_to_target(LOSS, th0, hj, max_steps, f0, method="adam", learning_rate=lr)
                if ev is not None and (best[0] is None or ev < best[0]):
                    best = (ev, t, lr)
            res["adam (best lr)"] = best[:2]
            adam_lr = best[2]
            res["lbfgs"] = evals_to_target(LOSS, th0, hj, max_steps, f0, method="lbfgs")
            res["lbfgs (plain)"] = evals_to_target(LOSS, th0, hj, max_steps, f0, method="lbfgs", curvature="identity")
            for name, (ev, t) in res.items():
                rows.append(
                    {
                        "problem": f"{'rotated' if rotated else 'axis'} κ={kappa:.0e}",
                        "method": name,
                        "evals": ev,
                        "steps": t,
                        "adam_lr": adam_lr if name.startswith("adam") else None,
                    }
                )
    return rows


def default_targets() -> dict:
    """name -> (objective, θ0): the targets of ``--defaults``."""
    import sys
    from pathlib import Path

    import numpyro
    import numpyro.distributions as dist

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from sampling_targets import GERMAN

    raw = np.loadtxt(GERMAN)
    x = (raw[:, :-1] - raw[:, :-1].mean(0)) / raw[:, :-1].std(0)
    y = (raw[:, -1] == 1).astype(float)
    xi = np.hstack([np.ones((x.shape[0], 1)), x])

    def logistic(xm, yv):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([xm.shape[1]]).to_event(1))
        numpyro.sample("y", dist.Bernoulli(logits=xm @ w), obs=yv)

    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(8), 20)
    obs = rng.normal(2.0 + 1.5 * rng.standard_normal(8)[groups], 1.0)

    def hierarchical(g, yv):
        mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = numpyro.sample("tau", dist.LogNormal(0.0, 1.0))
        sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
        alpha = numpyro.sample("alpha", dist.Normal(mu, tau).expand([8]).to_event(1))
        numpyro.sample("y", dist.Normal(alpha[g], sigma), obs=yv)

    scales = 10.0 ** np.linspace(-2, 2, x.shape[1])[np.random.default_rng(0).permutation(x.shape[1])]
    xs, ys = jnp.asarray(np.hstack([x * scales, np.ones((x.shape[0], 1))])), jnp.asarray(1.0 - y)

    def scaled_logistic(t):
        z = xs @ t
        return jnp.mean(jnp.logaddexp(0.0, z) - ys * z) + 0.5e-3 * t @ t

    out = {
        "numpyro logistic (D=25)": (gn.Objective.from_numpyro(logistic, jnp.asarray(xi), jnp.asarray(y)),
                                    jnp.zeros(25)),
        "numpyro hierarchical (D=11)": (gn.Objective.from_numpyro(hierarchical, groups, jnp.asarray(obs),
                                                                  loss_includes_jacobian=True), jnp.zeros(11)),
        "scaled logistic (D=25)": (gn.Objective.from_loss(scaled_logistic, 25), jnp.zeros(25)),
    }
    for kappa, rotated in ((1e6, False), (1e4, True)):
        h, _ = problem(kappa, rotated)
        hj = jnp.asarray(h)
        out[f"quadratic {'rotated' if rotated else 'axis'} κ={kappa:.0e}"] = (
            gn.Objective.from_loss(lambda t, hj=hj: 0.5 * (t - THETA_STAR) @ hj @ (t - THETA_STAR), D), jnp.zeros(D))
    try:
        obj, truth, crlb = dlux_example()
        signs = np.where(np.random.default_rng(5).random(truth.size) < 0.5, -1.0, 1.0)
        out["dLux binary, from_likelihood (D=11)"] = (obj, jnp.asarray(truth + 5.0 * signs * crlb))
    except ImportError:
        pass
    return out


def dlux_example():
    """examples/dlux_binary.py's model (a static aberration breaks the twin image): (objective, truth, CRLB)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "dlux_binary.py"
    spec = importlib.util.spec_from_file_location("dlux_binary", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    tel = mod.build_telescope(48, 24)
    layout = mod.build_layout(tel)
    truth = layout.pack({"position": jnp.array([120.0, -70.0]), "separation": 2.5e6, "position_angle": 80.0,
                         "log_flux": 6.5, "contrast": 3.2, "plate_scale": 40.0,
                         "zernikes": jnp.array([12.0, -8.0, 10.0, 6.0])})

    def predict(theta):
        return layout.apply(tel, theta).model()

    data = np.random.default_rng(0).poisson(np.asarray(jax.jit(predict)(truth))).astype(float)
    obj = gn.Objective.from_likelihood(predict, data, "poisson", layout)
    crlb = gn.cramer_rao(obj, truth).marginal
    return obj, np.asarray(truth), np.asarray(crlb)


def _method(spec: str) -> tuple[str, dict]:
    """``"lbfgs[backtracking]"`` -> ``("lbfgs", {"linesearch": "backtracking"})``; a plain name has no options."""
    if spec.endswith("]"):
        name, ls = spec[:-1].split("[")
        return name, {"linesearch": ls}
    return spec, {}


def dlux_defaults(num_samples: int = 1000, methods: tuple[str, ...] = ("preconditioned_gd", "lbfgs")) -> None:
    """The ``--dlux`` check (module docstring)."""
    import warnings

    import arviz_stats as azs

    obj, truth, crlb = dlux_example()
    lay = obj.layout

    def values(th):  # the bounds are on the layout's values in the user's units (the contrast, not its log)
        return np.asarray(lay.element_values(jnp.asarray(th)))

    ref = gn.optimize(obj, jnp.asarray(truth), "lbfgs", num_steps=500, tol=1e-9)
    mle = values(ref.best_theta)
    print(f"# dLux binary (D={truth.size}), defaults only; CRLB at the truth; MLE from the truth ({ref.status})")
    fits = []
    for k in range(3):
        signs = np.where(np.random.default_rng(k).random(truth.size) < 0.5, -1.0, 1.0)
        th0 = jnp.asarray(truth + 5.0 * signs * crlb)  # 5 bounds in θ (the contrast's log: 16 bounds)
        for m in methods:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                tr = gn.optimize(obj, th0, _method(m)[0], num_steps=500, tol=1e-6, **_method(m)[1])
            dev = float(np.max(np.abs(values(tr.best_theta) - mle) / crlb))
            fits.append(tr)
            print(f"start {k} {m:<18} {tr.status[:30]:<30} steps {tr.num_steps:>4} evals {int(tr.num_grad_evals):>5} "
                  f"curvature {tr.info['curvature']['method']:<8} max|θ−MLE|/CRLB {dev:.2e} "
                  f"{'OK' if dev <= 0.05 else 'FAIL'} warnings {len(caught)}")
    # the same model as a plain loss (no likelihood, no residuals): the Hessian it falls back from, and back to mle
    loss = gn.Objective.from_loss(obj.loss, lay, data=obj.data)
    for m in methods:
        signs = np.where(np.random.default_rng(0).random(truth.size) < 0.5, -1.0, 1.0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tr = gn.optimize(loss, jnp.asarray(truth + 5.0 * signs * crlb), _method(m)[0], num_steps=500, tol=1e-6,
                             **_method(m)[1])
        dev = float(np.max(np.abs(values(tr.best_theta) - mle) / crlb))
        fb = tr.info["curvature"].get("fallback")
        print(f"from_loss {m:<18} {tr.status[:30]:<30} curvature {tr.info['curvature']['method']:<17} "
              f"(fallback from {fb['from'] if fb else '-'}) max|θ−MLE|/CRLB {dev:.2e} {'OK' if dev <= 0.05 else 'FAIL'}"
              f" warnings: {'; '.join(str(w.message)[:70] for w in caught) or 'none'}")
    seed_fit = fits[methods.index("lbfgs")] if "lbfgs" in methods else fits[0]
    post = gn.sample(obj, init=seed_fit, key=jax.random.key(0), num_chains=4, num_samples=num_samples)
    theta = np.asarray(lay.element_values(jnp.asarray(post.theta))).reshape(post.theta.shape[:2] + (truth.size,))
    ratio = theta.reshape(-1, truth.size).std(0) / crlb
    rhat = np.asarray(azs.rhat(theta, chain_axis=0, draw_axis=1)).reshape(-1)
    ok = "OK" if np.all((ratio > 0.8) & (ratio < 1.25)) else "FAIL"
    print(f"gn.sample defaults (4 × {num_samples}): seed curvature {post.info['curvature']['method']}, "
          f"sd/CRLB {ratio.min():.3f}–{ratio.max():.3f} ({ok}), "
          f"max R̂ {rhat.max():.4f} ({'OK' if rhat.max() <= 1.05 else 'FAIL'}), {int(post.num_grad_evals)} gradients")


def defaults(max_steps: int, methods: tuple[str, ...] = ("gd", "preconditioned_gd", "lbfgs")) -> None:
    import warnings

    print(f"# gn.optimize(obj, θ0, method) with the method's defaults, num_steps={max_steps}: gradient evaluations to "
          "a relative gap ≤ 1e-6, final gap, status, wall s (first call: compilation included)")
    print(f"{'target':<36} {'method':<18} {'evals→1e-6':>10} {'final gap':>10} {'wall s':>7}  status")
    for name, (obj, th0) in default_targets().items():
        runs = {}
        for m in methods:
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tr = gn.optimize(obj, th0, _method(m)[0], num_steps=max_steps, **_method(m)[1])
            runs[m] = (tr, time.perf_counter() - t0)
        fstar = min(float(np.nanmin(np.asarray(tr.loss))) for tr, _ in runs.values())
        for m, (tr, wall) in runs.items():
            loss = np.asarray(tr.loss, float)
            gap = (loss - fstar) / max(abs(fstar), 1.0)
            hit = np.flatnonzero(gap <= 1e-6)
            evals = "—"
            if hit.size:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    again = gn.optimize(obj, th0, _method(m)[0], num_steps=int(tr.step[hit[0]]), **_method(m)[1])
                evals = str(int(again.num_grad_evals) - int(again.info.get("end_check_grad_evals", 0)))
            final = float(np.nanmin(gap))
            print(f"{name:<36} {m:<18} {evals:>10} {final:>10.2g} {wall:>7.2f}  {str(tr.status)[:60]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-steps", type=int, default=20000)
    ap.add_argument("--defaults", action="store_true", help="compare the candidates for gn.optimize's default")
    ap.add_argument("--dlux", action="store_true", help="the issue-18 check of the defaults on a dLux model")
    ap.add_argument("--methods", default="", help="comma-separated for --defaults/--dlux, e.g. "
                    "gd,preconditioned_gd,lbfgs,lbfgs[zoom],lbfgs[backtracking]")
    args = ap.parse_args()
    chosen = tuple(args.methods.split(",")) if args.methods else None
    if args.dlux:
        dlux_defaults(methods=chosen or ("preconditioned_gd", "lbfgs"))
        return
    if args.defaults:
        defaults(min(args.max_steps, 1000), chosen or ("gd", "preconditioned_gd", "lbfgs"))
        return
    start = time.perf_counter()
    rows = run(args.max_steps)
    print(
        f"# gradient evaluations to f ≤ {TARGET:g}·f(θ0), D={D} "
        f"(max {args.max_steps} steps; '—' = not reached)"
    )
    print(f"{'problem':<16} {'method':<24} {'evals':>8} {'steps':>7} {'gd/evals':>9}")
    by_problem: dict[str, dict] = {}
    for r in rows:
        by_problem.setdefault(r["problem"], {})[r["method"]] = r
    for prob, methods in by_problem.items():
        gd = methods["gd"]["evals"]
        for name, r in methods.items():
            ev = "—" if r["evals"] is None else str(r["evals"])
            st = "—" if r["steps"] is None else str(r["steps"])
            if r["evals"] is None:
                ratio = "—"
            elif gd is None:
                ratio = f">{(args.max_steps + 1) / r['evals']:.3g}"
            else:
                ratio = f"{gd / r['evals']:.3g}"
            extra = f"  (lr={r['adam_lr']:g})" if r["adam_lr"] is not None else ""
            print(f"{prob:<16} {name:<24} {ev:>8} {st:>7} {ratio:>9}{extra}")
    print(f"# wall time {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
