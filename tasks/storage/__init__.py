"""The working bucket: its layout, session records and leases, watermarks, video transfers."""
