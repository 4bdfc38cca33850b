"""The OCI distribution API: references, auth, retries and the client."""
