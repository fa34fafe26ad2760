"""examples/centred_hierarchy.py, small: the defaults on a centred numpyro model reject the seed, keep a transport
map and report τ's posterior close to a long non-centred run."""

import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import centred_hierarchy as example  # noqa: E402


def test_the_example_keeps_a_map_and_matches_the_reference(capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = example.main(["--draws", "400", "--key", "1"])
    out = capsys.readouterr().out
    actions = [str(getattr(d["action"], "value", d["action"])) for d in post.info["decisions"]]
    assert "seed rejected" in actions and "transport kept" in actions, actions
    assert "the map: affine autoregressive" in out and "log τ:" in out
    log_tau = np.log(np.asarray(post.to_arviz().posterior["tau"])).ravel()
    m, s = example.LOG_TAU_REFERENCE
    assert abs(log_tau.mean() - m) < 0.2 * s and abs(log_tau.std() / s - 1) < 0.2, (log_tau.mean(), log_tau.std())
