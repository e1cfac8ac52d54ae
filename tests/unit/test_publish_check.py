"""The publish check's reading of galaxy-importer's output (the check itself runs in make publish)."""

from conftest import load_script

publish = load_script("hack/publish_check.py", "meshops_publish_check")

DONE = "Importer processing completed successfully"


def test_a_clean_import_allows_only_the_sanity_ignore_file_warning():
    output = "\n".join(
        [
            "Importing with galaxy-importer 0.4.44",
            "WARNING: Ignore files skip ansible-test sanity tests, found ignore-2.19.txt with 8 statement(s)",
            DONE,
        ]
    )
    assert publish.importer_problems(output) == []


def test_errors_other_warnings_and_an_unfinished_import_are_problems():
    output = "\n".join(
        [
            "ERROR: Error running ansible-doc: ...",
            "WARNING: playbooks/uninstall.yml:57:11: syntax-check[unknown-module]: ...",
            DONE,
        ]
    )
    assert publish.importer_problems(output) == [
        "ERROR: Error running ansible-doc: ...",
        "WARNING: playbooks/uninstall.yml:57:11: syntax-check[unknown-module]: ...",
    ]
    assert publish.importer_problems("Importing with galaxy-importer") == ["galaxy-importer did not complete"]


def test_every_shipped_python_file_carries_the_spdx_license_identifier():
    import subprocess

    from conftest import REPO

    # The working tree as it would ship: tracked and new files, not the ones deleted but not yet committed.
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "plugins/*.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    files = [f for f in listed if (REPO / f).is_file()]
    assert files
    missing = [f for f in files if "# SPDX-License-Identifier: Apache-2.0\n" not in (REPO / f).read_text()[:400]]
    assert missing == []


GALAXY = {
    "version": "0.2.0",
    "repository": "https://github.com/meshops/meshops.istio",
    "documentation": "https://github.com/meshops/meshops.istio/tree/main/docs",
    "issues": "https://github.com/meshops/meshops.istio/issues",
}


def test_metadata_with_real_links_and_a_released_version_is_clean():
    assert publish.metadata_problems(GALAXY, ["0.2.0"]) == []


def test_placeholder_links_and_an_unreleased_version_are_problems():
    galaxy = dict(
        GALAXY, repository="https://example.invalid/meshops/istio", issues="http://example.com/x", version="0.3.0"
    )
    problems = publish.metadata_problems(galaxy, ["0.2.0"])
    assert [p.split(" is ")[0] for p in problems[:2]] == ["galaxy.yml repository", "galaxy.yml issues"]
    assert problems[2].startswith("galaxy.yml version 0.3.0 has no release")


def test_galaxy_importers_result_file_is_neither_shipped_nor_committed():
    """make publish runs galaxy-importer in a scratch directory; a run by hand from the checkout leaves the file."""
    import yaml
    from conftest import REPO

    assert "importer_result.json" in yaml.safe_load((REPO / "galaxy.yml").read_text())["build_ignore"]
    assert "importer_result.json" in (REPO / ".gitignore").read_text().splitlines()
