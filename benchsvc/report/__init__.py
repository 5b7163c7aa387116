"""Static HTML reports (Altair/Vega-Lite, offline): build from DataFrames, write only what changed."""
