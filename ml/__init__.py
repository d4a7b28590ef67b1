"""Risk models: cell x week hotspot maps and district x domain forecasts, scored against baselines."""
