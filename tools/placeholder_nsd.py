"""Write a placeholder NSD release of EMPTY files, for dry-runs of the real-NSD configs.

    python tools/placeholder_nsd.py DIR [--subjects subj01 subj02 subj05 subj07]
    snakemake -n --configfile config/nsd_paper.yaml --config nsd_root=DIR

Creates every file the workflow's rules take as input (``NSDLayout.subject_inputs``,
``NSDLayout.stimulus_inputs`` and the stimuli HDF5), each empty, in the NSD release
layout. Betas are not created: the ingest finds them per session at run time, so a
real run against this tree fails in ingest, naming the first missing file; it is
for ``snakemake -n`` only. An existing non-empty file is never touched (pointing this
at a real release by mistake changes nothing there).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from brainalign.data.nsd import NSDLayout

PAPER_SUBJECTS = ("subj01", "subj02", "subj05", "subj07")


def placeholder_paths(root: Path, subjects: list[str]) -> list[Path]:
    """Every NSD file the workflow's inputs name for ``subjects``, sorted and unique."""
    layout = NSDLayout(root)
    paths = {layout.stimuli, layout.fsaverage_labels("lh"), layout.fsaverage_labels("rh")}
    for s in subjects:
        paths.update(layout.subject_inputs(s))
        paths.update(layout.stimulus_inputs(s))
    return sorted(paths)


def write_placeholder(root: Path, subjects: list[str]) -> tuple[int, int]:
    """Create the empty files; returns (created, left alone because they exist)."""
    created = kept = 0
    for path in placeholder_paths(Path(root), subjects):
        if path.exists():
            kept += 1
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        created += 1
    return created, kept


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", type=Path, help="directory to write the placeholder release into")
    ap.add_argument("--subjects", nargs="+", default=list(PAPER_SUBJECTS),
                    help=f"NSD subjects (default: {' '.join(PAPER_SUBJECTS)})")
    args = ap.parse_args(argv)
    created, kept = write_placeholder(args.root, args.subjects)
    print(f"{args.root}: {created} empty placeholder files created, {kept} already there (left alone)")


if __name__ == "__main__":
    main()
