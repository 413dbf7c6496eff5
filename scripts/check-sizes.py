#!/usr/bin/env python3
"""Size limits for the codebase (issue: one engineers would cite).

No source file holds more than MAX_FILE lines of non-test code, and no function is longer than
MAX_FN lines. Tests (files under tests/, `*tests.rs`, and `#[cfg(test)]` modules) are exempt.
Run: scripts/check-sizes.py [--report]
"""
import os
import re
import sys

MAX_FILE = 500
MAX_FN = 80
ROOTS = ["node", "operator", "hack/process-kubelet"]  # node/ includes api, bench, harness
FN_RE = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)")


def is_test_file(path):
    parts = path.split(os.sep)
    return "tests" in parts or path.endswith("tests.rs") or "benches" in parts


def strip_code(line):
    """The line without string literals and comments, close enough for brace counting."""
    line = re.sub(r'"(\\.|[^"\\])*"', '""', line)
    line = re.sub(r"'(\\.|[^'\\])'", "''", line)
    return line.split("//", 1)[0]


def test_module_lines(lines):
    """Indices of lines inside #[cfg(test)] items."""
    inside = set()
    i = 0
    while i < len(lines):
        if lines[i].strip().startswith("#[cfg(test)]"):
            depth, started, j = 0, False, i + 1
            while j < len(lines):
                code = strip_code(lines[j])
                depth += code.count("{") - code.count("}")
                if "{" in code:
                    started = True
                if started and depth <= 0:
                    break
                if not started and code.rstrip().endswith(";"):
                    break
                j += 1
            inside.update(range(i, j + 1))
            i = j + 1
        else:
            i += 1
    return inside


def functions(lines, skip):
    for i, line in enumerate(lines):
        if i in skip:
            continue
        m = FN_RE.match(line)
        if not m:
            continue
        depth, started, j = 0, False, i
        while j < len(lines):
            code = strip_code(lines[j])
            if not started and ";" in code and "{" not in code:
                break  # a declaration without a body
            depth += code.count("{") - code.count("}")
            if "{" in code:
                started = True
            if started and depth <= 0:
                yield m.group(6), i + 1, j - i + 1
                break
            j += 1


def main():
    report = "--report" in sys.argv
    failures = []
    for root in ROOTS:
        for dirpath, _, files in os.walk(root):
            if "target" in dirpath.split(os.sep):
                continue
            for name in files:
                if not name.endswith(".rs"):
                    continue
                path = os.path.join(dirpath, name)
                if is_test_file(path):
                    continue
                with open(path, encoding="utf-8") as f:
                    lines = f.read().splitlines()
                skip = test_module_lines(lines)
                code_lines = len(lines) - len(skip)
                if code_lines > MAX_FILE:
                    failures.append(f"{path}: {code_lines} lines of non-test code (max {MAX_FILE})")
                for fn, start, length in functions(lines, skip):
                    if length > MAX_FN:
                        failures.append(f"{path}:{start}: fn {fn} is {length} lines (max {MAX_FN})")
    for f in sorted(failures):
        print(f)
    if failures and not report:
        print(f"check-sizes: {len(failures)} limit(s) exceeded", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
