"""HTTP server: webhooks, redirects, API, dashboard, metrics."""
