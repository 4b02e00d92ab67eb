"""The split assignment stored in the model registry: versioned, create-only, read and checked at the edge.

Every image keeps its side for good: the assignment of every image seen so far is a versioned document of
the registry, read at the start and written back, as the next version, only when images were added. Two
runs that race both end on the same assignment: writing a version that exists fails, and the loser starts
again from the winner's document. A stored assignment that cannot be read stops the step, naming the repair
(`retrain split reset`), which stores a fresh, empty version recording why; only an operator's word restarts it.

The data split step (`pipeline_steps/data_split.py`) reads and extends it; `retrain split reset` restarts it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel, ValidationError

from shared.contracts import SplitAssignment

if TYPE_CHECKING:
    from shared.registry import ModelRegistry

DEFAULT_ASSIGNMENT_NAME = "pid-symbols-split-assignment"
#: Create-only writes that lose a race read the winner's version and try again, this many times at most.
COMMIT_ATTEMPTS = 5


class SplitError(ValueError):
    """The split cannot be made as asked (the message says why and which setting to change)."""


class AssignmentUnreadable(SplitError):
    """The stored assignment cannot be read: which images are held out is unknown, so no run may guess."""

    def __init__(self, name: str, version: int, problem: str) -> None:
        self.problem = problem
        super().__init__(
            f"split assignment {name} version {version} is unreadable ({problem}): which images are held out is "
            f"unknown, and a guess could train on them; start a new assignment (every side drawn anew): "
            f"{reset_command(name)}"
        )


def reset_command(name: str, *, force: bool = False) -> str:
    """The `retrain` command that starts a fresh version of the assignment `name`."""
    return f'retrain split reset --name {name} --reason "<why>"' + (" --force" if force else "")


def read_assignment(registry: ModelRegistry, name: str) -> SplitAssignment:
    """The latest stored assignment (empty when there is none); AssignmentUnreadable when it is damaged."""
    latest = registry.latest_versioned_document(name)
    if latest is None:
        return SplitAssignment()
    version, content = latest
    return parse_assignment(name, version, content)


def parse_assignment(name: str, version: int, content: bytes) -> SplitAssignment:
    """Version `version` of the assignment `name`, validated: a message naming it and its repair otherwise."""
    try:
        assignment = SplitAssignment.from_bytes(content)
    except ValidationError as error:
        raise AssignmentUnreadable(name, version, _first_problem(error)) from None
    if assignment.version != version:
        # The next version would be written over one that exists, and every later run would fail to commit.
        raise AssignmentUnreadable(name, version, f"it says it is version {assignment.version}")
    return assignment


def _first_problem(error: ValidationError) -> str:
    """The first thing wrong, on one line (an image name in the location may hold any character)."""
    problems = error.errors(include_url=False)
    first = problems[0]
    where = ".".join(str(part)[:100] for part in first["loc"])
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    text = (f"{where}: " if where else "") + first["msg"][:200] + more
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class AssignmentRestart(BaseModel):
    """Why an assignment was started afresh: kept in the version `retrain split reset` stored."""

    reason: str
    replaces_version: int
    replaced: str  # "unreadable (...)" or "readable (N images)"
    at: str


class RestartedAssignment(SplitAssignment):
    """An empty assignment that says why it restarted; the next run reads it as any other version."""

    restart: AssignmentRestart


class RestartRefused(SplitError):
    """The latest assignment is readable: restarting it would draw a new holdout, so it takes --force."""


def restart_assignment(registry: ModelRegistry, name: str, reason: str, *, force: bool = False) -> AssignmentRestart:
    """Store an empty assignment as the next version of `name`, recording why and what it replaced.

    Refused (RestartRefused) when the latest version is readable, unless `force`: its holdout is what
    every promotion so far was decided on. Create-only, as every version: a racing writer's version
    is read again and the restart stored after it.
    """
    for _ in range(COMMIT_ATTEMPTS):
        latest = registry.latest_versioned_document(name)
        previous = 0 if latest is None else latest[0]
        try:
            readable = None if latest is None else parse_assignment(name, *latest)
            replaced = "nothing" if readable is None else f"readable ({len(readable.by_name)} images)"
        except AssignmentUnreadable as unreadable:
            readable, replaced = None, f"unreadable ({unreadable.problem})"
        if readable is not None and not force:
            raise RestartRefused(
                f"split assignment {name} version {previous} is {replaced}: a new one draws every side anew, and "
                "images held out so far may then be trained on; add --force to restart it anyway"
            )
        restart = AssignmentRestart(
            reason=reason, replaces_version=previous, replaced=replaced, at=datetime.now(UTC).isoformat()
        )
        document = RestartedAssignment(version=previous + 1, restart=restart)
        if registry.create_document(name, str(document.version), document.to_bytes()):
            return restart
    raise SplitError(f"split assignment {name} kept changing under the restart ({COMMIT_ATTEMPTS} attempts): try again")
