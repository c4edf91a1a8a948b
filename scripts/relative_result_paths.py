"""Rewrites committed ``results/**/run.json`` and ``experiment.json`` files so that they name no
machine's absolute path: data under the data root as the experiment file names it
(``/work/shared/data/ner/x.txt`` -> ``../shared/data/ner/x.txt``) and paths under the project
root relative to it. ``structkd experiment`` records paths this way itself since issue 14; this
fixes the files written before. Idempotent.

    python scripts/relative_result_paths.py results --data-root /work/shared/data
    structkd report results --out docs/results.md      # then regenerate the report
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import Any

from structkd.lab.experiment import portable


def _rename(value: Any, roots: list[tuple[Path, str]], key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _rename(v, roots, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_rename(v, roots, key) for v in value]
    if not isinstance(value, str):
        return value
    if key == "command":
        return shlex.join(portable(token, roots) for token in shlex.split(value))
    return portable(value, roots)


def rewrite(results: Path, data_root: Path, project: Path) -> list[Path]:
    """Rewrites every record under ``results`` in place; returns the files that changed."""
    changed = []
    for experiment in sorted(p for p in results.iterdir() if (p / "experiment.json").exists()):
        meta = json.loads((experiment / "experiment.json").read_text(encoding="utf-8"))
        spelled = str(meta.get("spec", {}).get("data_root", "."))
        roots = [(data_root, spelled), (project, ".")]
        meta_file = experiment / "experiment.json"
        for path in [meta_file, *sorted(experiment.glob("*/run.json"))]:
            text = path.read_text(encoding="utf-8")
            record = _rename(json.loads(text), roots)
            if path == meta_file:
                record["data_root"] = spelled
            new = json.dumps(record, indent=1, ensure_ascii=False) + "\n"
            if new != text:
                path.write_text(new, encoding="utf-8")
                changed.append(path)
    return changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="results root (one folder per experiment)")
    parser.add_argument("--data-root", type=Path, required=True, help="the absolute data root")
    parser.add_argument("--project", type=Path, default=Path.cwd(), help="the project root")
    args = parser.parse_args()
    changed = rewrite(args.results, args.data_root, args.project)
    print(f"{len(changed)} files rewritten")


if __name__ == "__main__":
    main()
