"""Authentication, tenants and fair use: API keys and JWTs (identities with an org, a user and a
role), the checks every RPC passes (guard.py, called from server/service.py), and per-org limits."""
