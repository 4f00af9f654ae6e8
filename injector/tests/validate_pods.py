"""Validates Kubernetes objects against the official 1.33 schemas, strictly.

Reads a JSON list of {"name": ..., "object": ...} on stdin and prints a JSON
list of problems (empty when every object is valid). Needs the PyPI package
kubernetes-validate (in the project's environment: `make deps-python`).
"""

import json
import sys

try:
    import kubernetes_validate
except ImportError:
    sys.exit("the Python package kubernetes-validate is missing: run `make deps-python` "
             "(the tests then use target/venv/bin/python)")

VERSION = "1.33"

problems = []
for case in json.load(sys.stdin):
    try:
        kubernetes_validate.validate(case["object"], VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        where = "/".join(str(p) for p in e.path)
        problems.append(f"{case['name']}: {where}: {e.message}")
json.dump(problems, sys.stdout)
