"""Tune's view of an object store: the same bucket, without directory marker objects.

Before each new trial the driver saves Tune's experiment state (``study.search.schedulers``), and Tune
uploads its whole local experiment folder to the storage path. That folder holds one (empty) folder per
trial, and pyarrow's S3 filesystem creates a marker object for every folder it copies, on every upload:
O(trials) requests per snapshot, O(trials²) over a study — 0.7 s per snapshot at ~100 trials on a
loopback server, the most of the driver's time on S3 (docs/performance.md). An object store needs no
folders (a key's prefix is its folder, and listing by prefix finds it), so here creating one is a no-op;
everything else goes to pyarrow's own filesystem unchanged. Tune takes it through its public
``storage_filesystem`` setting, and ships it to the trials with their storage context.
"""

from __future__ import annotations

import pyarrow.fs as pafs


class MarkerlessHandler(pafs.FileSystemHandler):
    """pyarrow's filesystem for ``inner`` where ``create_dir`` writes nothing (see the module's docstring)."""

    def __init__(self, inner: pafs.FileSystem):
        self.inner = inner

    def __reduce__(self):  # pickled into every trial's storage context
        return MarkerlessHandler, (self.inner,)

    def __eq__(self, other):
        return isinstance(other, MarkerlessHandler) and self.inner.equals(other.inner)

    def __ne__(self, other):
        return not self == other

    def get_type_name(self):
        return f"markerless-{self.inner.type_name}"

    def normalize_path(self, path):
        return self.inner.normalize_path(path)

    def get_file_info(self, paths):
        return self.inner.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.inner.get_file_info(selector)

    def create_dir(self, path, recursive):
        pass  # the point of this class: a key's prefix is its folder

    def delete_dir(self, path):
        self.inner.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.inner.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        self.inner.delete_dir_contents("/", accept_root_dir=True)

    def delete_file(self, path):
        self.inner.delete_file(path)

    def move(self, src, dest):
        self.inner.move(src, dest)

    def copy_file(self, src, dest):
        self.inner.copy_file(src, dest)

    def open_input_stream(self, path):
        return self.inner.open_input_stream(path)

    def open_input_file(self, path):
        return self.inner.open_input_file(path)

    def open_output_stream(self, path, metadata):
        return self.inner.open_output_stream(path, metadata=metadata)

    def open_append_stream(self, path, metadata):
        return self.inner.open_append_stream(path, metadata=metadata)


def tune_storage(uri: str) -> tuple[str, pafs.FileSystem | None]:
    """Tune's ``storage_path`` and ``storage_filesystem`` for a storage URI: a local path stays as it is;
    an object store's URI becomes its path in pyarrow's filesystem for it, wrapped as above."""
    if "://" not in uri or uri.startswith("file://"):
        return uri, None
    inner, path = pafs.FileSystem.from_uri(uri)
    return path, pafs.PyFileSystem(MarkerlessHandler(inner))
