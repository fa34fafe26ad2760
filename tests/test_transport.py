"""The transport stage (gnomon.sampler.transport): an affine autoregressive map trained by Fisher divergence on
draws and gradients; it recovers a known non-centring, is refused where a linear map is already right, and
sampling in its coordinates gives base-θ draws with the target's moments."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gnomon as gn
from gnomon.sampler import transport as tp


def _hier_prior(d: int):
    """μ ~ N(0, 1), log τ ~ N(0, 1), θ_j ~ N(μ, τ²), j = 1..d−2: θ = (μ, log τ, θ_j). Exact non-centring:
    z ↦ (z_0, z_1, z_0 + e^{z_1} z_j)."""

    def log_prob(th):
        mu, lt, t = th[0], th[1], th[2:]
        return -0.5 * mu**2 - 0.5 * lt**2 - 0.5 * jnp.sum((t - mu) ** 2) * jnp.exp(-2 * lt) - (d - 2) * lt

    def exact(z):
        z = np.asarray(z, np.float64)
        return np.concatenate([z[..., :2], z[..., :1] + np.exp(z[..., 1:2]) * z[..., 2:]], axis=-1)

    return log_prob, exact


def _draws(log_prob, exact, d, n, seed):
    z = np.random.default_rng(seed).normal(size=(n, d))
    th = exact(z).astype(np.float32)
    g = np.asarray(jax.vmap(jax.grad(log_prob))(jnp.asarray(th)))
    return th, g


def test_recovers_a_known_noncentring():
    d = 6
    log_prob, exact = _hier_prior(d)
    th, g = _draws(log_prob, exact, d, 300, 0)
    tmap, dec = tp.fit_transport(th, g, seed=1)
    assert dec.action == "transport kept", dec.message
    assert tmap is not None and tmap.order[0] == 1  # log τ, the scale parent, first
    # far below what the best linear map reaches, and close to zero (an exact map has Fisher divergence 0)
    assert dec.details["fisher_map"] < 0.05 < 0.5 * dec.details["fisher_linear"]
    # the learned T is the non-centring map (up to the symmetry z_j → −z_j of each coordinate) on |z| ≤ 2
    z = np.random.default_rng(2).uniform(-2, 2, size=(400, d)).astype(np.float32)
    t_learned = np.asarray(tmap.to_theta(z), np.float64)
    # compare the pushforwards of N(0, I) instead of pointwise maps where a coordinate's sign may flip
    zz = np.random.default_rng(3).normal(size=(20000, d)).astype(np.float32)
    a, b = np.asarray(tmap.to_theta(zz), np.float64), exact(zz)
    assert np.allclose(a[:, :2].mean(0), b[:, :2].mean(0), atol=0.05)
    assert np.allclose(np.quantile(a, [0.1, 0.5, 0.9], axis=0), np.quantile(b, [0.1, 0.5, 0.9], axis=0), atol=0.1)
    # and pointwise up to signs: |T(z)| agrees in the children's spread, which depends on z_1 exactly
    spread_l = np.abs(t_learned[:, 2:] - t_learned[:, :1])
    spread_e = np.abs(exact(z)[:, 2:] - exact(z)[:, :1])
    assert np.median(np.abs(np.log(spread_l + 1e-9) - np.log(spread_e + 1e-9))) < 0.3


def test_refused_when_a_linear_map_is_right():
    d = 5
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    cov = (q * np.linspace(0.3, 3.0, d) ** 2) @ q.T
    prec = np.linalg.inv(cov)
    th = rng.multivariate_normal(np.arange(d, dtype=float), cov, size=400).astype(np.float32)
    g = (-(th - np.arange(d)) @ prec).astype(np.float32)
    tmap, dec = tp.fit_transport(th, g, seed=0)
    assert tmap is None and dec.action == "transport refused"
    assert "refused" in dec.message and dec.details["fisher_linear"] < 0.05


def test_map_round_trip_and_log_det():
    d = 5
    log_prob, exact = _hier_prior(d)
    th, g = _draws(log_prob, exact, d, 200, 4)
    tmap, _ = tp.fit_transport(th, g, seed=0)
    z = jnp.asarray(np.random.default_rng(5).normal(size=(7, d)), jnp.float32)
    back = np.asarray(tmap.to_z(tmap.to_theta(z)))
    assert np.allclose(back, np.asarray(z), atol=1e-4)
    jac = jax.vmap(jax.jacfwd(tmap.to_theta))(z)
    assert np.allclose(np.linalg.slogdet(np.asarray(jac, np.float64))[1], np.asarray(tmap.log_det_jacobian(z)),
                       atol=1e-3)
    again = tp.TransportMap.from_arrays(tmap.to_arrays(), tmap.describe())
    assert again.hash == tmap.hash
    with pytest.raises(ValueError, match="hash mismatch"):
        tp.TransportMap.from_arrays(tmap.to_arrays(), {"hash": "0" * 16})


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="shape"):
        tp.fit_transport(np.zeros((30, 3)), np.zeros((30, 2)))
    th = np.random.default_rng(0).normal(size=(25, 2))
    g = -th.copy()
    g[:10] = np.nan  # non-finite rows are dropped: 15 left
    with pytest.raises(ValueError, match="at least 20 finite draws"):
        tp.fit_transport(th, g)


@pytest.mark.slow
def test_sampling_in_z_gives_base_theta_with_the_targets_moments():
    """NUTS on the transported objective of a funnel (v ~ N(0, 1.5²), D = 4): the Trace's θ is base θ, and v and
    x e^{−v/2} (both exactly N(0, ·)) have the right moments, pooled over two keys."""
    d, vs = 4, 1.5

    def log_prob(th):
        return -0.5 * (th[0] / vs) ** 2 - 0.5 * jnp.sum(th[1:] ** 2) * jnp.exp(-th[0]) - 0.5 * (d - 1) * th[0]

    z = np.random.default_rng(0).normal(size=(300, d))
    th = np.c_[vs * z[:, :1], np.exp(vs * z[:, :1] / 2) * z[:, 1:]].astype(np.float32)
    g = np.asarray(jax.vmap(jax.grad(log_prob))(jnp.asarray(th)))
    tmap, dec = tp.fit_transport(th, g, seed=0)
    assert tmap is not None, dec.message
    obj = gn.Objective.from_log_prob(log_prob, d)
    tobj = tp.transported(obj, tmap)
    # a second map of the same dimension reuses the compiled programs
    tmap2, _ = tp.fit_transport(th[::-1].copy(), g[::-1].copy(), seed=3)
    assert tp.transported(obj, tmap2).compile_key == tobj.compile_key
    pooled = []
    for k in range(2):
        post = gn.sample(tobj, jnp.zeros((4, d)), jax.random.key(k), num_samples=500, num_warmup=200,
                         inverse_mass_matrix=np.ones(d, np.float32), progress=False)
        assert post.thetamap is tmap
        assert np.allclose(post.theta, np.asarray(tmap.to_theta(jnp.asarray(post.z))), atol=1e-5)
        pooled.append(np.asarray(post.theta).reshape(-1, d))
    th = np.concatenate(pooled)
    v, u = th[:, 0], th[:, 1:] * np.exp(-th[:, :1] / 2)
    assert abs(v.mean()) < 0.15 * vs and abs(v.std() / vs - 1) < 0.1
    assert np.all(np.abs(u.mean(0)) < 0.15) and np.all(np.abs(u.std(0) - 1) < 0.1)


def test_the_linear_and_the_full_fit_share_one_compiled_program():
    """The first fit of a dimension compiles the training once (the linear map is in closed form; where L-BFGS fits it,
    N ≤ D, it differs from the full fit in a traced flag, not in the program: the stage's first-run wall time was
    two compiles), and the held-out judgement once; a start whose loss is not finite falls back inside the
    program, to the linear map."""
    d = 5
    log_prob, exact = _hier_prior(d)
    th, g = _draws(log_prob, exact, d, 212, 3)  # a draw count no other test uses: fresh shapes
    import io
    import logging

    log = io.StringIO()
    handler = logging.StreamHandler(log)
    logging.getLogger("jax").addHandler(handler)
    try:
        with jax.log_compiles(True):
            tmap, dec = tp.fit_transport(th, g, seed=0)
    finally:
        logging.getLogger("jax").removeHandler(handler)
    compiled = [line.split(" with ")[0] for line in log.getvalue().splitlines() if line.startswith("Compiling ")]
    assert compiled.count("Compiling jit(_train)") == 1 and compiled.count("Compiling jit(_per_dim_fisher)") == 1
    # and no eager device arithmetic (each operation compiled a program of its own: the eager start check alone
    # was dozens); what remains is JAX's own array transfers
    assert not [c for c in compiled if c not in ("Compiling jit(_train)", "Compiling jit(_per_dim_fisher)",
                                                 "Compiling jit(stage)", "Compiling jit(convert_element_type)")]
    assert tmap is not None and dec.action == "transport kept"
    x = jnp.asarray(th[:50]) / 3
    gx = jnp.asarray(g[:50]) * 3
    zero = tp.TransportParams(jnp.zeros(d), jnp.zeros(d), jnp.zeros((d, d)), jnp.zeros((d, d)))
    bad = zero._replace(log_scale=jnp.full(d, jnp.nan))
    p, loss, _ = tp._train(bad, zero, x, gx, 1e-4, 1e-6, np.ones((x.shape[1],) * 2, x.dtype), max_iter=5)
    assert np.isfinite(float(loss)) and np.all(np.isfinite(np.asarray(p.log_scale)))


def test_the_maps_host_methods_compile_one_program_per_shape():
    """to_theta / to_z on the host are one compiled program per shape each (run eagerly, every operation of the map
    compiled a program of its own: ~100 on a first gn.sample through the stage)."""
    import io
    import logging

    d = 6
    log_prob, exact = _hier_prior(d)
    th, g = _draws(log_prob, exact, d, 300, 0)
    tmap, _ = tp.fit_transport(th, g, seed=1)  # (kept: test_recovers_a_known_noncentring)
    z = np.random.default_rng(0).normal(size=(37, d)).astype(np.float32)  # a shape no other test uses
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    logging.getLogger("jax").addHandler(handler)
    try:
        with jax.log_compiles(True):
            back = tmap.to_z(tmap.to_theta(z))
    finally:
        logging.getLogger("jax").removeHandler(handler)
    compiled = [line.split(" with ")[0] for line in log.getvalue().splitlines() if line.startswith("Compiling ")]
    assert sorted(set(compiled) - {"Compiling jit(stage)", "Compiling jit(convert_element_type)"}) == [
        "Compiling jit(_to_z_jit)", "Compiling jit(apply)"], compiled
    assert compiled.count("Compiling jit(apply)") == 1 and compiled.count("Compiling jit(_to_z_jit)") == 1
    np.testing.assert_allclose(np.asarray(back), z, atol=1e-4)


def test_log_scales_depend_on_the_scale_parents_alone_by_default():
    """With scale parents (v in a funnel) the full fit trains the log-scale weights on their columns only: D·P
    numbers instead of D(D−1)/2 (on the 100-d funnel the sampler's ~450 draws fitted ~5000 free ones, whose noise
    moved v's mean 0.1–0.2 sd and sent one key in three back to θ). Held-out, the lean map is near-exact as the full
    one; ``scale_from="all"`` restores every earlier coordinate."""
    d = 40

    def log_prob(th):  # Neal's funnel: v ~ N(0, 3²), x_i | v ~ N(0, e^v)
        v, x = th[0], th[1:]
        return -(v**2) / 18 - 0.5 * jnp.sum(x**2) * jnp.exp(-v) - 0.5 * (d - 1) * v

    fisher = {"parents": [], "all": []}
    for seed in range(3):
        z = np.random.default_rng(seed).normal(size=(400, d))
        th = np.concatenate([3 * z[:, :1], np.exp(1.5 * z[:, :1]) * z[:, 1:]], 1).astype(np.float32)
        g = np.asarray(jax.vmap(jax.grad(log_prob))(jnp.asarray(th)))
        for scale_from in fisher:
            tmap, dec = tp.fit_transport(th, g, seed=1, settings=tp.TransportSettings(scale_from=scale_from))
            assert dec.action == "transport kept" and dec.details["scale_parents"] == 1 and tmap.order[0] == 0
            off_parent = np.abs(np.tril(np.asarray(tmap.params.scale_w), -1)[:, 1:])
            assert (off_parent.max() == 0.0) == (scale_from == "parents")
            fisher[scale_from].append(dec.details["fisher_map"])
    assert max(fisher["parents"]) < 0.01  # near-exact, as the full map (the linear map's is in the hundreds)
    with pytest.raises(ValueError, match="scale_from"):
        tp.fit_transport(th, g, settings=tp.TransportSettings(scale_from="children"))


def test_training_returns_its_best_map_and_stops_once_exact():
    """Near an exact map the log Fisher divergence falls towards log 1e-12, where float32 line searches can throw
    the iterate far off (seen on the 10-d funnel: −14.3 after 100 iterations, +37.7 after 200, the map refused);
    the training returns the lowest loss it saw, and stops once the map is exact to float precision."""
    d = 10

    def log_prob(th):
        v, x = th[0], th[1:]
        return -(v**2) / 18 - 0.5 * jnp.sum(x**2) * jnp.exp(-v) - 0.5 * (d - 1) * v

    z = np.random.default_rng(0).normal(size=(400, d))
    th = np.concatenate([3 * z[:, :1], np.exp(1.5 * z[:, :1]) * z[:, 1:]], 1).astype(np.float32)
    g = np.asarray(jax.vmap(jax.grad(log_prob))(jnp.asarray(th)))
    tmap, dec = tp.fit_transport(th, g, seed=1, settings=tp.TransportSettings(max_iter=400))
    assert dec.action == "transport kept" and dec.details["fisher_map"] < 1e-6
    assert dec.details["iterations"][1] < 400  # stopped at EXACT_FISHER, not at the cap
    x, gx = jnp.asarray(th[:300] / 2), jnp.asarray(g[:300] * 2)
    zero = tp.TransportParams(jnp.zeros(d), jnp.zeros(d), jnp.zeros((d, d)), jnp.zeros((d, d)))
    ones = np.ones((d, d), np.float32)
    start = float(tp._loss(zero, x, gx, 1e-4, ones))
    p, loss, _ = tp._train(zero, zero, x, gx, jnp.float32(1e-4), jnp.float32(1e-6), ones, max_iter=50)
    assert float(loss) <= start and np.isclose(float(loss), float(tp._loss(p, x, gx, 1e-4, ones)), rtol=1e-4,
                                               atol=1e-4)


def _latent_series(d: int, phi: float = 0.9):
    """log σ ~ N(0, 1), h = σ·L z: a stationary AR(1) series whose innovation scale is σ — the centred stochastic
    volatility's shape. Its non-centring scales the children's mutual shifts with σ."""
    chol = np.zeros((d - 1, d - 1))
    for t in range(d - 1):
        for k in range(t + 1):
            chol[t, k] = phi ** (t - k) * (1 / np.sqrt(1 - phi**2) if k == 0 else 1.0)
    prec = jnp.asarray(np.linalg.inv(chol @ chol.T))

    def log_prob(th):
        ls, h = th[0], th[1:]
        return -0.5 * ls**2 - 0.5 * h @ prec @ h * jnp.exp(-2 * ls) - (d - 1) * ls

    return log_prob, chol


def test_the_gated_shift_follows_a_latent_series_whose_scale_is_a_parent():
    """The shift's gate (default) scales the children's mutual shifts with their row's scale: on a latent series
    whose innovation scale is a parameter, the held-out Fisher divergence is over 10× lower than with unscaled
    shift weights (measured 0.19–0.20 against 2.4–2.5), on two sets of exact draws."""
    d = 21
    log_prob, chol = _latent_series(d)
    for seed in range(2):
        z = np.random.default_rng(seed).normal(size=(500, d))
        th = np.concatenate([z[:, :1], np.exp(z[:, :1]) * (z[:, 1:] @ chol.T)], 1).astype(np.float32)
        g = np.asarray(jax.vmap(jax.grad(log_prob))(jnp.asarray(th)))
        fisher = {}
        for gate in (False, True):
            tmap, dec = tp.fit_transport(th, g, seed=1, settings=tp.TransportSettings(shift_gate=gate))
            assert dec.action == "transport kept" and dec.details["scale_parents"] == 1
            fisher[gate] = dec.details["fisher_map"]
            assert np.all(np.isposinf(tmap.params.shift_gate)) != gate  # no gate: +inf (γ = 1)
        assert fisher[True] < 0.25 * fisher[False], fisher


def test_a_gate_changes_nothing_where_the_log_scale_is_constant_and_old_maps_load():
    """With the log-scale weights at zero (a linear map) the gated shift is the affine one for any gate; a map's
    arrays written before the gate existed load with their hash and map z as before."""
    d = 6
    rng = np.random.default_rng(0)
    a, c = rng.normal(size=d), 0.3 * rng.normal(size=d)
    aw = np.tril(rng.normal(size=(d, d)), -1)
    p = tp.TransportParams(*(jnp.asarray(v, jnp.float32) for v in (a, c, aw, np.zeros((d, d)))))
    u = jnp.asarray(rng.normal(size=(50, d)), jnp.float32)
    plain = jax.vmap(lambda v: tp.forward(p, v)[0])(u)
    gated = jax.vmap(lambda v: tp.forward(p._replace(shift_gate=jnp.asarray(rng.normal(size=d), jnp.float32)),
                                          v)[0])(u)
    assert np.allclose(np.asarray(plain), np.asarray(gated), atol=1e-5)
    log_prob, exact = _hier_prior(d)
    th, g = _draws(log_prob, exact, d, 300, 0)
    tmap, _ = tp.fit_transport(th, g, seed=1, settings=tp.TransportSettings(shift_gate=False))
    old = {k: v for k, v in tmap.to_arrays().items() if k != "shift_gate"}  # as written before Dec 2026
    back = tp.TransportMap.from_arrays(old, tmap.describe())
    z = np.random.default_rng(1).normal(size=(20, d)).astype(np.float32)
    assert back.hash == tmap.hash and np.array_equal(np.asarray(back.to_theta(z)), np.asarray(tmap.to_theta(z)))


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("bounded", [False, True])
def test_the_inverses_implicit_gradient_is_the_scans(gated, bounded):
    """The inverse's gradient (a back-substitution at the solution, not reverse-mode through the D-step scan) equals
    reverse-mode through the scan, in float64, for every argument — shift, log-scale, both weights, the gate, the
    draws and the caps — with or without a gate and caps."""
    from gnomon.sampler import transport_core as core

    rng = np.random.default_rng(7)
    n, d = 40, 9
    low = np.tri(d, d, -1)
    with jax.enable_x64(True):
        p = core.TransportParams(
            jnp.asarray(rng.normal(size=d) * 0.3), jnp.asarray(rng.normal(size=d) * 0.3),
            jnp.asarray(rng.normal(size=(d, d)) * 0.3 * low), jnp.asarray(rng.normal(size=(d, d)) * 0.1 * low),
            jnp.asarray(rng.normal(size=d)) if gated else None)
        x = jnp.asarray(rng.normal(size=(n, d)))
        bounds = core.Bounds(jnp.full(d, -0.3), jnp.full(d, 0.4)) if bounded else None
        cot = jnp.asarray(rng.normal(size=(n, d)))
        args = (0, 1, 2) if bounded else (0, 1)
        implicit = jax.grad(lambda *a: jnp.sum(core.inverse(*a) * cot), argnums=args)(p, x, bounds)
        through = jax.grad(lambda *a: jnp.sum(core._forward_solve(*a) * cot), argnums=args)(p, x, bounds)
        assert np.allclose(np.asarray(core.inverse(p, x, bounds)), np.asarray(core._forward_solve(p, x, bounds)))
        for a, b in zip(jax.tree.leaves(implicit), jax.tree.leaves(through), strict=True):
            assert np.allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-9 * float(np.max(np.abs(b)))), (a, b)
        if bounded:  # the caps bind somewhere: their gradient is not trivially zero
            assert float(np.max(np.abs(np.asarray(implicit[2].hi)))) > 0


def test_the_linear_map_is_the_fisher_optimum_in_closed_form():
    """``linear_map`` recovers a correlated Gaussian's mean and covariance from its draws and exact gradients
    (Σ C_g Σ = C_x: exact for any N > D when the gradients are exact), no L-BFGS iteration lowers its Fisher
    divergence, and it declines (None) where the draws do not determine it (N ≤ D)."""
    from gnomon.sampler import transport_core as core

    rng = np.random.default_rng(3)
    d, n = 6, 400
    a = rng.normal(size=(d, d))
    cov = a @ a.T / d + 0.2 * np.eye(d)
    mean = rng.normal(size=d)
    x = rng.multivariate_normal(mean, cov, size=n)
    gx = -(x - mean) @ np.linalg.inv(cov)
    p = tp.linear_map(x, gx, np.float64)
    chol = np.diag(np.exp(p.log_scale)) + np.tril(p.shift_w, -1)
    assert np.allclose(chol @ chol.T, cov, rtol=1e-8, atol=1e-8) and np.allclose(p.shift, mean, atol=1e-8)
    # on draws that are not Gaussian the closed form is still the optimum among linear maps: L-BFGS from it
    # does not go lower (float32, as the stage trains)
    xs = np.c_[x[:, :1], x[:, 1:] * np.exp(0.4 * x[:, :1])].astype(np.float32)
    gs = (-(xs - xs.mean(0)) / xs.var(0)).astype(np.float32) + 0.1 * np.sin(xs).astype(np.float32)
    p_cf = tp.linear_map(xs, gs, np.float32)
    zeros = np.zeros((d, d), np.float32)
    loss = lambda q: float(core._loss(q, jnp.asarray(xs), jnp.asarray(gs), 0.0, zeros))  # noqa: E731
    p_bfgs, _, _ = tp._train(p_cf, p_cf, jnp.asarray(xs), jnp.asarray(gs), np.float32(0.0), np.float32(1e-9),
                             zeros, np.False_, max_iter=100)
    assert loss(p_cf) <= loss(p_bfgs) + 1e-4
    assert tp.linear_map(x[:d], gx[:d], np.float64) is None


def test_too_few_draws_for_the_closed_form_train_the_linear_map():
    """With fewer training draws than dimensions the closed-form linear map is undetermined: the linear map is trained
    by L-BFGS instead (its iterations recorded), and the decision is made as usual."""
    d = 30
    log_prob, exact = _hier_prior(d)
    th, g = _draws(log_prob, exact, d, 36, 5)  # 27 training draws < 30 dimensions
    _, dec = tp.fit_transport(th, g, seed=0)
    assert dec.details["iterations"][0] > 0 and dec.details["draws"] == 36
    assert np.isfinite(dec.details["fisher_linear"]) and dec.action in ("transport kept", "transport refused")


def test_a_map_without_a_gate_builds_its_objective():
    """A map without a gate (no scale parents, or saved before the gate: +inf logits) builds its objective over z —
    an objective's data must be finite, and +inf made the run in z fail — and its density is the ungated map's."""
    d = 3
    rng = np.random.default_rng(4)
    low = np.tri(d, d, -1)
    params = tp.TransportParams(*(np.asarray(v, np.float32) for v in (
        rng.normal(size=d), 0.2 * rng.normal(size=d), 0.5 * rng.normal(size=(d, d)) * low,
        0.3 * rng.normal(size=(d, d)) * low)))
    tmap = tp.TransportMap(np.zeros(d, np.float32), np.ones(d, np.float32), np.arange(d), params)
    obj = gn.Objective.from_log_prob(lambda th: -0.5 * jnp.sum(th**2), d)
    tobj = tp.transported(obj, tmap)
    z = jnp.asarray(rng.normal(size=(4, d)), jnp.float32)
    got = np.asarray(jax.vmap(tobj.log_prob)(z))
    u = np.asarray(z, np.float64)
    h = params.log_scale + u @ (params.scale_w * low).T
    x = params.shift + u @ (params.shift_w * low).T + np.exp(h) * u
    want = -0.5 * np.sum(x**2, axis=1) + np.sum(h, axis=1)
    assert np.allclose(got, want, rtol=1e-4, atol=1e-4)
