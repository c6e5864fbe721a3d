"""HTTP client for RCML fetches and status callbacks."""
