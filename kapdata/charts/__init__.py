"""Plotly figure builders: data in, figure out (no Streamlit). One module per area of the app."""

from kapdata.charts.common import INSTRUMENT_COLORS, PHASE_COLORS, base_layout, scores_by_phase

__all__ = ["INSTRUMENT_COLORS", "PHASE_COLORS", "base_layout", "scores_by_phase"]
