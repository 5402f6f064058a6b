from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup(set_prefix=False)

from core.middleware import PilotLaneWSGIHandler  # noqa: E402  (needs the settings above)

# get_wsgi_application() with a lean middleware chain for the pilot protocol's hot calls.
application = PilotLaneWSGIHandler()
