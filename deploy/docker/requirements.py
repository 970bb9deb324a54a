"""Print the pinned requirements of pyproject.toml: runtime dependencies plus the named extras.

    python3 requirements.py pyproject.toml [EXTRA ...] > requirements.txt

The Dockerfile installs from this output, so pyproject.toml stays the one list of pins.
"""

import sys
import tomllib

with open(sys.argv[1], "rb") as f:
    project = tomllib.load(f)["project"]
lines = list(project["dependencies"])
for extra in sys.argv[2:]:
    # Skip self-references such as "crop-yield-service[train]" inside other extras.
    lines += [r for r in project["optional-dependencies"][extra] if not r.startswith(project["name"])]
print("\n".join(lines))
