"""Stand-in for the pip bootstrap script that ansible-test downloads for its sanity venvs.

ansible-test creates each sanity virtual environment without pip and fetches a bootstrap
script from a host this machine cannot reach. This stand-in does the same job with what
is reachable: ensurepip from the standard library, then `pip install` of the requested
pip version (and any other packages) from the package index the machine's pip
configuration names. `make sanity` places it where ansible-test looks for its cached copy.
"""

import subprocess
import sys

# get-pip.py options that pip install itself does not accept.
GET_PIP_ONLY = {"--no-setuptools", "--no-wheel"}

if __name__ == "__main__":
    # In a child process: ensurepip disables pip's configuration files in its own
    # process environment, which would hide the machine's index and CA settings.
    subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade"], stdout=subprocess.DEVNULL)
    args = [a for a in sys.argv[1:] if a not in GET_PIP_ONLY]
    sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", *args]))
