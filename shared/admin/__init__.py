"""The dashboard's domain: admin accounts, the audit log, portal links and read-only statistics."""
