"""Development only: the sandbox provider endpoints (enabled by SANDBOX_ENABLED) and the demo data
generator behind `manage.py seed_demo`. Nothing in the delivery path imports these modules."""
