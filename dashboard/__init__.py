"""Streamlit dashboard over run directories (reads run directories only)."""
