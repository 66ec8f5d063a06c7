"""Who is calling: the workspace whose projects a use case may see, and what the caller may do there."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .. import errors
from ..model import DEFAULT_WORKSPACE, Project


class Role(str, Enum):
    Training = "training"  # everything in its workspace (training keys, Slack members, the CLI)
    Prediction = "prediction"  # classify and read only (prediction keys)
    System = "system"  # every workspace: start-up recovery, background reports, maintenance commands


@dataclass(frozen=True)
class Scope:
    workspace: str | None
    role: Role = Role.Training

    def __post_init__(self) -> None:
        if self.workspace is None and self.role != Role.System:
            raise ValueError("only the system scope spans every workspace")

    @classmethod
    def system(cls) -> Scope:
        return cls(None, Role.System)

    @classmethod
    def of(cls, workspace: str, role: Role | str = Role.Training) -> Scope:
        return cls(workspace, Role(role))

    @property
    def home(self) -> str:
        """The workspace new projects are created in."""
        return self.workspace or DEFAULT_WORKSPACE

    def sees(self, project: Project) -> bool:
        return self.workspace is None or project.workspace == self.workspace

    def require_write(self, what: str) -> None:
        if self.role == Role.Prediction:
            raise errors.Forbidden(f"a prediction key cannot {what}; use a training key")
