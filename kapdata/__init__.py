"""KAP Outcomes core: scale registry, DuckDB storage, import, phases, outcomes, exports.

Never imports Streamlit: the app's pages call into this package.
"""

__version__ = "0.1.0"
