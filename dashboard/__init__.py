"""Streamlit dashboard over run directories: it reads run directories only (through ``poison.ground.results.rundir``)
and imports nothing of the orchestrator or the plugins."""
