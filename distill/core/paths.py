"""Where a run's files live: `<run.root>/<run.name>/<stage>/`, resolved against the launch directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Paths:
    base: Path  # directory that relative config paths are resolved against
    run_dir: Path

    @classmethod
    def for_run(cls, root: str, name: str, base: str | Path | None = None) -> Paths:
        base = Path(base) if base is not None else Path.cwd()
        root_path = Path(root) if Path(root).is_absolute() else base / root
        return cls(base=base, run_dir=root_path / name)

    def stage_dir(self, stage: str) -> Path:
        return self.run_dir / stage

    def resolve(self, p: str | Path) -> Path:
        """A config path: absolute, relative to the launch dir, or else relative to the repo (shipped data)."""
        p = Path(p)
        if p.is_absolute():
            return p
        if (self.base / p).exists():
            return self.base / p
        if (REPO_ROOT / p).exists():
            return REPO_ROOT / p
        return self.base / p
