"""ArviZ on a run's posterior.nc: labelled vector blocks summarise (labels as the dim's coordinate values, no
extra ``<dim>_label`` coordinate), ``post.to_arviz()`` carries the same units, dims and coordinates as the
file, files written before the change still summarise through ``read_netcdf``, and the reading command of
docs/getting-started.md §6 runs."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

import gnomon as gn
from gnomon.io.netcdf import read_netcdf, write_datatree

arviz_stats = pytest.importorskip("arviz_stats")

ROOT = Path(__file__).resolve().parent.parent
LAYOUT_ARGS = dict(labels={"position": ["x", "y"]}, units={"position": "arcsec", "flux": "cts", "zern": "nm"})
ROWS = ["position[x]", "position[y]", "zern[0]", "zern[1]", "flux"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A short NUTS run on a labelled layout (a standard normal), saved with ``arviz=True``."""
    layout = gn.Layout({"position": (2,), "zern": (2,), "flux": ()}, **LAYOUT_ARGS)
    obj = gn.Objective.from_log_prob(lambda th: -0.5 * jnp.sum(th**2), layout)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 60 draws: the health check may call them too few
        post = gn.sample(obj, init=jnp.zeros(5), key=jax.random.key(0), num_chains=2, num_warmup=60,
                         num_samples=60, progress=False)
    run_dir = gn.save_run(tmp_path_factory.mktemp("runs") / "nuts", post, arviz=True)
    return post, run_dir / "posterior.nc"


def test_summary_of_the_reloaded_file_has_a_row_per_labelled_component(run):
    post, path = run
    with xr.open_datatree(path) as dt:
        assert not [c for c in dt["posterior"].coords if str(c).endswith("_label")]
        assert list(dt["posterior"]["position"].coords["position_dim_0"].values) == ["x", "y"]
        table = arviz_stats.summary(dt)
        assert list(table.index) == ROWS
        draws = np.asarray(dt["posterior"]["position"].values)
        assert float(table.loc["position[y]", "mean"]) == pytest.approx(draws[..., 1].mean(), abs=0.051)
        ess = arviz_stats.ess(dt)  # the posterior group
        rhat = arviz_stats.rhat(dt)
        assert ess["position"].dims == ("position_dim_0",) and bool(np.all(ess["position"].values > 0))
        assert list(rhat["position"].coords["position_dim_0"].values) == ["x", "y"]


def test_in_memory_export_matches_the_file(run):
    """Units, long names, dims and coordinates of every variable of every group: the file is to_arviz()."""
    post, path = run
    mem = post.to_arviz()
    assert mem["posterior"]["position"].attrs == {"long_name": "position", "units": "arcsec"}
    assert mem["posterior"]["zern"].attrs["units"] == "nm" and mem["sample_stats"]["lp"].attrs["units"] == "1"
    with xr.open_datatree(path) as disk:
        assert sorted(n.path for n in mem.subtree) == sorted(n.path for n in disk.subtree)
        for node in disk.subtree:
            ds, ref = node.to_dataset(), mem[node.path].to_dataset()
            assert sorted(ds.data_vars) == sorted(ref.data_vars)
            assert sorted(map(str, ds.coords)) == sorted(map(str, ref.coords))
            for name, var in ds.data_vars.items():
                assert {k: var.attrs[k] for k in ("units", "long_name")} == ref[name].attrs, (node.path, name)
                assert var.dims == ref[name].dims
            for c in ref.coords:
                if c != "draw" and str(c) in ds.coords:  # draw is the same index, dtype aside
                    assert list(ds.coords[c].values) == list(ref.coords[c].values), c


def test_files_written_before_the_change_summarise_through_read_netcdf(run, tmp_path):
    """An older file's ``<dim>_label`` coordinates ("position[x]") are folded into the dim's coordinate: a
    redundant one dropped, one over integer coordinates promoted to the bare labels."""
    post, _ = run
    dt = post.to_arviz()
    ds = dt["posterior"].to_dataset()
    dt["posterior"] = ds.assign_coords(position_dim_0=[0, 1],
                                       position_dim_0_label=("position_dim_0", ["position[x]", "position[y]"]),
                                       zern_dim_0_label=("zern_dim_0", ["zern[0]", "zern[1]"]))
    old = write_datatree(tmp_path / "old.nc", dt)
    with xr.open_datatree(old) as raw, pytest.raises(ValueError, match="not present in all datasets"):
        arviz_stats.summary(raw)  # the failure the fold removes
    back = read_netcdf(old)
    assert list(back["posterior"]["position"].coords["position_dim_0"].values) == ["x", "y"]
    assert list(back["posterior"]["zern"].coords["zern_dim_0"].values) == [0, 1]
    assert list(arviz_stats.summary(back).index) == ROWS


def test_the_getting_started_reading_command_runs(run):
    post, path = run
    text = (ROOT / "docs" / "getting-started.md").read_text()
    assert "arviz_base.from_netcdf" not in text  # arviz_base 1.x has no such function
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "open_datatree" in b)
    quoted = re.search(r'open_datatree\("([^"]+)"\)', block).group(1)
    ns: dict = {}
    exec(compile(block.replace(quoted, str(path)), "docs/getting-started.md", "exec"), ns)
    assert list(arviz_stats.summary(ns["dt"]).index) == ROWS
    ns["dt"].close()
