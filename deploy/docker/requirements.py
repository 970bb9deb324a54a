"""Print the pinned requirements of pyproject.toml: runtime dependencies plus the named extras.

    python3 requirements.py pyproject.toml [EXTRA ...] > requirements.txt
    python3 requirements.py pyproject.toml --without torch   # all runtime pins but torch's
    python3 requirements.py pyproject.toml --only torch      # torch's pin alone

The Dockerfile installs from this output, so pyproject.toml stays the one list of pins. It
installs torch in a layer of its own (``--only``), after the rest (``--without``), so the
CPU and CUDA images share the layer of everything else.
"""

import re
import sys
import tomllib


def name_of(requirement: str) -> str:
    return re.split(r"[\[=<>!~; ]", requirement, maxsplit=1)[0].lower()


with open(sys.argv[1], "rb") as f:
    project = tomllib.load(f)["project"]
lines = list(project["dependencies"])
args = sys.argv[2:]
if args[:1] in (["--without"], ["--only"]):
    keep = args[0] == "--only"
    lines = [line for line in lines if (name_of(line) == args[1].lower()) == keep]
else:
    for extra in args:
        # Skip self-references such as "crop-yield-service[train]" inside other extras.
        lines += [r for r in project["optional-dependencies"][extra] if not r.startswith(project["name"])]
print("\n".join(lines))
