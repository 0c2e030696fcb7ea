# Temporary: replaced by the front-half branch's module at merge.
from messaging.services import workspace_get, workspace_get_or_create, workspace_lookup  # noqa: F401
