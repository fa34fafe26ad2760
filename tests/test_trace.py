"""Trace: pytree semantics (one compilation for same-shaped traces with one host record; status and info
through jit / vmap / tree_map / device_get) and θ vs z (every θ-returning view is base θ; a θ-map's rows are
z, refused by a layout)."""

from __future__ import annotations

import copy
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gnomon as gn
from gnomon.trace.zarray import ZArray

# ---------------------------------------------------------------------------------------------- pytree


def _opt_trace(i: int, layout=None, **kw) -> gn.Trace:
    r = np.random.default_rng(i)
    return gn.Trace(
        kind="optimization", theta=r.normal(size=(6, 3)).astype(np.float32), loss=np.arange(6.0, dtype=np.float32),
        stats={"grad_norm": np.ones(6, np.float32)}, step=np.arange(6, dtype=np.int32),
        status=("converged", "max_steps", "diverged at step 4: loss is nan")[i % 3], num_grad_evals=10 * i,
        runtime_s=0.1 * i, info={"engine": "gd", "compile_s": 0.01 * i, "run_s": i}, layout=layout,
        extras={"note": np.full(2, i)}, **kw,
    )


def test_same_shaped_traces_with_one_record_compile_once():
    calls = {"n": 0}

    @jax.jit
    def total(tr):
        calls["n"] += 1
        assert tr.status == "converged" and tr.info["engine"] == "gd" and tr.num_grad_evals == 0  # record inside
        return jnp.sum(tr.theta) + jnp.sum(tr.loss) + jnp.sum(tr.stats["grad_norm"])

    # equal layouts and equal records built separately: static parts compare by value, not identity
    traces = [_opt_trace(i, layout=gn.Layout({"a": (), "b": (2,)})) for i in range(3)]
    traces = [_same_record(tr) for tr in traces]
    for tr in traces:
        want = float(np.sum(tr.theta) + np.sum(tr.loss) + 6)
        assert float(total(tr)) == pytest.approx(want, rel=1e-6)
    assert calls["n"] == 1
    # a structural difference does recompile: another layout, another shape, another record
    total(_same_record(_opt_trace(0, layout=gn.Layout({"a": (3,)}))))
    assert calls["n"] == 2
    total(_same_record(replace_theta(traces[0], np.zeros((7, 3), np.float32))))
    assert calls["n"] == 3
    total(dataclasses.replace(traces[0], info={"engine": "gd", "compile_s": 1.0}))
    assert calls["n"] == 4


def _same_record(tr):
    """``tr`` with one fixed host record (new objects each call: equal by value only)."""
    return dataclasses.replace(tr, status="converged", num_grad_evals=0, runtime_s=float("nan"),
                               info={"engine": "gd", "nan": float("nan"), "rates": [0.1, 0.2]},
                               extras={"note": np.arange(2)})


def replace_theta(tr, theta):
    n = theta.shape[0]
    return gn.Trace(kind="optimization", theta=theta, loss=np.zeros(n, np.float32),
                    stats={"grad_norm": np.ones(n, np.float32)}, step=np.arange(n, dtype=np.int32), layout=tr.layout)


def test_engine_traces_keep_their_own_records_and_reloaded_maps_compile_once(tmp_path):
    obj = gn.Objective.from_loss(lambda t: jnp.sum((t - 1.0) ** 2), 3)
    a = gn.optimize(obj, jnp.zeros(3), "gd", learning_rate=0.1, num_steps=20)
    b = gn.optimize(obj, jnp.ones(3) * 3.0, "gd", learning_rate=0.1, num_steps=200, tol=1e-3)
    assert a.status != b.status and a.info != b.info
    calls = {"n": 0}

    @jax.jit
    def same(tr):
        calls["n"] += 1
        return tr

    out_a, out_b, again = same(a), same(b), same(a)
    assert calls["n"] == 2  # two records, two compilations (a compiled function hands back its own record)
    for out, tr in ((out_a, a), (out_b, b), (again, a)):
        assert out.status == tr.status and out.info == tr.info and out.num_grad_evals == tr.num_grad_evals
        assert out.runtime_s == tr.runtime_s and out.extras.keys() == tr.extras.keys()
        np.testing.assert_array_equal(np.asarray(out.theta), np.asarray(tr.theta))
    emap = gn.EigenMap.from_matrix(np.diag([1.0, 4.0, 9.0]), np.zeros(3))
    zt = gn.Trace(kind="optimization", z=np.ones((21, 3), np.float32), loss=np.zeros(21, np.float32),
                  stats=dict(a.stats), step=np.asarray(a.step), thetamap=emap)
    gn.save_run(tmp_path / "z", zt)
    zt2 = gn.load_run(tmp_path / "z").trace
    assert zt2.thetamap is not emap and zt2.thetamap.hash == emap.hash
    calls["n"] = 0

    @jax.jit
    def f(tr):
        calls["n"] += 1
        return jnp.sum(tr.theta)

    f(zt), f(dataclasses.replace(zt, thetamap=zt2.thetamap))  # the same EigenMap content, two objects: one compilation
    assert calls["n"] == 1


def test_round_trips_keep_arrays_and_the_host_record():
    tr = _opt_trace(1)
    # device_get / tree_map over concrete arrays: arrays and host record intact
    back = jax.device_get(jax.device_put(tr))
    np.testing.assert_array_equal(np.asarray(back.theta), tr.theta)
    np.testing.assert_array_equal(np.asarray(back.step), tr.step)
    assert back.status == tr.status and back.num_grad_evals == 10 and back.info == tr.info
    host = tr.to_numpy()
    assert isinstance(host.theta, np.ndarray) and host.runtime_s == tr.runtime_s
    doubled = jax.tree_util.tree_map(lambda x: 2 * x, tr)
    np.testing.assert_array_equal(doubled.loss, 2 * tr.loss)
    assert doubled.status == tr.status and doubled.info == tr.info and doubled.num_grad_evals == 10
    # jit: the arrays and the host record come back
    out = jax.jit(lambda t: t)(tr)
    np.testing.assert_array_equal(np.asarray(out.theta), tr.theta)
    np.testing.assert_array_equal(np.asarray(out.stats["grad_norm"]), tr.stats["grad_norm"])
    assert out.status == tr.status and out.runtime_s == tr.runtime_s and out.info == tr.info
    np.testing.assert_array_equal(out.extras["note"], tr.extras["note"])
    # vmap over a batch of fits: members are (T, D) traces inside, each seeing the batch's record
    batch = gn.Trace(kind="optimization", theta=np.arange(24.0).reshape(2, 4, 3), loss=np.ones((2, 4)),
                     step=np.tile(np.arange(4), (2, 1)), status=("converged", "max_steps"),
                     num_grad_evals=np.array([4, 7]), info={"method": "gd"})

    def member(t):
        assert t.status == ("converged", "max_steps") and t.info == {"method": "gd"}
        return t.theta.shape, jnp.sum(t.theta[-1])

    per_member = jax.vmap(member)(batch)
    np.testing.assert_allclose(per_member[1], batch.theta[:, -1].sum(-1))
    twice = jax.vmap(lambda t: t)(batch)
    np.testing.assert_array_equal(np.asarray(twice.theta), batch.theta)
    np.testing.assert_array_equal(np.asarray(twice.step), batch.step)
    assert twice.status == batch.status and twice.info == batch.info
    np.testing.assert_array_equal(twice.num_grad_evals, [4, 7])
    # the same for sampler chains: the record (adapted metric in extras, decisions in info) goes through jit
    draws = gn.Trace(kind="sampling", theta=np.ones((2, 5, 3)), log_prob=np.zeros((2, 5)),
                     stats={"diverging": np.zeros((2, 5), bool)}, status="sampled", num_grad_evals=70,
                     info={"decisions": [{"action": "seed kept"}]}, extras={"inverse_mass_matrix": np.eye(3)})
    chains = jax.jit(lambda t: t)(draws)
    assert chains.status == "sampled" and chains.info == draws.info and chains.num_grad_evals == 70
    np.testing.assert_array_equal(chains.extras["inverse_mass_matrix"], np.eye(3))


def test_traces_that_differ_only_in_their_record_never_share_a_compiled_function():
    calls = {"n": 0}

    @jax.jit
    def same(t):
        calls["n"] += 1
        return t

    base = _opt_trace(1)  # info {"engine": "gd", "compile_s": 0.01, "run_s": 1}, extras {"note": [1, 1]}
    variants = [
        dataclasses.replace(base, info={"engine": "gd", "compile_s": 0.01, "run_s": 1.0}),  # 1.0 == 1, a float
        dataclasses.replace(base, info={"engine": "gd", "compile_s": 0.0, "run_s": 1}),
        dataclasses.replace(base, info={"engine": "gd", "compile_s": -0.0, "run_s": 1}),
        dataclasses.replace(base, extras={"note": np.full(2, 2)}),  # another array content
        dataclasses.replace(base, extras={"note": np.full(2, 1, np.int32)}),  # another dtype
        dataclasses.replace(base, status="converged"),
        dataclasses.replace(base, num_grad_evals=11),
    ]
    records = [base, *variants]
    outs = [same(t) for t in records]
    assert calls["n"] == len(records)
    for out, t in zip(outs, records, strict=True):
        assert out.status == t.status and out.num_grad_evals == t.num_grad_evals
        assert out.info == t.info and [type(v) for v in out.info.values()] == [type(v) for v in t.info.values()]
        assert np.asarray(out.extras["note"]).dtype == np.asarray(t.extras["note"]).dtype
        np.testing.assert_array_equal(out.extras["note"], t.extras["note"])
    assert str(outs[3].info["compile_s"]) == "-0.0"
    # the same records again, as new objects: every one is a cache hit
    again = [same(dataclasses.replace(t, info=dict(t.info), extras={k: np.copy(v) for k, v in t.extras.items()}))
             for t in records]
    assert calls["n"] == len(records) and [o.info for o in again] == [t.info for t in records]


def test_eigen_trace_through_jit_keeps_z_and_its_map():
    emap = gn.EigenMap.from_matrix(np.diag([4.0, 1.0]), np.array([1.0, -1.0]))
    z = np.random.default_rng(0).normal(size=(5, 2))
    tr = gn.Trace(kind="optimization", z=z, loss=np.zeros(5), thetamap=emap)
    out = jax.jit(lambda t: t)(tr)
    np.testing.assert_allclose(np.asarray(out.z), z, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(out.theta), np.asarray(emap.to_theta(z)), rtol=1e-6)
    assert out.thetamap is emap
    host = jax.device_get(out)
    assert isinstance(host.z, ZArray) and host.z.z_of is emap  # tagged again on the host


# ---------------------------------------------------------------------------------------------- θ vs z

GRID, PIX, PSF = 16, 0.5, 0.7  # pixels, arcsec per pixel, Gaussian PSF sigma (arcsec)
LAYOUT = gn.Layout({"sep": (), "pa": (), "center": (2,), "log_flux": ()})
TRUTH = {"sep": 5.0, "pa": 30.0, "center": np.array([0.3, -0.2]), "log_flux": 8.0}


def _image(p):
    x = (jnp.arange(GRID) - GRID / 2 + 0.5) * PIX
    X, Y = jnp.meshgrid(x, x)
    pa = jnp.deg2rad(p["pa"])
    off = 0.5 * p["sep"] * jnp.stack([jnp.cos(pa), jnp.sin(pa)])

    def blob(c):
        return jnp.exp(-((X - c[0]) ** 2 + (Y - c[1]) ** 2) / (2 * PSF**2)) / (2 * jnp.pi * PSF**2)

    return jnp.exp(p["log_flux"]) * (blob(p["center"] + off) + 0.5 * blob(p["center"] - off))


@pytest.fixture(scope="module")
def separation():
    """A binary's separation fitted in the whitened eigen map of the exact Hessian at a start off the truth."""
    with jax.enable_x64(True):
        truth = LAYOUT.pack(TRUTH)
        data = _image(TRUTH) + np.random.default_rng(1).normal(0.0, 20.0, (GRID, GRID))
        obj = gn.Objective.from_loss(lambda t: 0.5 * jnp.sum(((_image(LAYOUT.unpack(t)) - data) / 20.0) ** 2),
                                     LAYOUT)
        ref = LAYOUT.pack({"sep": 4.6, "pa": 33.0, "center": np.array([0.1, 0.0]), "log_flux": 7.9})
        hess = gn.estimate_curvature(obj, ref, "exact", dense=True).matrix
        emap = gn.EigenMap.from_matrix(hess, ref, layout=LAYOUT)
        zobj = obj.reparameterize(emap)
        tr = gn.optimize(zobj, jnp.zeros(LAYOUT.size), "gd", learning_rate=0.5, num_steps=40)  # whitened: ~Newton
        cont = gn.optimize(zobj, tr, "gd", learning_rate=0.5, num_steps=3)
        batch = gn.optimize_batch(zobj, jnp.stack([jnp.zeros(5), 0.5 * jnp.ones(5)]), method="gd",
                                  learning_rate=0.5, num_steps=40)
        yield dict(obj=obj, zobj=zobj, emap=emap, tr=tr, cont=cont, batch=batch, truth=np.asarray(truth))


def test_eigen_fit_returns_base_theta_and_refuses_z(separation):
    tr, emap = separation["tr"], separation["emap"]
    assert tr.theta_space == "eigen" and tr.thetamap is emap
    sep = float(LAYOUT.unpack(tr.best_theta)["sep"])
    assert sep == pytest.approx(TRUTH["sep"], abs=0.05)  # in the truth region (noise σ ≈ 0.01″ here)
    assert float(LAYOUT.unpack(tr.final_theta)["pa"]) == pytest.approx(TRUTH["pa"], abs=1.0)
    # θ rows are the map applied to the engine's z rows, row by row
    np.testing.assert_allclose(tr.theta, np.asarray(emap.to_theta(np.asarray(tr.z))), rtol=1e-12)
    np.testing.assert_allclose(tr.best_theta, np.asarray(emap.to_theta(np.asarray(tr.best_z))), rtol=1e-12)
    np.testing.assert_allclose(tr.final_theta, tr.theta[-1])
    np.testing.assert_allclose(tr.decoded_theta(), tr.theta)
    again = gn.Trace(kind="optimization", z=tr.z, loss=tr.loss, thetamap=emap, layout=LAYOUT)  # z given as a ZArray
    assert type(again.theta) is np.ndarray
    np.testing.assert_array_equal(again.best_theta, tr.best_theta)
    # z is tagged: a layout refuses it and says what to call instead
    for z in (tr.best_z, tr.final_z, tr.z, tr.z[3], tr.z[:, :], copy.deepcopy(tr).z, copy.copy(tr.best_z)):
        assert isinstance(z, ZArray) and z.z_of.hash == emap.hash
        with pytest.raises(ValueError, match=r"eigen coordinates z of an EigenMap.*use trace\.theta"):
            LAYOUT.unpack(z)
    # what the tag protects against: the same numbers read as θ are nonsense (the issue's −93″)
    assert abs(float(LAYOUT.unpack(np.asarray(tr.best_z))["sep"]) - TRUTH["sep"]) > 1.0


def test_plain_trace_has_no_z():
    obj = gn.Objective.from_loss(lambda t: jnp.sum(t**2), LAYOUT)
    tr = gn.optimize(obj, jnp.ones(5), "gd", learning_rate=0.1, num_steps=3)
    assert tr.z is None and tr.thetamap is None and tr.z_dim == tr.dim == 5
    with pytest.raises(ValueError, match="ran in base θ.*use best_theta"):
        _ = tr.best_z
    np.testing.assert_array_equal(tr.coords_in(None, "best"), tr.best_theta)
    LAYOUT.unpack(tr.best_theta)  # plain θ unpacks


def test_construction_says_which_rows_it_needs():
    emap = gn.EigenMap.from_matrix(np.eye(2), np.zeros(2))
    with pytest.raises(ValueError, match="needs z="):
        gn.Trace(kind="optimization", theta=np.zeros((3, 2)), loss=np.zeros(3), thetamap=emap)
    with pytest.raises(ValueError, match="without thetamap"):
        gn.Trace(kind="optimization", theta=np.zeros((3, 2)), z=np.zeros((3, 2)), loss=np.zeros(3))
    with pytest.raises(ValueError, match="needs theta"):
        gn.Trace(kind="optimization", loss=np.zeros(3))
    plain = gn.Trace(kind="optimization", z=np.ones((3, 2)), loss=np.zeros(3))  # an engine in θ: rows are θ
    assert plain.z is None and plain.theta.shape == (3, 2)
    trunc = gn.EigenMap.from_matrix(np.diag([9.0, 4.0, 1.0]), np.zeros(3), truncate=2)
    with pytest.raises(ValueError, match="z has dimension 3 but the θ-map's z_dim is 2"):
        gn.Trace(kind="optimization", z=np.zeros((3, 3)), theta=np.zeros((3, 3)), loss=np.zeros(3),
                 thetamap=trunc).validate()
    t = gn.Trace(kind="optimization", z=np.zeros((0, 2)), loss=np.zeros(0), thetamap=trunc)
    assert t.theta.shape == (0, 3)


class _Shift:
    """A non-linear θ-map that only takes one row at a time (no hash: compared by identity)."""

    z_dim = 2

    def to_theta(self, z):
        assert z.ndim == 1
        return jnp.stack([z[0], jnp.exp(z[1]), z[0] + z[1]])

    def to_z(self, theta):
        theta = jnp.asarray(theta)
        return jnp.stack([theta[..., 0], jnp.log(theta[..., 1])], -1)


def test_generic_thetamap_rows_and_coords_in():
    m = _Shift()
    z = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, -1.0]])
    tr = gn.Trace(kind="optimization", z=z, loss=np.array([3.0, 1.0, 2.0]), thetamap=m)
    np.testing.assert_allclose(tr.theta, [[0, 1, 0], [1, np.e, 2], [2, np.exp(-1), 1]], rtol=1e-6)
    np.testing.assert_allclose(tr.best_theta, [1, np.e, 2], rtol=1e-6)
    # coords_in: own map -> stored z; base -> θ; another map -> that map's to_z of θ
    np.testing.assert_array_equal(tr.coords_in(m, "best"), z[1])
    np.testing.assert_allclose(tr.coords_in(None, "final"), tr.theta[-1])
    emap = gn.EigenMap.from_matrix(np.diag([1.0, 4.0, 9.0]), np.ones(3))
    other = tr.coords_in(emap, "theta")
    assert isinstance(other, ZArray) and other.z_of is emap
    np.testing.assert_allclose(np.asarray(emap.to_theta(np.asarray(other))), tr.theta, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="which must be one of"):
        tr.coords_in(None, "last")


def test_continuation_batch_and_concatenate_stay_in_their_space(separation):
    tr, cont, batch, emap = separation["tr"], separation["cont"], separation["batch"], separation["emap"]
    # continuing gn.optimize(zobj, trace) starts from the final z, not from base θ read as z
    assert len(cont) == len(tr) + 3 and cont.thetamap is emap
    np.testing.assert_allclose(cont.z[: len(tr)], tr.z)
    np.testing.assert_allclose(cont.theta[: len(tr)], tr.theta)
    assert float(cont.loss[len(tr)]) <= float(tr.final_loss) * (1 + 1e-6) + 1e-9
    np.testing.assert_allclose(cont.theta, np.asarray(emap.to_theta(np.asarray(cont.z))), rtol=1e-12)
    with pytest.raises(ValueError, match="different spaces"):
        tr.concatenate(gn.Trace(kind="optimization", theta=tr.theta[-2:], loss=tr.loss[-2:], step=np.arange(2)))
    # a batch: per-member best rows in θ and in z, members trimmed with both
    assert batch.best_theta.shape == (2, 5) and batch.best_z.shape == (2, 5)
    for i in range(2):
        m = batch[i]
        np.testing.assert_allclose(batch.best_theta[i], m.best_theta)
        np.testing.assert_allclose(batch.best_z[i], m.best_z)
        np.testing.assert_allclose(batch.final_theta[i], m.final_theta)
        np.testing.assert_allclose(m.theta, np.asarray(emap.to_theta(np.asarray(m.z))), rtol=1e-12)
        assert float(LAYOUT.unpack(m.best_theta)["sep"]) == pytest.approx(TRUTH["sep"], abs=0.05)
    assert isinstance(batch.best_z, ZArray)


def test_exports_read_base_theta(separation, tmp_path):
    tr = separation["tr"]
    want = LAYOUT.unpack(tr.best_theta)
    dt = tr.to_arviz()
    assert float(dt.posterior["sep"].values.reshape(-1)[0]) == pytest.approx(float(want["sep"]), rel=1e-12)
    np.testing.assert_allclose(dt.optimization_path["pa"].values[0], np.asarray(LAYOUT.unpack(tr.theta)["pa"]))
    assert json.loads(dt.attrs["gnomon_meta"])["theta_space"] == "eigen"
    sig = gn.Signals.from_trace(tr)
    np.testing.assert_allclose(sig.values("sep"), np.asarray(LAYOUT.unpack(tr.theta)["sep"]), rtol=1e-12)
    # save / load restores both, and the θ-map
    gn.save_run(tmp_path / "r", tr)
    run = gn.load_run(tmp_path / "r")
    np.testing.assert_array_equal(run.trace.theta, tr.theta)
    np.testing.assert_array_equal(np.asarray(run.trace.z), np.asarray(tr.z))
    assert run.meta["theta"]["dim"] == 5 and run.meta["theta"]["z_dim"] == 5 and run.meta["schema_version"] == 2
    with pytest.raises(ValueError, match="eigen coordinates z"):
        LAYOUT.unpack(run.trace.best_z)


def test_schema_1_eigen_runs_still_load(separation, tmp_path):
    """Schema 1 wrote the z rows as ``theta``; load_run decodes them."""
    tr = separation["tr"]
    gn.save_run(tmp_path / "old", tr)
    path = tmp_path / "old"
    arrays = dict(np.load(path / "trace.npz"))
    arrays["theta"] = arrays.pop("z")
    np.savez(path / "trace.npz", **arrays)
    for name in ("meta.json", "summary.json"):
        doc = json.loads((path / name).read_text())
        doc["schema_version"] = 1
        doc.pop("files", None)  # schema 1 recorded no file sizes
        (path / name).write_text(json.dumps(doc))
    old = gn.load_run(path).trace
    np.testing.assert_allclose(old.theta, tr.theta, rtol=1e-12)
    np.testing.assert_array_equal(np.asarray(old.z), np.asarray(tr.z))
    # a schema-2 run with a θ-map but no z is refused, naming the file
    gn.save_run(tmp_path / "bad", tr)
    arrays = dict(np.load(tmp_path / "bad" / "trace.npz"))
    del arrays["z"]
    np.savez(tmp_path / "bad" / "trace.npz", **arrays)
    summary = json.loads((tmp_path / "bad" / "summary.json").read_text())
    summary.pop("files")  # the size record would flag the rewritten file before its content is read
    (tmp_path / "bad" / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(gn.ArtifactError, match=r"trace\.npz.*no 'z' array"):
        gn.load_run(tmp_path / "bad")


def test_sampling_from_an_eigen_trace_starts_at_its_mode():
    """gn.sample(init=eigen_trace) starts at the trace's best point in the sampler's own coordinates: the stored
    z for the same map, base θ for the base objective (never z read as θ)."""
    prec = np.array([[4.0, 1.0, 0.0], [1.0, 2.0, 0.3], [0.0, 0.3, 0.5]])
    mode = np.array([10.0, -3.0, 0.5])
    with jax.enable_x64(True):
        obj = gn.Objective.from_log_prob(lambda t: -0.5 * (t - mode) @ jnp.asarray(prec) @ (t - mode), 3)
        emap = gn.EigenMap.from_matrix(prec, np.zeros(3))
        zobj = obj.reparameterize(emap)
        tr = gn.optimize(zobj, jnp.zeros(3), "gd", learning_rate=1.0, num_steps=2)
        assert np.abs(tr.best_theta - mode).max() < 1e-8 and np.abs(np.asarray(tr.best_z) - mode).max() > 1.0
        kw = dict(num_chains=2, num_samples=5, progress=False, inverse_mass_matrix=None,
                  kernel=gn.nuts(step_size=0.5))
        in_z = gn.sample(zobj, tr, jax.random.key(0), num_warmup=5, keep_warmup=True, **kw)
        in_theta = gn.sample(obj, tr, jax.random.key(0), num_warmup=0, **kw)
        # decoded under x64 like the trace (outside it jax would round the reference to float32)
        ref = np.asarray(emap.to_theta(np.asarray(in_z.z)))
        ref_warm = np.asarray(emap.to_theta(np.asarray(in_z.warmup["z"])))
    np.testing.assert_allclose(in_z.extras["theta_star"], np.asarray(tr.best_z), rtol=1e-12)
    np.testing.assert_allclose(in_theta.extras["theta_star"], tr.best_theta, rtol=1e-12)
    assert in_z.thetamap is emap and isinstance(in_z.warmup["z"], ZArray)
    np.testing.assert_allclose(in_z.theta, ref, rtol=1e-12)
    np.testing.assert_allclose(in_z.warmup["theta"], ref_warm, rtol=1e-12)
    np.testing.assert_array_equal(in_z.coords_in(None, "warmup"), in_z.warmup["theta"])
    assert in_theta.z is None and in_theta.theta.shape == (2, 5, 3)
