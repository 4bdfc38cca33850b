"""What the stages of one run share: settings, clients, caches, and the catalogue's facts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.settings import Settings
from pipeline.tools.apptainer import Apptainer
from pipeline.tools.docker_engine import BuildClient
from pipeline.tools.git import Source
from pipeline.tools.os_bases import OsBases


@dataclass(frozen=True)
class StageContext:
    settings: Settings
    client: BuildClient
    os_bases: OsBases
    source: Source
    catalogue_dir: Path
    descriptions: dict  # image name -> description, for the SIF's %help
    apptainer: Apptainer | None  # None when no stage after build runs

    @property
    def sif_dir(self) -> Path:
        return self.settings.out_dir / "sif"

    @property
    def scratch(self) -> Path:
        return self.settings.lab_dir / "scratch"
