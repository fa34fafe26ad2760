"""The docs stay true: the API reference is generated from the current docstrings, and links resolve."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_api_reference_is_current():
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_api_docs.py"), "--check"])
    assert res.returncode == 0, "docs/api.md is stale: run python scripts/gen_api_docs.py"


def test_every_public_name_has_a_docstring():
    import gnomon

    missing = [n for n in gnomon.__all__ if not n.startswith("_") and not getattr(gnomon, n).__doc__]
    assert missing == []


def test_relative_links_in_docs_and_readme_resolve():
    broken = []
    for md in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", md.read_text()):
            if not (md.parent / target).exists():
                broken.append(f"{md.name} -> {target}")
    assert broken == []
