"""What ``ablate plan`` checks of a study's ``analyses:`` before any compute (each failure a
StudyError naming the file and field): the analysis exists in this ablate, its inputs are there
(the shape-bias folder), and Table 10's rows name arms the study has."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ablate.study import Study, StudyError


def _matches(config: dict[str, Any], match: dict[str, Any]) -> bool:
    from ablate.expand import get_path

    try:
        return all(get_path(config, k) == v for k, v in match.items())
    except KeyError:
        return False


def check_analyses(study: Study, configs: list[dict[str, Any]], file: str) -> None:
    from ablate.analyses import MODULES, available

    declared = study.analyses.declared() if study.analyses else {}
    sb = declared.get("shape_bias")
    if sb is not None:
        folder = Path(os.path.expandvars(os.path.expanduser(sb.folder)))
        if not folder.is_dir():
            raise StudyError(file, "analyses.shape_bias.folder", f"a folder of cue-conflict images (model-vs-human "
                             f"layout), got {str(folder)!r}, which does not exist")
        from ablate.analyses.shape_bias import ShapeBiasError, read_folder

        try:  # the layout too: category subfolders, <shape><n>-<texture><m>.png names, some conflict images
            read_folder(folder)
        except ShapeBiasError as e:
            raise StudyError(file, "analyses.shape_bias.folder", str(e).removeprefix("analyses.shape_bias.folder: ")) from None
    erf = declared.get("erf")
    for i, row in enumerate(erf.rows if erf else []):
        if not any(_matches(c, row.match) for c in configs):
            raise StudyError(file, f"analyses.erf.rows[{i}].match", f"config values of one of the study's trials "
                             f"(e.g. {{model.name: ...}}), got {row.match!r:.200}")
    for name in declared:
        if not available(name):
            raise StudyError(file, f"analyses.{name}", f"an analysis this ablate implements ({', '.join(sorted(MODULES))} "
                             f"are declared; '{name}' is not implemented in this version)")
