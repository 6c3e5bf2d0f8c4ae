"""Permissions follow the content, not the path: a document's groups are the strictest of every path that reaches it.

A symlink, a hard link or a plain copy can put a restricted document's text under a path whose ACL rule is looser
(`ln -s ../hr/confidential/pay.md public/handbook.md`). So every file the scan found is grouped with every other
path that reaches the same content: the hops of its symlink chain and its real path (whether or not those were
scanned), other names of the same inode (hard links), and files or indexed documents with the same SHA-256.
Each member then gets the strictest groups of its class.

"Strictest" of two group sets: a user must pass both. Every user holds `everyone`, so `everyone` adds no
restriction; otherwise the result is the intersection, which may be stricter than needed (a user in hr and
legal passes {hr} and {legal} but not their empty intersection) and never looser. An empty result means
nobody can read the document.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ingest.acl import EVERYONE, AclRules
from ingest.documents import FileProblem
from ingest.scan import Candidate, display
from ingest.store import DocumentRecord


def strictest(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[str, ...]:
    """Groups whose members pass both `first` and `second` (see the module doc)."""
    if EVERYONE in first:
        return tuple(sorted(second))
    if EVERYONE in second:
        return tuple(sorted(first))
    return tuple(sorted(set(first) & set(second)))


@dataclass(frozen=True)
class Reached:
    """A scanned file, its content hash and (device, inode), and every root-relative path that reaches it."""

    candidate: Candidate
    key: str
    sha256: str
    inode: tuple[int, int]
    paths: tuple[str, ...]


def paths_reaching(candidate: Candidate) -> tuple[str, ...]:
    """The candidate's own path, then each hop of its symlink chain and its real path, relative to the root."""
    paths = [candidate.source]
    hop = candidate.path
    for _ in range(40):  # the kernel's own limit on symlink chains
        if not hop.is_symlink():
            break
        target = hop.parent / os.readlink(hop)
        hop = Path(os.path.realpath(target.parent)) / target.name  # resolve the folders, keep the last link
        _add_relative(paths, hop, candidate.root)
    _add_relative(paths, candidate.path.resolve(), candidate.root)
    return tuple(paths)


def _add_relative(paths: list[str], path: Path, root: Path) -> None:
    try:
        relative = display(path.relative_to(root).as_posix())
    except ValueError:  # outside the root: the scan already refuses links whose target is outside
        return
    if relative not in paths:
        paths.append(relative)


@dataclass
class Effective:
    """The groups each scanned file gets, indexed documents outside this run that must tighten, and why."""

    groups: dict[str, tuple[str, ...]]  # key -> groups
    tightened_indexed: dict[str, tuple[str, ...]]  # key of an indexed document not in this run -> its new groups
    notes: list[FileProblem]


def effective_groups(reached: list[Reached], rules: AclRules, indexed: dict[str, DocumentRecord]) -> Effective:
    """Give each member of a content class the strictest groups of the class.

    `indexed` holds the indexed documents this run does not cover, by key: a copy ingested from another folder
    counts too (with its stored groups), and is tightened itself when this run brings a stricter copy.
    """
    parent = list(range(len(reached)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_of: dict[object, int] = {}
    for i, item in enumerate(reached):
        for identity in (("inode", item.inode), ("sha", item.sha256)):
            j = first_of.setdefault(identity, i)
            parent[find(i)] = find(j)

    classes: dict[int, list[int]] = {}
    for i in range(len(reached)):
        classes.setdefault(find(i), []).append(i)
    outside_by_sha: dict[str, list[str]] = {}
    for key, doc in indexed.items():
        outside_by_sha.setdefault(doc.sha256, []).append(key)

    result = Effective(groups={}, tightened_indexed={}, notes=[])
    for members in classes.values():
        own = {i: _strictest_of(rules.groups_for(p) for p in reached[i].paths) for i in members}
        shas = {reached[i].sha256 for i in members}
        outside = sorted(k for sha in shas for k in outside_by_sha.get(sha, []))
        groups = _strictest_of([*own.values(), *(indexed[k].groups for k in outside)])
        for i in members:
            item = reached[i]
            result.groups[item.key] = groups
            if groups != tuple(sorted(rules.groups_for(item.paths[0]))):
                others = [*item.paths[1:], *(reached[j].candidate.source for j in members if j != i),
                          *(indexed[k].source for k in outside)]
                result.notes.append(FileProblem(item.candidate.source, _reason(groups, others)))
        for key in outside:
            if indexed[key].groups != groups:
                result.tightened_indexed[key] = groups
    return result


def _strictest_of(group_sets) -> tuple[str, ...]:
    combined: tuple[str, ...] = (EVERYONE,)
    for groups in group_sets:
        combined = strictest(combined, tuple(groups))
    return combined


def _reason(groups: tuple[str, ...], others: list[str]) -> str:
    readers = ", ".join(groups) if groups else "nobody"
    return (f"readable by {readers} only: the same content is also reached as {', '.join(dict.fromkeys(others))}"
            " (the strictest rule applies)")
