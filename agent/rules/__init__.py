"""rules.yaml: schema, rule engine, templates (pure)."""
