#!/usr/bin/python
# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
module: verified_download
short_description: Download files once per controller, verified by sha256, safe when several hosts ask at once
version_added: 0.3.0
description:
  - For each of O(files), under an exclusive lock on C(DEST.lock) (C(flock), so only one process at a time fetches
    or unpacks that file), does nothing when O(files[].dest) already holds the expected sha256; otherwise downloads
    the URL into a temporary file in the same directory, checks its sha256 and only then renames it into place
    (atomically), so nobody ever sees a half-written or unverified file at O(files[].dest). A download whose sha256
    does not match is discarded and the task fails naming the URL and both digests, with nothing left at
    O(files[].dest) (a file there that did not have the expected sha256 either is removed).
  - Several hosts of one run (all with C(ansible_connection=local) on the controller, forks above 1) asking for the
    same file at once get one download. The first takes the lock and fetches it, the others wait for the lock and
    then find the verified file.
  - Optionally unpacks members of the downloaded tar archive (O(files[].extract)) into O(files[].extract_dir), under
    the same lock, each written to a temporary file and renamed into place, and only when it is missing or differs
    from the archive's member. A running program that is replaced this way keeps running (no C(text file busy)).
  - The requests go through Ansible's URL library, as M(ansible.builtin.get_url)'s do (the C(http_proxy),
    C(https_proxy) and C(no_proxy) environment, O(validate_certs), O(timeout), credentials written in the URL as
    C(https://user:password@host/path)). The password of a URL is never returned or printed; messages and results
    name each URL without its C(user:password@) part.
  - The roles meshops.istio.istio_install_minimal and meshops.istio.telemetry_addons fetch their charts and release
    archives with it.
author:
  - meshops.istio developers (@meshops)
attributes:
  check_mode:
    support: full
    description:
      - In check mode nothing is downloaded, unpacked or locked; the results say what would be
        (RV(results[].downloaded), RV(results[].extracted)). A O(files[].checksum_url) is still read, to know whether
        O(files[].dest) holds the expected file.
      - Set the task keyword C(check_mode) to C(false) when later tasks need the files in check mode too (a download
        changes no cluster), as the roles of this collection do.
  diff_mode:
    support: none
    description: No diff is shown.
  idempotent:
    support: full
    description:
      - A file that holds the expected sha256, and members that are in place, are left alone and not reported as
        changed.
options:
  files:
    description: The files to fetch, each processed in turn under its own lock.
    type: list
    elements: dict
    required: true
    suboptions:
      url:
        description: Where to download the file from (C(http), C(https), C(ftp) or C(file) URL).
        type: str
        required: true
      dest:
        description:
          - The path of the file on the controller. Missing parent directories are created (mode C(0755)).
          - The lock file C(DEST.lock) is created beside it and left there (it holds nothing; a lock is released when
            the process that holds it ends).
        type: path
        required: true
      sha256:
        description:
          - The expected sha256 digest, 64 hexadecimal characters.
          - Exactly one of O(files[].sha256) and O(files[].checksum_url) must be given (not empty).
        type: str
        default: ""
      checksum_url:
        description:
          - URL of a checksum file whose first word is the expected sha256 digest (as Istio's C(URL.sha256) files,
            C(DIGEST  NAME)). Read on every run, in check mode too.
          - Exactly one of O(files[].sha256) and O(files[].checksum_url) must be given (not empty).
        type: str
        default: ""
      mode:
        description:
          - Permissions of O(files[].dest), as an octal string (V("0644")) or a number.
        type: raw
        default: "0644"
      extract:
        description:
          - Members of the archive (a tar file, compressed with gzip, bzip2 or xz, or not) to unpack into
            O(files[].extract_dir), by their path in the archive (for example
            C(istio-1.31.1/samples/addons/kiali.yaml)). Each lands at that path below O(files[].extract_dir), with the
            member's permissions.
          - A member is written only when it is missing there or differs from the archive's.
          - Absolute paths, paths with C(..), and paths that would lead out of O(files[].extract_dir) through a symbolic
            link are refused. A member that is not in the archive, or is not a regular file, fails the task.
        type: list
        elements: str
        default: []
      extract_dir:
        description: Where O(files[].extract) members are unpacked; by default the directory of O(files[].dest).
        type: path
  timeout:
    description:
      - Seconds each request may wait for the server (to connect, and between two reads), as for
        M(ansible.builtin.get_url).
    type: int
    default: 10
  validate_certs:
    description: Whether HTTPS servers' certificates are verified. Turn it off only for a test server.
    type: bool
    default: true
  lock_timeout:
    description:
      - Seconds to wait for another process (another host of the same run, or another run on this controller) that
        holds the lock of a file, before failing with a message naming the lock file.
      - V(0) tries once.
    type: int
    default: 600
notes:
  - The lock is C(flock) on the controller's file system; processes on other machines sharing it (NFS) may not see
    each other's locks.
seealso:
  - module: ansible.builtin.get_url
  - module: ansible.builtin.unarchive
"""

EXAMPLES = r"""
- name: Download istioctl's release archive, checked against its published sha256, and unpack istioctl
  meshops.istio.verified_download:
    files:
      - url: https://github.com/istio/istio/releases/download/1.31.1/istioctl-1.31.1-linux-amd64.tar.gz
        checksum_url: https://github.com/istio/istio/releases/download/1.31.1/istioctl-1.31.1-linux-amd64.tar.gz.sha256
        dest: /var/cache/meshops-istio/istio-1.31.1/istioctl-1.31.1-linux-amd64.tar.gz
        extract: [istioctl]
  check_mode: false  # the file is needed in check mode too, and downloading it changes no cluster
  register: istioctl_archive

- name: Download two charts from a mirror that asks for a password, each checked against a given sha256
  meshops.istio.verified_download:
    files:
      - url: "https://ci:{{ mirror_password }}@charts.example.com/base-1.31.1.tgz"
        dest: /var/cache/charts/base-1.31.1.tgz
        sha256: "{{ base_sha256 }}"
      - url: "https://ci:{{ mirror_password }}@charts.example.com/istiod-1.31.1.tgz"
        dest: /var/cache/charts/istiod-1.31.1.tgz
        sha256: "{{ istiod_sha256 }}"
    timeout: 30
    lock_timeout: 900
"""

RETURN = r"""
changed:
  description: Whether any file was downloaded or unpacked (or its permissions set), or in check mode would be.
  returned: always
  type: bool
results:
  description: One entry per item of O(files), in their order (up to the one that failed, when one did).
  returned: always
  type: list
  elements: dict
  contains:
    url:
      description: O(files[].url) without its C(user:password@) part.
      type: str
      sample: https://github.com/istio/istio/releases/download/1.31.1/istioctl-1.31.1-linux-amd64.tar.gz
    dest:
      description: O(files[].dest).
      type: str
      sample: /var/cache/meshops-istio/istio-1.31.1/istioctl-1.31.1-linux-amd64.tar.gz
    sha256:
      description: The expected sha256, which the file at RV(results[].dest) has (in check mode, will have).
      type: str
      sample: 6b0f8e1c0d5d0a46a1d0b7f2f1e3c4b5a6978877665544332211ffeeddccbbaa
    downloaded:
      description: Whether this run downloaded the file (in check mode, would); false when it was in place, verified.
      type: bool
    extracted:
      description: The paths of the O(files[].extract) members written (or, in check mode, that would be).
      type: list
      elements: str
      sample: [/var/cache/meshops-istio/istio-1.31.1/istioctl]
    changed:
      description: Whether anything was done for this file (downloaded, unpacked, or permissions set).
      type: bool
"""

import contextlib
import errno
import fcntl
import glob
import gzip
import hashlib
import http.client
import lzma
import os
import posixpath
import re
import tarfile
import tempfile
import time
import zlib
from urllib.parse import unquote, urlsplit

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import fetch_url
from ansible_collections.meshops.istio.plugins.module_utils.redact import redact

CHUNK = 1 << 16
CHECKSUM_FILE_LIMIT = 1 << 16
SCHEMES = ("http", "https", "ftp", "file")
_HEX = re.compile(r"^[0-9a-f]{64}$")
# scheme://userinfo@ - up to the last @ before the path (a password may hold an unencoded @).
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/\s?#]*)@")


class DownloadError(Exception):
    """A failure whose message is ready for the task result (no credentials in it)."""


def public(text) -> str:
    """``text`` (a URL or a message quoting one) without any URL's user:password@, and other secrets redacted."""
    return redact(_USERINFO.sub(r"\1", str(text)))


def url_passwords(url: str) -> set:
    """The password of the URL's userinfo, as written and decoded, for the module's no_log_values."""
    match = _USERINFO.match(url)
    if not match or ":" not in match.group(2):
        return set()
    password = match.group(2).split(":", 1)[1]
    return {p for p in (password, unquote(password)) if p}


def _mode(value, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        mode = value
    elif isinstance(value, str) and re.fullmatch(r"0?o?[0-7]{3,4}", value.strip()):
        mode = int(value.strip().replace("o", ""), 8)
    else:
        raise DownloadError(f"{where}: mode must be octal permissions such as '0644', not {value!r}.")
    if not 0 <= mode <= 0o7777:
        raise DownloadError(f"{where}: mode {value!r} is out of range.")
    return mode


def _member_name(name: str, where: str) -> str:
    """A member path as the archive names it, refused when it could lead out of the directory it is unpacked into."""
    if not isinstance(name, str) or not name.strip() or name.startswith("/") or ".." in name.split("/"):
        raise DownloadError(
            f"{where}: refusing to unpack {name!r}: extract members must be relative paths inside the archive, "
            "without a leading / or .. (they would be written outside extract_dir)."
        )
    return posixpath.normpath(name)


def member_target(extract_dir: str, name: str) -> str:
    """Where member ``name`` lands below ``extract_dir``; DownloadError when that is outside it (a symbolic link)."""
    target = os.path.join(extract_dir, *name.split("/"))
    real_dir = os.path.realpath(extract_dir)
    real = os.path.realpath(target)
    if real == real_dir or os.path.commonpath([real_dir, real]) != real_dir:
        raise DownloadError(
            f"refusing to unpack {name}: it would be written to {real}, outside extract_dir {extract_dir} "
            "(a symbolic link leads out of it)."
        )
    return target


def plan(index: int, item: dict) -> dict:
    """One item of ``files``, checked and normalised before anything is fetched or written."""
    dest = item["dest"]
    where = f"files[{index}] ({dest})"
    url = item["url"].strip()
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    if scheme not in SCHEMES:
        raise DownloadError(f"{where}: url {public(url)!r} must be an http, https, ftp or file URL.")
    sha256 = (item.get("sha256") or "").strip().lower()
    checksum_url = (item.get("checksum_url") or "").strip()
    if bool(sha256) == bool(checksum_url):
        raise DownloadError(
            f"{where}: give exactly one of sha256 (the hex digest) and checksum_url (a file whose first word is "
            f"the digest) for {public(url)}."
        )
    if sha256 and not _HEX.match(sha256):
        raise DownloadError(f"{where}: sha256 must be 64 hexadecimal characters, not {sha256!r}.")
    if checksum_url and urlsplit(checksum_url).scheme.lower() not in SCHEMES:
        raise DownloadError(f"{where}: checksum_url {public(checksum_url)!r} must be an http, https, ftp or file URL.")
    dest = os.path.abspath(dest)
    if os.path.isdir(dest):
        raise DownloadError(f"{where}: dest is a directory; give the path of the file.")
    extract_dir = os.path.abspath(item.get("extract_dir") or os.path.dirname(dest))
    checked = {
        "where": where,
        "url": url,
        "dest": dest,
        "sha256": sha256,
        "checksum_url": checksum_url,
        "mode": _mode(item.get("mode", "0644"), where),
        "extract_dir": extract_dir,
        "members": [_member_name(name, where) for name in item.get("extract") or []],
    }
    targets(checked)
    return checked


def targets(item: dict) -> dict:
    """Where each member of ``item`` lands (path in the archive -> file path), checked against symbolic links that
    would lead out of its extract_dir (again under the lock, just before unpacking)."""
    try:
        return {name: member_target(item["extract_dir"], name) for name in item["members"]}
    except DownloadError as exc:
        raise DownloadError(f"{item['where']}: {exc}") from None


def _ok(url: str, info: dict) -> bool:
    """What get_url accepts as a successful answer."""
    scheme = urlsplit(url).scheme.lower()
    if info.get("status") == 200 or scheme == "file":
        return True
    return scheme == "ftp" and str(info.get("msg", "")).startswith("OK")


def _open(module, url: str):
    response, info = fetch_url(module, url, timeout=module.params["timeout"], decompress=False)
    if response is None or not _ok(url, info):
        if response is not None:
            response.close()
        reason = info.get("msg") or f"status {info.get('status')}"
        raise DownloadError(f"cannot download {public(url)}: {public(reason)}")
    return response


def _chunks(response, url: str, limit: int = 0):
    """The response body in chunks; DownloadError when the transfer breaks off."""
    read = 0
    try:
        while True:
            chunk = response.read(CHUNK)
            if not chunk:
                return
            read += len(chunk)
            if limit and read > limit:
                raise DownloadError(f"{public(url)} is larger than {limit} bytes: it is not a checksum file.")
            yield chunk
    except (OSError, http.client.HTTPException) as exc:
        raise DownloadError(f"the download of {public(url)} broke off: {public(exc) or type(exc).__name__}") from None
    finally:
        response.close()


def expected_sha256(module, item: dict) -> str:
    if item["sha256"]:
        return item["sha256"]
    url = item["checksum_url"]
    text = b"".join(_chunks(_open(module, url), url, CHECKSUM_FILE_LIMIT)).decode("utf-8", "replace")
    words = text.split()
    digest = words[0].lower() if words else ""
    if not _HEX.match(digest):
        raise DownloadError(
            f"{item['where']}: the checksum file {public(url)} does not start with a sha256 digest "
            f"(64 hexadecimal characters, as in 'DIGEST  NAME'); it starts with {public(text[:80])!r}."
        )
    return digest


def file_sha256(path: str):
    """The sha256 of a regular file, or None when there is none at ``path``."""
    if not os.path.isfile(path):
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _write_atomically(chunks, path: str, mode: int) -> tuple:
    """Write ``chunks`` to a temporary file beside ``path`` (fsynced, with ``mode``); its path and sha256. The caller
    renames it into place or removes it."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=f".{os.path.basename(path)}.", suffix=".part")
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        return tmp, digest.hexdigest()
    except BaseException:
        _unlink(tmp)
        raise


class Lock:
    """An exclusive flock on ``path``, waited for up to ``timeout`` seconds."""

    def __init__(self, path: str, timeout: int) -> None:
        self.path, self.timeout = path, timeout
        self.fd = -1

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + max(self.timeout, 0)
        delay = 0.05
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    os.close(self.fd)
                    raise
            left = deadline - time.monotonic()
            if left <= 0:
                os.close(self.fd)
                raise DownloadError(
                    f"timed out after {self.timeout}s waiting for the lock {self.path}: another process is still "
                    "downloading or unpacking that file (another host of this run, or another run on this "
                    f"controller). Let it finish and run again, or raise lock_timeout; `fuser -v {self.path}` names "
                    "the process that holds it. The lock is released when that process ends: the file itself never "
                    "needs deleting."
                )
            time.sleep(min(delay, left))
            delay = min(delay * 2, 1.0)

    def __exit__(self, *exc) -> None:
        os.close(self.fd)  # releases the flock


def _remove_stale_parts(dest: str) -> None:
    """Temporary files of a download of ``dest`` that died (only the lock's holder writes them: we hold it)."""
    pattern = os.path.join(glob.escape(os.path.dirname(dest)), f".{glob.escape(os.path.basename(dest))}.*.part")
    for path in glob.glob(pattern):
        _unlink(path)


def _same_content(stream, path: str) -> bool:
    with open(path, "rb") as current:
        while True:
            chunk = stream.read(CHUNK)
            if chunk != current.read(len(chunk) or 1):
                return False
            if not chunk:
                return True


def _unpack(tar, member, target: str, check_mode: bool) -> bool:
    """Write one member to ``target`` unless it is there with the same content and permissions; whether it was (or,
    in check mode, would be) written."""
    mode = member.mode & 0o7777
    same = (
        os.path.isfile(target)
        and os.path.getsize(target) == member.size
        and _same_content(tar.extractfile(member), target)
    )
    if same and os.stat(target).st_mode & 0o7777 == mode:
        return False
    if check_mode:
        return True
    if same:
        os.chmod(target, mode)
        return True
    os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
    stream = tar.extractfile(member)
    tmp = _write_atomically(iter(lambda: stream.read(CHUNK), b""), target, mode)[0]
    os.replace(tmp, target)
    return True


def extract(archive: str, targets: dict, check_mode: bool) -> list:
    """Unpack the ``targets`` members (path in the archive -> file path) that are missing or differ; their paths."""
    if not targets:
        return []
    written = []
    pending = dict(targets)
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                name = posixpath.normpath(member.name)
                if name not in pending:
                    continue
                target = pending.pop(name)
                if not member.isreg():
                    raise DownloadError(f"{name} in {archive} is not a regular file; only files can be unpacked.")
                if _unpack(tar, member, target, check_mode):
                    written.append(target)
                if not pending:
                    break
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError) as exc:
        raise DownloadError(f"cannot read {archive} as a tar archive: {exc}") from None
    if pending:
        raise DownloadError(
            f"{archive} has no member {', '.join(sorted(pending))}: check the extract paths against the archive's "
            f"contents (`tar -tf {archive}`)."
        )
    return written


def fetch_one(module, item: dict) -> dict:
    url, dest, mode = item["url"], item["dest"], item["mode"]
    expected = expected_sha256(module, item)
    result = {"url": public(url), "dest": dest, "sha256": expected, "downloaded": False, "extracted": []}
    if module.check_mode:
        present = file_sha256(dest) == expected
        result["downloaded"] = not present
        if present:
            result["extracted"] = extract(dest, targets(item), check_mode=True)
            moded = os.stat(dest).st_mode & 0o7777 != mode
        else:
            result["extracted"] = sorted(targets(item).values())
            moded = False
        result["changed"] = result["downloaded"] or moded or bool(result["extracted"])
        return result
    os.makedirs(os.path.dirname(dest), mode=0o755, exist_ok=True)
    moded = False
    with Lock(dest + ".lock", module.params["lock_timeout"]):
        _remove_stale_parts(dest)
        if file_sha256(dest) == expected:
            if os.stat(dest).st_mode & 0o7777 != mode:
                os.chmod(dest, mode)
                moded = True
        else:
            tmp, actual = _write_atomically(_chunks(_open(module, url), url), dest, mode)
            if actual != expected:
                _unlink(tmp)
                _unlink(dest)
                raise DownloadError(
                    f"The sha256 checksum of {public(url)} did not match: expected {expected}, the download has "
                    f"{actual}. It was discarded and nothing is at {dest}: the file on the server is corrupt or was "
                    "tampered with, or the expected sha256 is wrong."
                )
            os.replace(tmp, dest)
            result["downloaded"] = True
        result["extracted"] = extract(dest, targets(item), check_mode=False)
    result["changed"] = result["downloaded"] or moded or bool(result["extracted"])
    return result


def main():
    module = AnsibleModule(
        argument_spec={
            "files": {
                "type": "list",
                "elements": "dict",
                "required": True,
                "options": {
                    "url": {"type": "str", "required": True},
                    "dest": {"type": "path", "required": True},
                    "sha256": {"type": "str", "default": ""},
                    "checksum_url": {"type": "str", "default": ""},
                    "mode": {"type": "raw", "default": "0644"},
                    "extract": {"type": "list", "elements": "str", "default": []},
                    "extract_dir": {"type": "path"},
                },
            },
            "timeout": {"type": "int", "default": 10},
            "validate_certs": {"type": "bool", "default": True},
            "lock_timeout": {"type": "int", "default": 600},
        },
        supports_check_mode=True,
    )
    files = module.params["files"]
    for item in files:
        for url in (item["url"], item.get("checksum_url") or ""):
            module.no_log_values.update(url_passwords(url))
    results = []
    try:
        plans = [plan(index, item) for index, item in enumerate(files)]
        dests = [p["dest"] for p in plans]
        twice = sorted({d for d in dests if dests.count(d) > 1})
        if twice:
            raise DownloadError(f"each dest may be given once; given more than once: {', '.join(twice)}.")
        for item in plans:
            try:
                results.append(fetch_one(module, item))
            except OSError as exc:
                raise DownloadError(f"{item['where']}: {public(exc)}") from None
    except DownloadError as exc:
        module.fail_json(msg=str(exc), changed=any(r["changed"] for r in results), results=results)
    module.exit_json(changed=any(r["changed"] for r in results), results=results)


if __name__ == "__main__":
    main()
