"""What the stages of one run share: settings, clients, caches, and the catalogue's facts.

One StageContext is made per run and given to every job, so what it holds is shared by
them all: ``scratch_budget`` (measured when the context is made, unless one is given) is
the one budget all conversions reserve their scratch from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipeline.settings import Settings
from pipeline.stages.scratch import ScratchBudget
from pipeline.tools.apptainer import Apptainer
from pipeline.tools.docker_engine import BuildClient
from pipeline.tools.git import Source
from pipeline.tools.os_bases import OsBases
from pipeline.tools.registry.staging import Staging


@dataclass(frozen=True)
class StageContext:
    settings: Settings
    client: BuildClient
    os_bases: OsBases
    source: Source
    catalogue_dir: Path
    descriptions: dict  # image name -> description, for the SIF's %help
    apptainer: Apptainer | None  # None when no stage after build runs
    staging: Staging | None = None  # where built images go (trusted or pr)
    # Shared by every conversion of the run; None: measured now (memory, the scratch disk).
    scratch_budget: ScratchBudget | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.scratch_budget is None:
            object.__setattr__(self, "scratch_budget", ScratchBudget.measure(self.scratch))

    @property
    def sif_dir(self) -> Path:
        return self.settings.out_dir / "sif"

    @property
    def scratch(self) -> Path:
        return self.settings.lab_dir / "scratch"
