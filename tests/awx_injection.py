"""What AWX does with a custom credential type when a job starts, for tests of the credential type the collection
ships (docs/awx/credential_type.json): each file injector is written into the job's private directory, then each env
injector is rendered with the file names under ``tower.filename``."""

from __future__ import annotations

from pathlib import Path

import jinja2


def inject(credential_type: dict, inputs: dict, private_dir: Path) -> dict:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    filenames = {}
    for key, template in credential_type["injectors"].get("file", {}).items():
        name = key.split(".", 1)[1]
        path = private_dir / f"tmp{name}"
        path.write_text(env.from_string(template).render(**inputs))
        path.chmod(0o600)
        filenames[name] = str(path)
    return {
        key: env.from_string(value).render(**inputs, tower={"filename": filenames})
        for key, value in credential_type["injectors"].get("env", {}).items()
    }
