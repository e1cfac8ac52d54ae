"""Build the collection's docs site into .build/docs/html with antsibull-docs and Sphinx (make docs).

    .venv/bin/python hack/docs/build.py   (make docs; the collection must be on ANSIBLE_COLLECTIONS_PATH, as the
                                           Makefile's collection-link puts it)

1. `antsibull-docs sphinx-init` writes a fresh Sphinx project into .build/docs (nothing generated is checked in),
   with hack/docs/index.rst as its front page; CONF_EXTRA is appended to its conf.py: no intersphinx (it would
   download docs.ansible.com's inventories, and there is no network), hack/docs/meshops_docs.py resolving those
   references offline instead, and myst-parser for the Markdown guides;
2. `antsibull-docs collection` renders every module, filter and lookup plugin (their DOCUMENTATION) and every role
   (meta/argument_specs.yml) into .build/docs/rst, with docs/docsite/links.yml's links on the collection's page;
3. the guides, docs/**/*.md, are copied into .build/docs/rst/guides (docs/ stays the one copy), their links to
   files that are not guides (examples, the AWX job templates) pointed at the repository (galaxy.yml);
4. `sphinx-build -W --keep-going` (nitpicky): any warning fails the build.
Prints the index page's path.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
DEST = REPO / ".build" / "docs"
COLLECTION = "meshops.istio"
BRANCH = "main"  # the branch galaxy.yml's documentation address and docs/docsite/links.yml name

CONF_EXTRA = """

# ---- appended by hack/docs/build.py ----
# No network: intersphinx would download docs.ansible.com's inventories. meshops_docs links those references to
# their pages there instead; myst_parser reads the Markdown guides (rst/guides, copied from docs/).
import sys as _sys

_sys.path.insert(0, {here!r})
extensions = [e for e in extensions if e != "sphinx.ext.intersphinx"] + ["myst_parser", "meshops_docs"]
intersphinx_mapping = {{}}
myst_heading_anchors = 4
release = {version!r}
html_title = "meshops.istio " + release + " documentation"
"""

# A Markdown inline link's target: [text](target) or [text](target "title").
LINK = re.compile(r"(\]\()([^)\s]+)((?:\s+\"[^\"]*\")?\))")


class Failed(Exception):
    pass


def run(step: str, *cmd: str, cwd: Path, quiet: bool = False) -> None:
    """Run one step; quiet keeps its output (sphinx-init's advice to run its build.sh) unless it fails."""
    print("+ " + " ".join(cmd), flush=True)
    done = subprocess.run(cmd, cwd=cwd, check=False, capture_output=quiet, text=True)
    if done.returncode != 0:
        if quiet:
            print(done.stdout + done.stderr, file=sys.stderr)
        raise Failed(f"{step} failed (its messages are above)")


def link_target(target: str, source: Path, repository: str) -> str:
    """A guide's link as the site needs it: guides and anchors stay, other files of the repository link there."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
        return target
    path, _hash, anchor = target.partition("#")
    resolved = (source.parent / path).resolve()
    try:
        relative = resolved.relative_to(REPO)
    except ValueError:
        return target  # outside the repository: Sphinx warns about it
    if resolved.suffix == ".md" and resolved.is_relative_to(REPO / "docs"):
        return target
    kind = "tree" if resolved.is_dir() else "blob"
    return f"{repository}/{kind}/{BRANCH}/{relative.as_posix()}" + (f"#{anchor}" if anchor else "")


def guide_text(text: str, source: Path, repository: str) -> str:
    """A guide's Markdown with link_target applied to each link outside fenced code."""
    lines, fenced = [], False
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            line = LINK.sub(lambda m: m[1] + link_target(m[2], source, repository) + m[3], line)
        lines.append(line)
    return "".join(lines)


def main() -> int:
    started = time.monotonic()
    os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"  # antsibull-docs runs ansible-doc
    os.environ.setdefault("ANSIBLE_COLLECTIONS_PATH", str(REPO / ".build" / "collections"))
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())
    repository = str(galaxy["repository"]).rstrip("/")

    shutil.rmtree(DEST, ignore_errors=True)
    DEST.mkdir(parents=True)
    DEST.chmod(0o755)  # antsibull-docs wants its directories writable by their owner alone
    run(
        "antsibull-docs sphinx-init",
        str(BIN / "antsibull-docs"),
        "sphinx-init",
        "--use-current",
        "--fail-on-error",
        "--dest-dir",
        str(DEST),
        "--index-rst-source",
        str(HERE / "index.rst"),
        "--project",
        COLLECTION,
        "--copyright",
        "meshops.istio developers",
        "--title",
        "meshops.istio documentation",
        "--html-short-title",
        COLLECTION,
        COLLECTION,
        cwd=REPO,
        quiet=True,
    )
    with (DEST / "conf.py").open("a", encoding="utf-8") as conf:
        conf.write(CONF_EXTRA.format(here=str(HERE), version=str(galaxy["version"])))

    rst = DEST / "rst"
    rst.chmod(0o755)
    run(
        "antsibull-docs collection",
        str(BIN / "antsibull-docs"),
        "--config-file",
        "antsibull-docs.cfg",
        "collection",
        "--use-current",
        "--fail-on-error",
        "--cleanup",
        "everything",
        "--dest-dir",
        "rst",
        COLLECTION,
        cwd=DEST,
    )

    docs = REPO / "docs"
    guides = sorted(docs.rglob("*.md"))
    for source in guides:
        target = rst / "guides" / source.relative_to(docs)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(guide_text(source.read_text(encoding="utf-8"), source, repository), encoding="utf-8")
    print(f"copied {len(guides)} guides from docs/ into {(rst / 'guides').relative_to(REPO)}")

    run(
        "sphinx-build (a warning fails it)",
        str(BIN / "sphinx-build"),
        "-b",
        "html",
        "-c",
        ".",
        "-d",
        "doctrees",
        "-W",
        "--keep-going",
        "-q",
        "-j",
        "auto",
        "rst",
        "html",
        cwd=DEST,
    )
    print(f"docs built in {time.monotonic() - started:.0f} s: {(DEST / 'html' / 'index.html').relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Failed as exc:
        sys.exit(f"make docs: {exc}")
