"""Grade colours shared by the label, the registry index and the Airflow page."""

from __future__ import annotations

GRADE_COLOURS = {
    "A": "#00843d",
    "B": "#4bae32",
    "C": "#b6d300",
    "D": "#ffed00",
    "E": "#fbb900",
    "F": "#ec6608",
    "G": "#e30613",
}
