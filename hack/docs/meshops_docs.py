"""The docs site's Sphinx extension (make docs): references into docs.ansible.com resolved without the network.

The pages antsibull-docs generates refer to ansible-core's guides (action plugins, common return values, the
configuration settings) and to other collections' plugins and options (kubernetes.core.k8s and the doc fragments'
community.okd.k8s_auth, ansible.builtin.copy). A docs site resolves those with intersphinx, which downloads
docs.ansible.com's inventory: neither a developer's machine nor CI reaches it, so intersphinx is off
(hack/docs/build.py) and this extension links each such reference to its page on docs.ansible.com instead.

References into this collection are left to Sphinx: one that names no page, option or return value stays an
"undefined label" warning, which fails the build (as antsibull-docs lint-collection-docs does).
"""

from __future__ import annotations

import re

ANSIBLE_DOCS = "https://docs.ansible.com/projects/ansible/devel/"
THIS_COLLECTION = ("meshops", "istio")

# ansible-core's guides that generated pages refer to: label -> (page and anchor, title).
CORE_LABELS = {
    "action_plugins": ("plugins/action.html#action-plugins", "Action plugins"),
    "common_return_values": ("reference_appendices/common_return_values.html#common-return-values", "Return Values"),
    "ansible_configuration_settings": (
        "reference_appendices/config.html#ansible-configuration-settings",
        "Ansible Configuration Settings",
    ),
}

# antsibull-docs' labels for another collection's plugin, its options and return values:
# ansible_collections.<namespace>.<name>.<plugin>_<type>[__parameter-<path>|__return-<path>]
PLUGIN_LABEL = re.compile(
    r"^ansible_collections\.(?P<namespace>[a-z0-9_]+)\.(?P<name>[a-z0-9_]+)\.(?P<plugin>[a-z0-9_]+)_(?P<type>[a-z]+)"
    r"(?:__(?P<kind>parameter|return)-(?P<path>.+))?$"
)


def external_target(label: str) -> tuple[str, str] | None:
    """(URL on docs.ansible.com, title) for a label this site does not have, None for one it should have."""
    if label in CORE_LABELS:
        page, title = CORE_LABELS[label]
        return ANSIBLE_DOCS + page, title
    match = PLUGIN_LABEL.match(label)
    if not match or (match["namespace"], match["name"]) == THIS_COLLECTION:
        return None
    fqcn = f"{match['namespace']}.{match['name']}.{match['plugin']}"
    url = f"{ANSIBLE_DOCS}collections/{match['namespace']}/{match['name']}/{match['plugin']}_{match['type']}.html"
    if not match["kind"]:
        return url, fqcn
    # A role's options are <entry point>__<option> in the label, <entry point>--<option> in the page's anchor.
    path = match["path"].replace("__", "--") if match["type"] == "role" else match["path"]
    return f"{url}#{match['kind']}-{path}", f"{fqcn} {match['path']}"


def resolve_external(app, env, node, contnode):
    """missing-reference: link a std:ref into docs.ansible.com to its page there."""
    from docutils import nodes  # Sphinx's; imported here so that the unit tests need neither

    if node.get("refdomain") != "std" or node.get("reftype") != "ref":
        return None
    found = external_target(node["reftarget"])
    if found is None:
        return None
    url, title = found
    reference = nodes.reference("", "", internal=False, refuri=url, reftitle=f"{title} (docs.ansible.com)")
    reference += contnode if node.get("refexplicit") else nodes.inline(title, title)
    return reference


def setup(app):
    app.connect("missing-reference", resolve_external)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
