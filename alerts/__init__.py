"""Early warning: alert rules as reference data, the alert lifecycle in Delta, notifications via Apprise."""
