"""Module verified_download, run as Ansible runs it (a process per call, its arguments in a file) against a loopback
HTTP server that counts the requests it answers."""

import collections
import fcntl
import hashlib
import http.server
import io
import itertools
import json
import os
import subprocess
import sys
import tarfile
import threading
import time

import pytest
from ansible_collections.meshops.istio.plugins.modules import verified_download as vd
from conftest import REPO

MODULE = REPO / "plugins" / "modules" / "verified_download.py"
COLLECTIONS = REPO / ".build" / "collections"
_calls = itertools.count()


class Site:
    """Files served on 127.0.0.1, each request counted by path, optionally answered after a delay."""

    def __init__(self, root):
        self.root = root
        self.hits = collections.Counter()
        self.delay = {}
        site, counting = self, threading.Lock()

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self):
                name = self.path.lstrip("/")
                with counting:
                    site.hits[name] += 1
                time.sleep(site.delay.get(name, 0))
                super().do_GET()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def add(self, name: str, data: bytes) -> str:
        (self.root / name).write_bytes(data)
        return hashlib.sha256(data).hexdigest()


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "site"
    root.mkdir()
    served = Site(root)
    yield served
    served.server.shutdown()
    served.server.server_close()


def module_command(tmp_path, args: dict, check_mode: bool = False) -> list:
    work = tmp_path / "module-tmp"
    work.mkdir(exist_ok=True)
    params = {**args, "_ansible_tmpdir": str(work), "_ansible_check_mode": check_mode}
    args_file = tmp_path / f"args-{next(_calls)}.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": params}))
    return [sys.executable, str(MODULE), str(args_file)]


def module_env() -> dict:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["PYTHONPATH"] = str(COLLECTIONS)
    return env


def result_of(proc_stdout: str) -> dict:
    return json.loads(proc_stdout)


def run(tmp_path, check_mode: bool = False, **args):
    """The module's result and the raw output it printed."""
    proc = subprocess.run(
        module_command(tmp_path, args, check_mode),
        capture_output=True,
        text=True,
        env=module_env(),
        timeout=120,
        check=False,
    )
    assert proc.stdout.strip(), proc.stderr
    return result_of(proc.stdout), proc.stdout


def archive(members: dict) -> bytes:
    """A .tar.gz holding ``members`` (path -> (bytes, mode))."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, (data, mode) in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def istioctl_archive(site, downloads, digest: str) -> list:
    """``files`` for the served istioctl.tar.gz, istioctl unpacked beside it."""
    return [
        {
            "url": f"{site.url}/istioctl.tar.gz",
            "dest": str(downloads / "istioctl.tar.gz"),
            "sha256": digest,
            "extract": ["istioctl"],
        }
    ]


def leftovers(directory) -> list:
    return sorted(p.name for p in directory.iterdir())


def test_first_download_verifies_and_writes_and_a_second_run_asks_nothing(tmp_path, site):
    digest = site.add("base-1.31.1.tgz", b"chart bytes" * 1000)
    dest = tmp_path / "downloads" / "istio-1.31.1" / "base-1.31.1.tgz"  # directories are made
    files = [{"url": f"{site.url}/base-1.31.1.tgz", "dest": str(dest), "sha256": digest.upper()}]

    first = run(tmp_path, files=files)[0]
    assert first["changed"] is True and not first.get("failed"), first
    assert first["results"] == [
        {
            "url": f"{site.url}/base-1.31.1.tgz",
            "dest": str(dest),
            "sha256": digest,
            "downloaded": True,
            "extracted": [],
            "changed": True,
        }
    ]
    assert dest.read_bytes() == b"chart bytes" * 1000
    assert dest.stat().st_mode & 0o777 == 0o644
    assert leftovers(dest.parent) == ["base-1.31.1.tgz", "base-1.31.1.tgz.lock"]
    assert site.hits == {"base-1.31.1.tgz": 1}

    second = run(tmp_path, files=files)[0]
    assert second["changed"] is False and second["results"][0]["downloaded"] is False, second
    assert site.hits == {"base-1.31.1.tgz": 1}, "a verified file in place is not asked for again"


def test_a_file_that_changed_at_dest_is_downloaded_again(tmp_path, site):
    digest = site.add("istiod.tgz", b"the real chart")
    dest = tmp_path / "istiod.tgz"
    dest.write_bytes(b"something else")
    result = run(tmp_path, files=[{"url": f"{site.url}/istiod.tgz", "dest": str(dest), "sha256": digest}])[0]
    assert result["results"][0]["downloaded"] is True and dest.read_bytes() == b"the real chart"


def test_wrong_sha256_fails_naming_both_digests_and_leaves_nothing(tmp_path, site):
    actual = site.add("istiod.tgz", b"tampered chart")
    expected = "ab" * 32
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / "istiod.tgz").write_bytes(b"an older, unverified file")
    url = f"http://ops:s3cret-pass@127.0.0.1:{site.server.server_port}/istiod.tgz"

    result, printed = run(tmp_path, files=[{"url": url, "dest": str(downloads / "istiod.tgz"), "sha256": expected}])
    assert result["failed"] is True and result["changed"] is False
    msg = result["msg"]
    assert f"The sha256 checksum of {site.url}/istiod.tgz did not match" in msg, msg
    assert expected in msg and actual in msg
    assert "s3cret-pass" not in printed and "ops:" not in msg
    assert leftovers(downloads) == ["istiod.tgz.lock"], "neither the download nor the unverified file is left"
    assert site.hits == {"istiod.tgz": 1}


def test_checksum_url_gives_the_digest_and_is_read_on_every_run(tmp_path, site):
    name = "istioctl-1.31.1-linux-amd64.tar.gz"
    digest = site.add(name, b"release archive")
    (site.root / f"{name}.sha256").write_text(f"{digest}  {name}\n")
    dest = tmp_path / name
    files = [{"url": f"{site.url}/{name}", "dest": str(dest), "checksum_url": f"{site.url}/{name}.sha256"}]

    first = run(tmp_path, files=files)[0]
    assert first["changed"] is True and first["results"][0]["sha256"] == digest
    second = run(tmp_path, files=files)[0]
    assert second["changed"] is False
    assert site.hits == {name: 1, f"{name}.sha256": 2}

    (site.root / f"{name}.sha256").write_text("<html>Not a checksum</html>\n")
    dest.unlink()
    refused = run(tmp_path, files=files)[0]
    assert refused["failed"] and "does not start with a sha256 digest" in refused["msg"], refused["msg"]
    assert not dest.exists()


def test_a_server_error_names_the_url_and_the_answer(tmp_path, site):
    dest = tmp_path / "missing.tgz"
    result = run(tmp_path, files=[{"url": f"{site.url}/missing.tgz", "dest": str(dest), "sha256": "0" * 64}])[0]
    assert result["failed"] and result["msg"].startswith(f"cannot download {site.url}/missing.tgz: HTTP Error 404")
    assert not dest.exists()


def test_extract_writes_the_member_once_and_again_only_when_it_differs(tmp_path, site):
    data = archive({"istioctl": (b"#!/bin/sh\necho istioctl\n", 0o755), "LICENSE": (b"text", 0o644)})
    digest = site.add("istioctl.tar.gz", data)
    downloads = tmp_path / "downloads"
    files = istioctl_archive(site, downloads, digest)
    first = run(tmp_path, files=files)[0]
    program = downloads / "istioctl"
    assert first["results"][0]["extracted"] == [str(program)], first
    assert program.read_bytes() == b"#!/bin/sh\necho istioctl\n" and program.stat().st_mode & 0o777 == 0o755
    assert not (downloads / "LICENSE").exists()
    before = program.stat()

    second = run(tmp_path, files=files)[0]
    assert second["changed"] is False and second["results"][0]["extracted"] == []
    after = program.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), "not rewritten"

    program.write_bytes(b"#!/bin/sh\necho edited\n")  # same size, other content
    third = run(tmp_path, files=files)[0]
    assert third["changed"] is True and third["results"][0]["extracted"] == [str(program)]
    assert program.read_bytes() == b"#!/bin/sh\necho istioctl\n"
    assert leftovers(downloads) == ["istioctl", "istioctl.tar.gz", "istioctl.tar.gz.lock"]
    assert site.hits == {"istioctl.tar.gz": 1}


def test_extract_keeps_the_members_path_below_extract_dir(tmp_path, site):
    member = "istio-1.31.1/samples/addons/kiali.yaml"
    digest = site.add("istio.tar.gz", archive({member: (b"kind: Deployment\n", 0o644)}))
    files = [
        {
            "url": f"{site.url}/istio.tar.gz",
            "dest": str(tmp_path / "istio.tar.gz"),
            "sha256": digest,
            "extract": [f"./{member}"],
            "extract_dir": str(tmp_path / "unpacked"),
        }
    ]
    result = run(tmp_path, files=files)[0]
    target = tmp_path / "unpacked" / member
    assert result["results"][0]["extracted"] == [str(target)] and target.read_text() == "kind: Deployment\n"


@pytest.mark.parametrize("member", ["../evil", "/etc/evil", "a/../../evil"])
def test_a_member_outside_extract_dir_is_refused_before_anything_is_fetched(tmp_path, site, member):
    digest = site.add("evil.tar.gz", archive({member.lstrip("/"): (b"x", 0o644)}))
    dest = tmp_path / "in" / "evil.tar.gz"
    files = [{"url": f"{site.url}/evil.tar.gz", "dest": str(dest), "sha256": digest, "extract": [member]}]
    result = run(tmp_path, files=files)[0]
    assert result["failed"] and f"refusing to unpack {member!r}" in result["msg"], result["msg"]
    assert "outside extract_dir" in result["msg"]
    assert site.hits == {} and not (tmp_path / "in").exists() and not (tmp_path / "evil").exists()


def test_a_symbolic_link_leading_out_of_extract_dir_is_refused(tmp_path, site):
    outside = tmp_path / "outside"
    outside.mkdir()
    unpack = tmp_path / "unpack"
    unpack.mkdir()
    (unpack / "samples").symlink_to(outside)
    digest = site.add("istio.tar.gz", archive({"samples/evil": (b"x", 0o644)}))
    files = [
        {
            "url": f"{site.url}/istio.tar.gz",
            "dest": str(tmp_path / "istio.tar.gz"),
            "sha256": digest,
            "extract": ["samples/evil"],
            "extract_dir": str(unpack),
        }
    ]
    result = run(tmp_path, files=files)[0]
    assert result["failed"] and f"outside extract_dir {unpack}" in result["msg"], result["msg"]
    assert list(outside.iterdir()) == []


def test_a_member_missing_from_the_archive_is_named(tmp_path, site):
    digest = site.add("istio.tar.gz", archive({"istio-1.31.1/samples/addons/kiali.yaml": (b"x", 0o644)}))
    dest = tmp_path / "istio.tar.gz"
    missing = "istio-1.31.1/samples/addons/jaeger.yaml"
    files = [{"url": f"{site.url}/istio.tar.gz", "dest": str(dest), "sha256": digest, "extract": [missing]}]
    result = run(tmp_path, files=files)[0]
    assert result["failed"] and f"{dest} has no member {missing}" in result["msg"], result["msg"]


def test_concurrent_callers_download_once_and_all_see_the_verified_file(tmp_path, site):
    """Four processes (as four hosts of one run, forks=4) ask for the same archive at once: the first to take the
    lock downloads it (slowly: the server waits a second before it answers), the others wait for the lock and find
    it verified; istioctl is unpacked once."""
    data = archive({"istioctl": (os.urandom(200_000), 0o755)})
    digest = site.add("istioctl.tar.gz", data)
    site.delay["istioctl.tar.gz"] = 1.0
    downloads = tmp_path / "downloads"
    files = istioctl_archive(site, downloads, digest)
    procs = [
        subprocess.Popen(
            module_command(tmp_path, {"files": files}),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=module_env(),
        )
        for _attempt in range(4)
    ]
    results = [result_of(p.communicate(timeout=120)[0]) for p in procs]
    assert site.hits == {"istioctl.tar.gz": 1}, site.hits
    assert all(not r.get("failed") and r["results"][0]["sha256"] == digest for r in results), results
    assert sorted(r["results"][0]["downloaded"] for r in results) == [False, False, False, True]
    assert sum(len(r["results"][0]["extracted"]) for r in results) == 1
    assert hashlib.sha256((downloads / "istioctl.tar.gz").read_bytes()).hexdigest() == digest
    assert leftovers(downloads) == ["istioctl", "istioctl.tar.gz", "istioctl.tar.gz.lock"]


def test_a_lock_held_past_lock_timeout_fails_naming_the_lock_and_the_remedy(tmp_path, site):
    digest = site.add("base.tgz", b"chart")
    dest = tmp_path / "base.tgz"
    lock = f"{dest}.lock"
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another process holds it
        result = run(
            tmp_path, files=[{"url": f"{site.url}/base.tgz", "dest": str(dest), "sha256": digest}], lock_timeout=1
        )[0]
    assert result["failed"] and result["msg"].startswith(f"timed out after 1s waiting for the lock {lock}")
    assert "raise lock_timeout" in result["msg"] and f"fuser -v {lock}" in result["msg"]
    assert site.hits == {} and not dest.exists()


def test_check_mode_reports_what_would_be_downloaded_and_writes_nothing(tmp_path, site):
    digest = site.add("istioctl.tar.gz", archive({"istioctl": (b"program", 0o755)}))
    downloads = tmp_path / "downloads"
    files = istioctl_archive(site, downloads, digest)
    preview = run(tmp_path, check_mode=True, files=files)[0]
    assert preview["changed"] is True
    assert preview["results"][0]["downloaded"] is True
    assert preview["results"][0]["extracted"] == [str(downloads / "istioctl")]
    assert site.hits == {} and not downloads.exists()

    run(tmp_path, files=files)
    (downloads / "istioctl").unlink()
    again = run(tmp_path, check_mode=True, files=files)[0]
    assert again["results"][0]["downloaded"] is False
    assert again["results"][0]["extracted"] == [str(downloads / "istioctl")]
    assert not (downloads / "istioctl").exists()


@pytest.mark.parametrize(
    "item, words",
    [
        ({"sha256": "", "checksum_url": ""}, "give exactly one of sha256"),
        ({"sha256": "0" * 64, "checksum_url": "http://127.0.0.1:1/x.sha256"}, "give exactly one of sha256"),
        ({"sha256": "not-hex"}, "sha256 must be 64 hexadecimal characters"),
        ({"sha256": "0" * 64, "url": "ssh://127.0.0.1/x"}, "must be an http, https, ftp or file URL"),
        ({"sha256": "0" * 64, "mode": "rw-r--r--"}, "mode must be octal permissions"),
    ],
)
def test_bad_items_are_refused_before_anything_is_fetched(tmp_path, item, words):
    files = [{"url": "http://127.0.0.1:1/x.tgz", "dest": str(tmp_path / "d" / "x.tgz"), **item}]
    result = run(tmp_path, files=files)[0]
    assert result["failed"] and words in result["msg"], result["msg"]
    assert result["msg"].startswith(f"files[0] ({tmp_path / 'd' / 'x.tgz'}): ")
    assert not (tmp_path / "d").exists()


def test_urls_lose_their_userinfo_in_messages_and_their_password_is_known_to_hide():
    url = "https://ci:p%40ss@w0rd@mirror.example.com/charts/base.tgz"
    assert vd.public(url) == "https://mirror.example.com/charts/base.tgz"
    assert vd.public(f"no answer from {url}") == "no answer from https://mirror.example.com/charts/base.tgz"
    assert vd.url_passwords(url) == {"p%40ss@w0rd", "p@ss@w0rd"}
    assert vd.url_passwords("https://mirror.example.com/base.tgz") == set()
    assert vd.url_passwords("https://token@mirror.example.com/base.tgz") == set()
