"""Progress: the tqdm bar keeps the engines' interface, is quiet off a terminal and loads tqdm only to draw."""

from __future__ import annotations

import io
import re
import subprocess
import sys

from gnomon.util.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _text(stream: io.StringIO) -> str:
    return stream.getvalue().replace("\r", "\n")


def test_draws_position_postfix_total_and_close_message():
    out = _Terminal()
    bar = Progress(10, "lbfgs", stream=out)  # auto: a terminal draws
    assert bar.enabled and bar.total == 10
    bar.update(4, force=True, loss=0.123456)
    assert re.search(r"lbfgs.*4/10.*loss=0\.123", _text(out))
    bar.total += 10  # the sampler extends its warmup
    assert bar.total == 20
    bar.update(7, force=True, phase="warmup")
    assert "7/20" in _text(out) and "phase=warmup" in _text(out)
    bar.update(20, loss=1.0)  # absolute positions, not increments
    bar.close("3 divergences")
    last = _text(out).strip().splitlines()[-1]
    assert "20/20" in last and "3 divergences" in last and out.getvalue().endswith("\n")
    bar.close("again")  # closing twice is harmless
    assert "again" not in out.getvalue()


def test_quiet_off_a_terminal_and_when_disabled():
    for stream, enabled in ((io.StringIO(), None), (_Terminal(), False)):
        bar = Progress(5, "x", enabled=enabled, stream=stream)
        assert not bar.enabled
        bar.update(3, force=True, loss=1.0)
        bar.total = 9
        bar.close("done")
        assert stream.getvalue() == "" and bar.total == 9
    assert Progress(0, "empty", enabled=False).total == 1


def test_tqdm_loads_only_to_draw():
    code = (
        "import io, sys, gnomon, gnomon.optim.loop\n"
        "from gnomon.util.progress import Progress\n"
        "b = Progress(3, 'q', enabled=None, stream=io.StringIO()); b.update(2); b.close('x')\n"
        "print('tqdm' in sys.modules)\n"
        "b = Progress(3, 'q', enabled=True, stream=io.StringIO()); b.update(2); b.close()\n"
        "import threading; print('tqdm' in sys.modules, threading.active_count())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True", "1"]  # no monitor thread either
