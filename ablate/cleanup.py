"""``ablate gc``: free the artifact store of what a study no longer needs.

Two kinds of files go: checkpoints (and weights) of *completed* trials that the study's
``artifacts.keep`` does not keep, and the folders of trials that the study file (in any of its
profiles) no longer declares. Unfinished trials keep their checkpoints: they are how a rerun resumes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ablate.artifacts import BEST, CKPT_DIR, WEIGHTS, ArtifactStore
from ablate.expand import expand
from ablate.study import load_study, profile_names


@dataclass
class Removal:
    path: str  # in the store's filesystem
    shown: str  # as the user names the store (URI scheme kept)
    bytes: int
    why: str


@dataclass
class GcReport:
    removals: list[Removal] = field(default_factory=list)
    kept_bytes: int = 0

    @property
    def freed(self) -> int:
        return sum(r.bytes for r in self.removals)


def declared_ids(path: str | Path) -> tuple[str, set[str], dict[str | None, list[str]]]:
    """The study's name, the trial ids of every profile of the file, and each profile's keep list."""
    ids: set[str] = set()
    keep: dict[str | None, list[str]] = {}
    name = ""
    for profile in [None, *profile_names(path)]:
        study = load_study(path, profile)
        name = study.name
        keep[profile] = list(study.artifacts.keep)
        ids |= {t.id for t in expand(study, path)}
    return name, ids, keep


def plan_gc(path: str | Path, completed: set[str], files: ArtifactStore, profile: str | None = None) -> GcReport:
    """What ``gc`` removes (nothing is removed here). ``completed``: ids the database holds as completed;
    ``profile`` decides which ``artifacts.keep`` applies to them."""
    name, ids, keeps = declared_ids(path)
    keep = set(keeps.get(profile, keeps[None]))
    report = GcReport()
    for tid in sorted(files.trials(name)):
        folder = files.trial_dir(name, tid)
        size = files.size(folder)
        if tid not in ids:
            report.removals.append(Removal(folder, files.display(folder), size,
                                           "trial no longer declared by the study file"))
            continue
        if tid in completed:
            drop = {CKPT_DIR: "last_checkpoint", WEIGHTS: "final", BEST: "best"}
            for item, needed in drop.items():
                p = files.path(name, tid, item)
                if needed not in keep and files.exists(p):
                    n = files.size(p)
                    report.removals.append(Removal(p, files.display(p), n,
                                                   f"completed trial; artifacts.keep has no '{needed}'"))
                    size -= n
        report.kept_bytes += size
    return report


def apply_gc(report: GcReport, files: ArtifactStore) -> None:
    for r in report.removals:
        files.delete(r.path)
