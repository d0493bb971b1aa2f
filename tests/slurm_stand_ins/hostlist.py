"""SLURM's compact host lists (``node[01-03,07],gpu5``) expanded the way ``scontrol show hostnames`` does: one
bracket group per name, comma-separated numbers and ranges, zero padding kept."""

from __future__ import annotations

import re

_NAME = re.compile(r"([^,\[]*)(?:\[([^\]]*)\])?([^,\[]*)")


def expand(hostlist: str) -> list[str]:
    names: list[str] = []
    pos = 0
    while pos < len(hostlist):
        match = _NAME.match(hostlist, pos)
        prefix, ranges, suffix = match.groups()
        if ranges is None:
            names.append(prefix + suffix)
        else:
            for part in ranges.split(","):
                low, _, high = part.partition("-")
                for number in range(int(low), int(high or low) + 1):
                    names.append(f"{prefix}{number:0{len(low)}d}{suffix}")
        pos = match.end() + 1  # past the comma between names
    return names
