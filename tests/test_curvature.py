"""Curvature estimators against independent references: jax.hessian, JᵀWJ, explicit per-observation
gradients, Hutchinson statistics, and the safeguards (negative / non-finite entries, relative floors)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gnomon as gn
from gnomon.curvature.estimate import Curvature, blend_curvature, hutchinson_plain

RNG = np.random.default_rng(0)
D = 6
A = RNG.standard_normal((D, D))
H0 = A @ A.T + np.eye(D)


def nonquad(t):
    return 0.5 * t @ jnp.asarray(H0, t.dtype) @ t + jnp.sum(jnp.cos(t) * jnp.arange(1, D + 1)) + jnp.sum(t**4)


def correlated_test_matrix(seed, dim=200):
    """diag spanning 1e-4…1e4 times a random (Wishart) correlation matrix: H = S C S."""
    r = np.random.default_rng(seed)
    W = r.standard_normal((dim, dim))
    C = W @ W.T
    s = np.sqrt(np.diag(C))
    C = C / s[:, None] / s[None, :]
    d = 10 ** r.uniform(-4, 4, dim)
    return np.sqrt(d)[:, None] * C * np.sqrt(d)[None, :], d


@pytest.mark.parametrize("x64", [False, True])
def test_exact_diag_and_dense_match_jax_hessian(x64):
    with jax.enable_x64(x64):
        obj = gn.Objective.from_loss(nonquad, D)
        th = jnp.linspace(-1.0, 1.0, D)
        ref = np.asarray(jax.hessian(nonquad)(th))
        c = gn.estimate_curvature(obj, th, "exact", dense=True)
        tol = 1e-10 if x64 else 1e-4
        np.testing.assert_allclose(c.matrix, ref, rtol=tol, atol=tol)
        d = gn.estimate_curvature(obj, th, "exact", batch_size=2)  # lax.map in batches
        np.testing.assert_allclose(d.diag, np.abs(np.diag(ref)), rtol=tol, atol=tol)
        assert c.num_grad_evals == 2 * D and c.method == "exact"
        assert c.diag.dtype == (jnp.float64 if x64 else jnp.float32)


@pytest.mark.parametrize("n_obs", [3, 15])  # reverse mode (N < D) and forward mode (N ≥ D)
def test_gauss_newton_equals_jtwj(n_obs):
    with jax.enable_x64(True):
        J = RNG.standard_normal((n_obs, D))
        w = RNG.uniform(0.5, 2.0, n_obs)
        y = RNG.standard_normal(n_obs)

        def resid(t):
            return jnp.tanh(J @ t) - y

        obj = gn.Objective.from_residuals(resid, D, weights=w)
        th = jnp.asarray(RNG.standard_normal(D) * 0.3)
        jac = np.asarray(jax.jacfwd(resid)(th))
        ref = jac.T @ (w[:, None] * jac)
        c = gn.estimate_curvature(obj, th, "gauss_newton", dense=True)
        np.testing.assert_allclose(c.matrix, ref, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(c.diag, np.diag(ref), rtol=1e-10)
        assert c.num_grad_evals == min(n_obs, D)
        assert c.config["jacobian_mode"] == ("forward" if n_obs >= D else "reverse")
        # at zero residual of a linear model GN is the exact Hessian
        lin = gn.Objective.from_residuals(lambda t: J @ t, D, weights=w)
        h = gn.estimate_curvature(lin, jnp.zeros(D), "exact", dense=True)
        g = gn.estimate_curvature(lin, jnp.zeros(D), "gauss_newton", dense=True)
        np.testing.assert_allclose(g.matrix, h.matrix, rtol=1e-10, atol=1e-10)


def test_empirical_fisher_from_per_observation_gradients():
    with jax.enable_x64(True):
        X = RNG.standard_normal((20, 3))
        y = (RNG.uniform(size=20) < 0.5).astype(float)

        def per_obs(t):
            z = X @ t
            return jnp.logaddexp(0.0, z) - y * z

        obj = gn.Objective.from_loss(lambda t: jnp.sum(per_obs(t)), 3, per_observation=per_obs)
        th = jnp.array([0.3, -0.2, 0.1])
        G = np.asarray(jax.jacrev(per_obs)(th))
        c = gn.estimate_curvature(obj, th, "empirical_fisher", dense=True)
        np.testing.assert_allclose(c.matrix, G.T @ G, rtol=1e-10)
        np.testing.assert_allclose(c.diag, (G**2).sum(0), rtol=1e-10)
        with pytest.raises(ValueError, match="per-observation"):
            gn.estimate_curvature(gn.Objective.from_loss(lambda t: jnp.sum(t**2), 3), th, "empirical_fisher")


def test_wrong_method_for_objective_gives_clear_errors():
    obj = gn.Objective.from_loss(nonquad, D)
    th = jnp.zeros(D)
    with pytest.raises(ValueError, match="needs residuals"):
        gn.estimate_curvature(obj, th, "gauss_newton")
    with pytest.raises(ValueError, match="method 'fisher' needs a likelihood.*from_likelihood"):
        gn.estimate_curvature(obj, th, "fisher")
    with pytest.raises(ValueError, match="unknown curvature method"):
        gn.estimate_curvature(obj, th, "fisherr")
    with pytest.raises(ValueError, match=r"expected \(6,\)"):
        gn.estimate_curvature(obj, jnp.zeros(D + 1), "exact")
    with pytest.raises(ValueError, match="non-finite"):
        gn.estimate_curvature(obj, jnp.full(D, jnp.nan), "exact")
    with pytest.raises(ValueError, match="num_probes"):
        gn.estimate_curvature(obj, th, "hutchinson", num_probes=0)
    with pytest.raises(ValueError, match="dense"):
        gn.estimate_curvature(obj, th, "ema_grad2", dense=True)
    with pytest.raises(ValueError, match="Hutchinson mode"):
        gn.estimate_curvature(obj, th, "hutchinson", hutchinson_mode="xdiag")
    with pytest.raises(ValueError, match="floor"):
        gn.estimate_curvature(obj, th, "exact", floor=2.0)


def test_hutchinson_plain_is_unbiased_and_error_decays_as_one_over_sqrt_k():
    with jax.enable_x64(True):
        H = jnp.asarray(H0)
        f = lambda t: 0.5 * t @ H @ t  # noqa: E731
        th = jnp.zeros(D)
        keys = jax.random.split(jax.random.key(1), 2000)
        ests = jax.jit(jax.vmap(lambda k: hutchinson_plain(f, th, k, 1)[0]))(keys)
        # per-entry variance of one probe is Σ_{j≠i} H_ij²: the mean is within 4 standard errors
        var1 = (H0**2).sum(1) - np.diag(H0) ** 2
        assert np.all(np.abs(ests.mean(0) - np.diag(H0)) < 4 * np.sqrt(var1 / 2000))
        errs = {}
        for k in (4, 64):
            e = jax.jit(jax.vmap(lambda kk, k=k: hutchinson_plain(f, th, kk, k)[0]))(keys[:200])
            errs[k] = float(np.sqrt(np.mean((np.asarray(e) - np.diag(H0)) ** 2)))
        assert 2.5 < errs[4] / errs[64] < 6.5  # √16 = 4


def test_variance_reduced_hutchinson_meets_goal_on_badly_scaled_matrix():
    with jax.enable_x64(True):
        obj = gn.Objective.from_loss(lambda t, H: 0.5 * t @ H @ t, 200, takes_data=True)
        th = jnp.zeros(200)
        vr, plain = [], []
        for seed in range(3):
            H, d = correlated_test_matrix(seed)
            kw = dict(num_probes=32, key=jax.random.key(seed), floor=0.0, data=jnp.asarray(H))
            c = gn.estimate_curvature(obj, th, "hutchinson", **kw)
            p = gn.estimate_curvature(obj, th, "hutchinson", hutchinson_mode="plain", **kw)
            assert c.num_grad_evals == 64 and c.config["hutchinson_mode"] == "variance_reduced"
            vr.append(np.median(np.abs(np.asarray(c.diag) - d) / d))
            plain.append(np.median(np.abs(np.asarray(p.diag) - d) / d))
        assert max(vr) <= 0.25, vr
        assert min(plain) > 0.8, plain  # plain Hutchinson fails here


def test_negative_and_nonfinite_entries_are_handled_and_counted():
    with jax.enable_x64(True):
        # saddle: Hessian diag (2, -3, 4)
        obj = gn.Objective.from_loss(lambda t: t[0] ** 2 - 1.5 * t[1] ** 2 + 2 * t[2] ** 2, 3)
        c = gn.estimate_curvature(obj, jnp.zeros(3), "exact")
        np.testing.assert_allclose(c.diag, [2.0, 3.0, 4.0])
        assert c.config["num_negative"] == 1 and c.config["negative"] == "abs"
        f = gn.estimate_curvature(obj, jnp.zeros(3), "exact", negative="floor", floor=0.1)
        np.testing.assert_allclose(f.diag, [2.0, 0.1 * 3.0, 4.0])  # floor = 0.1 · median |diag|
        assert f.config["num_floored"] == 1
        # a non-finite entry is replaced by the largest finite one (the smallest learning rate)
        g = gn.Objective.from_loss(lambda t: t[0] ** 2 + 2 * t[1] ** 2 + jnp.sqrt(t[2]) ** 3, 3)
        c2 = gn.estimate_curvature(g, jnp.array([1.0, 1.0, -1.0]), "exact")
        assert c2.config["num_nonfinite"] == 1
        np.testing.assert_allclose(c2.diag, [2.0, 4.0, 4.0])
        with pytest.raises(ValueError, match="every entry"):
            gn.estimate_curvature(
                gn.Objective.from_loss(lambda t: jnp.sum(jnp.sqrt(t) ** 3), 2), -jnp.ones(2)
            )


def test_floor_is_relative_to_median_or_prior_never_to_max():
    with jax.enable_x64(True):
        d = 10.0 ** np.arange(-8, 9)  # stiff: 1e-8 … 1e8
        obj = gn.Objective.from_loss(lambda t: 0.5 * jnp.sum(d * t**2), d.size)
        c = gn.estimate_curvature(obj, jnp.zeros(d.size), "exact", floor=1e-6)
        # median is 1: entries below 1e-6 are floored, the large ones untouched (a max-relative floor
        # of the same fraction would raise everything below 1e2)
        np.testing.assert_allclose(c.diag, np.maximum(d, 1e-6))
        assert c.config["num_floored"] == 2
        p = gn.estimate_curvature(obj, jnp.zeros(d.size), "exact", prior_precision=1e-3)
        np.testing.assert_allclose(p.diag, np.maximum(d, 1e-3))


def test_ema_grad2_matches_bias_corrected_ema_and_blending():
    with jax.enable_x64(True):
        obj = gn.Objective.from_loss(nonquad, D)
        grads = RNG.standard_normal((5, D))
        beta = 0.9
        v = np.zeros(D)
        for g in grads:
            v = beta * v + (1 - beta) * g**2
        c = gn.estimate_curvature(obj, jnp.zeros(D), "ema_grad2", grads=grads, beta=beta, floor=0.0)
        np.testing.assert_allclose(c.diag, v / (1 - beta**5), rtol=1e-12)
        assert c.num_grad_evals == 0 and c.power == 0.5
        one = gn.estimate_curvature(obj, jnp.ones(D), "ema_grad2", floor=0.0)
        np.testing.assert_allclose(one.diag, np.asarray(jax.grad(nonquad)(jnp.ones(D))) ** 2, rtol=1e-12)
        e = gn.estimate_curvature(obj, jnp.zeros(D), "exact")
        b = blend_curvature(e, c, 0.25)
        np.testing.assert_allclose(b.diag, 0.25 * np.asarray(e.diag) + 0.75 * np.asarray(c.diag))
        assert b.num_grad_evals == e.num_grad_evals
        s = gn.estimate_curvature(obj, jnp.zeros(D), "exact", previous=c, ema=0.5)
        np.testing.assert_allclose(s.diag, 0.5 * np.asarray(c.diag) + 0.5 * np.asarray(e.diag))


def test_curvature_is_a_pytree_with_hashable_config():
    c = Curvature.from_diag(jnp.arange(1.0, 4.0), note="x")
    out = jax.jit(lambda c: c)(c)
    assert isinstance(out, Curvature) and out.config == {"note": "x"} and out.method == "user"
    assert hash(c.config) == hash(out.config)
    assert c.describe()["dim"] == 3 and set(c.to_arrays()) == {"diag"}
    with pytest.raises(ValueError, match="positive"):
        Curvature.from_diag([1.0, 0.0])
    with pytest.raises(ValueError, match="square"):
        Curvature.from_matrix(np.ones((2, 3)))


def test_variance_reduced_hutchinson_compiles_the_model_once():
    """Its rounds run in one loop: the objective is traced (and inlined into the program) once, not once per
    round — for a heavy forward model each copy is seconds to minutes of compilation."""
    from gnomon.curvature.numerics import hutchinson_rounds, hutchinson_variance_reduced

    traced = []
    h = jnp.asarray(np.diag([1.0, 4.0, 9.0, 100.0]), jnp.float32)

    def f(t):
        traced.append(1)
        return 0.5 * t @ h @ t

    assert len(hutchinson_rounds(32)) == 3
    est = jax.jit(lambda th, k: hutchinson_variance_reduced(f, th, k, 32))(jnp.ones(4), jax.random.key(0))
    assert len(traced) == 1
    np.testing.assert_allclose(est, [1.0, 4.0, 9.0, 100.0], rtol=1e-5)  # a diagonal H: exact after round one
