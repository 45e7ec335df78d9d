#!/usr/bin/env python3
"""Checks that the workspace's `rust-version` is at least every locked
dependency's own `rust-version`: the MSRV we state is one the lockfile can
really build with. (Only one toolchain is installed here, so this checks the
declared minimums; clippy's `incompatible_msrv` lint checks our own use of
the standard library against the same number.)"""
import json
import subprocess
import sys


def version(text):
    parts = [int(part) for part in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


meta = json.loads(
    subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
)
members = set(meta["workspace_members"])
ours = {p["rust_version"] for p in meta["packages"] if p["id"] in members}
if len(ours) != 1 or None in ours:
    sys.exit(f"msrv: workspace crates disagree on rust-version: {sorted(map(str, ours))}")
msrv = ours.pop()
too_new = sorted(
    (version(p["rust_version"]), p["name"], p["version"])
    for p in meta["packages"]
    if p["id"] not in members and p.get("rust_version")
    and version(p["rust_version"]) > version(msrv)
)
if too_new:
    need, name, ver = too_new[-1]
    sys.exit(
        f"msrv: rust-version {msrv} is below what {name} {ver} needs "
        f"({'.'.join(map(str, need))}); {len(too_new)} locked crates need more"
    )
print(f"msrv: rust-version {msrv} covers every locked dependency")
