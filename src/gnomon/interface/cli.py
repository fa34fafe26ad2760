"""``gnomon`` command line: ``gnomon demo | show | plot | aggregate``.

This module only parses arguments and turns library errors into one clear line on stderr with a
non-zero exit; the work is done by :mod:`gnomon.interface.demo` and :mod:`gnomon.interface.commands`.
The commands that compile JAX programs (``demo``, ``plot``) turn on JAX's persistent compilation cache
(:func:`gnomon.enable_compilation_cache`) unless given ``--no-compile-cache``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gnomon", description="gnomon: inference in a flat θ-space")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="do not use JAX's persistent compilation cache (default: on, in $GNOMON_CACHE_DIR or "
        "~/.cache/gnomon/jax, so that a second run does not recompile)",
    )

    d = sub.add_parser(
        "demo", parents=[common], help="run the end-to-end demo (simulate, fit, sample, save, plot)"
    )
    d.add_argument("--out", default="gnomon-demo", help="experiment directory to write (default: ./gnomon-demo)")
    d.add_argument("--quick", action="store_true", help="smaller settings (under a minute)")
    d.add_argument("--seed", type=int, default=0, help="random seed")

    s = sub.add_parser("show", help="status, summary and essential meta of a run or experiment directory")
    s.add_argument("path")

    pl = sub.add_parser(
        "plot", parents=[common], help="plot a run directory (or an experiment's campaign) to an image file"
    )
    pl.add_argument("path", help="a run directory; an experiment directory with --campaign")
    pl.add_argument("-o", "--output", required=True, help="output image (.png, .pdf, .svg)")
    pl.add_argument("--signals", nargs="*", default=None, help="signal names to plot (default: all)")
    pl.add_argument("--mode", default="components", choices=["components", "summary", "hybrid"])
    pl.add_argument("--recipe", default=None, help="a figure recipe, e.g. 'astrometry'")
    pl.add_argument(
        "--map",
        action="append",
        default=None,
        metavar="ROLE=NAME",
        help="with --recipe: which of your layout's names plays one of the recipe's roles, e.g. --map "
        "separation=sep --map position=x,y (astrometry roles: position, separation, position_angle, log_flux, "
        "contrast, plate_scale, zernikes); repeat for several roles",
    )
    pl.add_argument(
        "--campaign",
        action="store_true",
        help="an experiment's estimates ± σ per parameter across its runs, and its z-scores against N(0, 1)",
    )
    pl.add_argument("--params", nargs="*", default=None, metavar="NAME", help="parameters of --campaign")
    pl.add_argument("--x", default=None, help="epoch column of --campaign (a summary key or dotted meta key)")

    a = sub.add_parser("aggregate", help="aggregate an experiment's runs into one table")
    a.add_argument("path")
    a.add_argument("-o", "--output", default=None, help="table file: .parquet or .csv (default: print the table)")
    a.add_argument("--meta-keys", nargs="*", default=(), help="meta.json keys (dotted) to add as columns")
    a.add_argument(
        "--params",
        nargs="*",
        default=None,
        metavar="NAME",
        help="per-parameter columns (estimate, sd, crlb, truth, z): all, or those of the named parameters",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.version:
        from gnomon import __version__

        print(__version__)
        return 0
    if args.command is None:
        _parser().print_help()
        return 2
    from gnomon.io.jsonio import ArtifactError

    try:
        if args.command == "demo":
            from gnomon.interface.demo import run_demo

            run_demo(out=args.out, quick=args.quick, seed=args.seed, compile_cache=not args.no_compile_cache)
            return 0
        if args.command == "plot" and not args.no_compile_cache:
            from gnomon.util.compile_cache import enable_compilation_cache

            enable_compilation_cache()
        from gnomon.interface import commands

        return int(getattr(commands, args.command)(args) or 0)
    except BrokenPipeError:  # output piped into e.g. `head`, which closed early: not an error
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at interpreter exit
        except OSError:
            pass
        return 0
    except (ArtifactError, OSError, ValueError) as exc:
        print(f"gnomon {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"gnomon {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
