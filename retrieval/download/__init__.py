"""Public benchmark sets fetched and laid out where the dataset presets read them
(`python -m retrieval.datasets prepare NAME --root DIR`).

Sets with an official download are fetched from their publishers, resumed with HTTP Range
after a dropped connection, checked (sha256/md5 where the publisher gives one; otherwise
the size and sha256 seen are recorded in `<root>/.prepare/<name>.json` and checked on every
later run), and archives are unpacked safely (no path escapes, no links) into place. Sets
without one print the manual steps and the layout the loaders expect.

Sources are data (`sources.SOURCES`); `--mirror URL` fetches every file from `URL/<path>`
instead, for a local copy or a test server.

Modules: `sources` (the sets: addresses, layouts, manual steps), `fetch` (HTTP with resume and
retries, checksums), `archives` (safe unpacking), `prepare` (one set into place, recorded in its
manifest), `cli`.
"""


class DownloadError(RuntimeError):
    """A file could not be fetched or failed its check; nothing is left in its final place."""
