"""The static files storage: content-hashed, compressed names once collected, plain names before.

`collectstatic` (run by `ailuro up` and by every deployment) writes each file a second time under
a name carrying its content hash, with a gzip copy beside it, and a manifest of the names.
`{% static %}` then links the hashed names, and whitenoise serves them pre-compressed with a
year-long `immutable` Cache-Control: a new release changes the names, so no browser keeps an old
copy. A checkout where nothing was collected yet (the test suite, `runserver`) links the plain
names instead, which whitenoise serves from the app folders (`WHITENOISE_USE_FINDERS`) with a short
max-age, rather than failing every page on the missing manifest.
"""

from __future__ import annotations

from whitenoise.storage import CompressedManifestStaticFilesStorage


class HashedStaticFilesStorage(CompressedManifestStaticFilesStorage):
    def stored_name(self, name: str) -> str:
        try:
            return str(super().stored_name(name))
        except ValueError:  # not in the manifest: nothing collected yet, or a file newer than it
            return name
