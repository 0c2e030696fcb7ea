"""One client per outbound API, sharing `base.ProviderClient` for timeouts, headers and errors."""
