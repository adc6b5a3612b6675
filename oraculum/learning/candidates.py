"""The candidate catalogue: every pool spectrum the network predicts as a target, as CSV and VOTable.

An iteration streams the whole pool through the network once; the rows of the predicted targets
go straight to two files (:class:`CandidateWriter`), so the catalogue is never held in memory,
however large the pool. The VOTable (1.4, TABLEDATA) carries units and UCDs for TOPCAT and other
VO tools; positions are J2000 degrees from the archive headers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from oraculum.spectra.datasets import Batch

__all__ = ["CANDIDATE_COLUMNS", "CandidateWriter", "candidate_rows"]

#: Candidate catalogue columns: name, VOTable datatype, unit, UCD, description.
CANDIDATE_COLUMNS: list[tuple[str, str, str | None, str, str]] = [
    ("id", "char", None, "meta.id;meta.main", "Spectrum id (source file key without extension)"),
    ("index", "long", None, "meta.record", "Global index of the spectrum in the pool dataset"),
    ("ra", "double", "deg", "pos.eq.ra;meta.main", "Right ascension (J2000)"),
    ("dec", "double", "deg", "pos.eq.dec;meta.main", "Declination (J2000)"),
    ("obsid", "long", None, "meta.id", "Archive observation id (LAMOST OBSID); null if unknown"),
    ("designation", "char", None, "meta.id", "Archive designation"),
    ("snr", "double", None, "stat.snr", "Signal-to-noise ratio from the archive header"),
    ("predicted", "char", None, "src.class", "Predicted class"),
    ("probability", "double", None, "stat.probability", "Network probability of the predicted class"),
    ("label", "char", None, "meta.code.class", "The oracle's label, if the spectrum was labelled"),
]


class CandidateWriter:
    """Streams candidate rows to a CSV file and a VOTable (TABLEDATA) file, row group by row group.

    The VOTable is written by hand so that it never holds the catalogue in memory; it follows
    VOTable 1.4 and is read back with astropy in the tests (and by TOPCAT).
    """

    def __init__(self, csv_path: Path, vot_path: Path, description: str) -> None:
        import csv

        self.rows = 0
        self._csv_handle = open(csv_path, "w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._csv_handle, lineterminator="\n")
        self._csv.writerow([c[0] for c in CANDIDATE_COLUMNS])
        self._vot = open(vot_path, "w", encoding="utf-8")
        self._vot.write('<?xml version="1.0" encoding="utf-8"?>\n')
        self._vot.write(
            '<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
        )
        self._vot.write(f' <RESOURCE type="results">\n  <DESCRIPTION>{escape(description)}</DESCRIPTION>\n')
        self._vot.write('  <TABLE name="candidates">\n')
        for name, datatype, unit, ucd, text in CANDIDATE_COLUMNS:
            extra = ' arraysize="*"' if datatype == "char" else ""
            extra += f" unit={quoteattr(unit)}" if unit else ""
            null = '<VALUES null="-1"/>' if name == "obsid" else ""
            self._vot.write(
                f"   <FIELD name={quoteattr(name)} datatype={quoteattr(datatype)}{extra} ucd={quoteattr(ucd)}>"
                f"<DESCRIPTION>{escape(text)}</DESCRIPTION>{null}</FIELD>\n"
            )
        self._vot.write("   <DATA>\n    <TABLEDATA>\n")

    def write(self, rows: list[list[Any]]) -> None:
        lines = []
        for row in rows:
            self._csv.writerow(["" if isinstance(v, float) and not math.isfinite(v) else v for v in row])
            cells = []
            for value in row:
                if isinstance(value, float):
                    cells.append("NaN" if not math.isfinite(value) else repr(value))
                else:
                    cells.append(escape(str(value)))
            lines.append("     <TR>" + "".join(f"<TD>{cell}</TD>" for cell in cells) + "</TR>\n")
        self._vot.write("".join(lines))
        self.rows += len(rows)

    def close(self) -> None:
        self._vot.write("    </TABLEDATA>\n   </DATA>\n  </TABLE>\n </RESOURCE>\n</VOTABLE>\n")
        self._vot.close()
        self._csv_handle.close()


def candidate_rows(
    batch: Batch, probs: np.ndarray, predicted: np.ndarray, targets: np.ndarray, classes: Sequence[str], known: dict[int, str]
) -> list[list[Any]]:
    rows = []
    for position in np.flatnonzero(np.isin(predicted, targets)).tolist():
        index = int(batch.index[position])
        c = int(predicted[position])
        meta = batch.meta
        rows.append([
            str(batch.ids[position]),
            index,
            float(meta["ra_deg"][position]),
            float(meta["dec_deg"][position]),
            int(meta["obsid"][position]),
            str(meta["designation"][position]),
            float(meta["snr"][position]),
            classes[c],
            float(probs[position, c]),
            known.get(index, ""),
        ])
    return rows
