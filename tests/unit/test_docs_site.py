"""The docs site's own code (make docs): offline references into docs.ansible.com, the guides' links, the toctree."""

import re

from conftest import REPO, load_script

build = load_script("hack/docs/build.py", "meshops_docs_build")
ext = load_script("hack/docs/meshops_docs.py", "meshops_docs")

REPOSITORY = "https://github.com/meshops/meshops.istio"


def test_ansible_core_guides_and_other_collections_link_to_docs_ansible_com():
    base = ext.ANSIBLE_DOCS
    assert ext.external_target("common_return_values") == (
        base + "reference_appendices/common_return_values.html#common-return-values",
        "Return Values",
    )
    assert ext.external_target("ansible_collections.kubernetes.core.k8s_module") == (
        base + "collections/kubernetes/core/k8s_module.html",
        "kubernetes.core.k8s",
    )
    url, _title = ext.external_target("ansible_collections.kubernetes.core.k8s_module__parameter-server_side_apply")
    assert url == base + "collections/kubernetes/core/k8s_module.html#parameter-server_side_apply"
    url, _title = ext.external_target("ansible_collections.ansible.builtin.copy_module")
    assert url == base + "collections/ansible/builtin/copy_module.html"


def test_a_broken_reference_into_this_collection_or_an_unknown_label_stays_a_warning():
    assert ext.external_target("ansible_collections.meshops.istio.namespace_injection_role__parameter-main__x") is None
    assert ext.external_target("ansible_collections.meshops.istio.nothing_module") is None
    assert ext.external_target("no_such_label") is None


def test_guide_links_stay_and_links_to_other_files_point_at_the_repository():
    source = REPO / "docs" / "playbooks.md"
    assert build.link_target("awx.md", source, REPOSITORY) == "awx.md"
    assert build.link_target("roles/rollout.md#the-istioctl-analyze-gate", source, REPOSITORY) == (
        "roles/rollout.md#the-istioctl-analyze-gate"
    )
    assert build.link_target("#verify", source, REPOSITORY) == "#verify"
    assert build.link_target("https://istio.io/", source, REPOSITORY) == "https://istio.io/"
    assert build.link_target("../examples/inventory/multi-cluster.yml", source, REPOSITORY) == (
        f"{REPOSITORY}/blob/main/examples/inventory/multi-cluster.yml"
    )
    assert build.link_target("awx/", source, REPOSITORY) == f"{REPOSITORY}/tree/main/docs/awx"


def test_links_in_fenced_code_are_left_alone():
    guide = REPO / "docs" / "awx.md"
    assert f"]({REPOSITORY}/blob/main/docs/awx/rollout.json)" in build.guide_text(guide.read_text(), guide, REPOSITORY)
    text = "```console\necho '[x](../Makefile)'\n```\n[y](../Makefile)\n"
    assert build.guide_text(text, guide, REPOSITORY) == (
        f"```console\necho '[x](../Makefile)'\n```\n[y]({REPOSITORY}/blob/main/Makefile)\n"
    )


def test_the_front_page_lists_every_guide():
    """Sphinx fails make docs on a guide that no toctree names; this says so in make test already."""
    index = (REPO / "hack" / "docs" / "index.rst").read_text()
    listed = set(re.findall(r"^   (guides/\S+)$", index, re.M))
    docs = REPO / "docs"
    guides = {"guides/" + p.relative_to(docs).with_suffix("").as_posix() for p in docs.rglob("*.md")}
    assert guides == listed
