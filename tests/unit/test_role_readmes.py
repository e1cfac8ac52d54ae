"""Every role has a README (Galaxy refuses a collection without them), written from its argument specs."""

from conftest import REPO, load_script

readmes = load_script("hack/role_readmes.py", "meshops_role_readmes")


def test_every_role_has_a_current_readme():
    roles = readmes.roles()
    assert {r.name for r in roles} >= {"istio_install_minimal", "namespace_injection", "rollout"}
    stale = [
        r.name for r in roles if not (r / "README.md").exists() or (r / "README.md").read_text() != readmes.expected(r)
    ]
    assert not stale, f"stale role READMEs {stale}: run python3 hack/role_readmes.py"


def test_readme_lists_every_option_and_entry_point():
    role = REPO / "roles" / "namespace_injection"
    text = readmes.expected(role)
    assert text.startswith(readmes.HEADER)
    assert "| `namespace_injection_namespaces` | list of str | required |" in text
    assert "| `namespace_injection_batch_size` | int | `2` |" in text
    assert "- `declare`: The declared state alone" in text
    # Ansible markup becomes Markdown code.
    assert "O(" not in text and "C(" not in text
