"""Offline stand-in for the get-pip.py bootstrap that ansible-test downloads.

ansible-test creates its sanity virtualenvs without pip and fetches get-pip.py from a
host this machine cannot reach; it documents saving the script to its cache as the way
round (~/.ansible/test/cache/get_pip_<version>.py). This script does the same job with
the interpreter's own ensurepip, then installs the exact pip version asked for from the
package index. 'make sanity' puts it in the cache when no bootstrap script is there.
"""

import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
subprocess.check_call([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q"] + args)
