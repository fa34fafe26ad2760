"""examples/handwritten_hierarchy.py, small: the defaults on a hand-written centred eight schools keep the
conditional map read from the derivatives and report μ and log τ close to a long non-centred run."""

import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import handwritten_hierarchy as example  # noqa: E402


def test_the_example_keeps_the_conditional_map_and_matches_the_reference(capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = example.main(["--draws", "500", "--key", "1"])
    out = capsys.readouterr().out
    actions = [str(getattr(d["action"], "value", d["action"])) for d in post.info["decisions"]]
    assert "transport kept" in actions, actions
    assert "the map: conditional gaussian" in out and "roots θ[0, 1]" in out and "log τ :" in out
    th = np.asarray(post.theta, np.float64).reshape(-1, 10)
    for i, (m, s) in enumerate(example.REFERENCE.values()):
        assert abs(th[:, i].mean() - m) < 0.2 * s and abs(th[:, i].std() / s - 1) < 0.2, (i, th[:, i].mean(),
                                                                                        th[:, i].std())
