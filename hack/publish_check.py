"""What a publisher would see: build the tarball, import it as Galaxy does, introspect it as ansible-builder does.

    .venv/bin/python hack/publish_check.py   (make publish; part of make test)

0. galaxy.yml's links are real (no example.* or .invalid placeholder) and the version has been released
   (changelogs/changelog.yaml has it, so CHANGELOG.rst has its notes);
1. `ansible-galaxy collection build` into .build/dist (galaxy.yml's build_ignore decides what ships);
2. galaxy-importer (pinned in requirements-dev.txt; ansible-test off: no containers here) on the tarball: it must
   finish, with no ERROR and no WARNING except the one Galaxy prints for tests/sanity ignore files (the modules are
   Apache-2.0, so ansible-test's GPLv3-header check is ignored there, on purpose), run in a scratch directory so
   that its importer_result.json is removed with it;
3. the tarball installed into a scratch collections directory and `ansible-builder introspect` on it: it must
   succeed and report the collection's Python requirements (meta/execution-environment.yml).
Exits non-zero naming what failed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ALLOWED_WARNING = re.compile(r"^WARNING: Ignore files skip ansible-test sanity tests, found ignore-2\.\d+\.txt")


def run(*cmd: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", ANSIBLE_NOCOLOR="1")
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, check=False)


def importer_problems(output: str) -> list:
    """Lines of galaxy-importer's output that a clean import must not have."""
    bad = [
        line
        for line in output.splitlines()
        if line.startswith(("ERROR", "WARNING")) and not ALLOWED_WARNING.match(line)
    ]
    if "Importer processing completed successfully" not in output:
        bad.append("galaxy-importer did not complete")
    return bad


def metadata_problems(galaxy: dict, released: list) -> list:
    """What would make the published collection's page or release notes wrong."""
    problems = []
    for key in ("repository", "documentation", "issues"):
        url = str(galaxy.get(key) or "")
        host = re.sub(r"^https?://", "", url).split("/", 1)[0]
        if not url.startswith("https://") or host.endswith(".invalid") or re.match(r"(.+\.)?example\.", host):
            problems.append(f"galaxy.yml {key} is {url!r}: give the collection's real https address.")
    if str(galaxy.get("version")) not in released:
        problems.append(
            f"galaxy.yml version {galaxy.get('version')} has no release in changelogs/changelog.yaml: run "
            "antsibull-changelog release (README, Developing this collection)."
        )
    return problems


def main() -> int:
    import yaml

    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())
    changes = yaml.safe_load((REPO / "changelogs" / "changelog.yaml").read_text()) or {}
    problems = metadata_problems(galaxy, [str(v) for v in (changes.get("releases") or {})])
    if problems:
        print("galaxy.yml:\n" + "\n".join(problems), file=sys.stderr)
        return 1
    dist = REPO / ".build" / "dist"
    dist.mkdir(parents=True, exist_ok=True)
    built = run(str(BIN / "ansible-galaxy"), "collection", "build", "--force", "--output-path", str(dist), cwd=REPO)
    if built.returncode != 0:
        print(f"ansible-galaxy collection build failed:\n{built.stdout}{built.stderr}", file=sys.stderr)
        return 1
    tarball = max(dist.glob("meshops-istio-*.tar.gz"), key=lambda p: p.stat().st_mtime)
    print(f"built {tarball.relative_to(REPO)}")

    with tempfile.TemporaryDirectory() as tmp:
        # galaxy-importer writes importer_result.json into its working directory: the scratch directory, removed
        # with it (run from the checkout, the file would be left at its root; build_ignore and .gitignore name it).
        imported = run(str(BIN / "python"), "-m", "galaxy_importer.main", str(tarball), cwd=Path(tmp))
        output = imported.stdout + imported.stderr
        problems = importer_problems(output)
        if imported.returncode != 0 or problems:
            print("galaxy-importer found problems:\n" + "\n".join(problems or [output[-3000:]]), file=sys.stderr)
            return 1
        print("galaxy-importer: clean")

        collections = Path(tmp) / "collections"
        installed = run(
            str(BIN / "ansible-galaxy"),
            "collection",
            "install",
            "--force",
            "--no-deps",
            "-p",
            str(collections),
            str(tarball),
        )
        if installed.returncode != 0:
            print(f"installing the tarball failed:\n{installed.stdout}{installed.stderr}", file=sys.stderr)
            return 1
        introspected = run(str(BIN / "ansible-builder"), "introspect", "--sanitize", str(collections))
        text = introspected.stdout + introspected.stderr
        if introspected.returncode != 0 or "kubernetes>=24.2.0  # from collection meshops.istio" not in text:
            print(f"ansible-builder introspect failed or found no requirements:\n{text}", file=sys.stderr)
            return 1
        print("ansible-builder introspect: clean\n" + text.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
