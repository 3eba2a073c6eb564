"""Where a study's records live: the storage root (a local folder or an object-store URI) and study ids.

Tune keeps its runs under the storage path through pyarrow's filesystems. The driver's own files
(``study.json``, the deadline, the Optuna journal) go through the same filesystems here, so an
``s3://`` (or ``gs://``) storage path works end to end — launch, interrupt, ``--resume`` from another
machine or working directory, extension, ``--list`` — exactly like a local or shared folder.
Credentials and endpoints come from the environment, as for Tune (``AWS_ACCESS_KEY_ID``,
``AWS_ENDPOINT_URL`` …).
"""

from __future__ import annotations

import functools
import secrets
import time
import uuid
from pathlib import Path

import pyarrow.fs as pafs

REMOTE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "abfs", "abfss")


def artifacts_root() -> Path:
    return Path.cwd() / "mlflow_artifacts"


def new_study_id(name: str) -> str:
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def is_remote(location: str | None) -> bool:
    return bool(location) and location.split("://", 1)[0] in REMOTE_SCHEMES and "://" in location


def storage_root(storage_path: str | None) -> str:
    """The storage root as Tune is given it: an object-store URI as is, a local path made absolute."""
    if is_remote(storage_path):
        return storage_path.rstrip("/")
    return str(Path(storage_path).expanduser().resolve() if storage_path else artifacts_root() / "tune")


@functools.lru_cache(maxsize=1)
def s3_client():
    """One boto3 S3 client per process (making one costs ~0.1 s); endpoint and credentials from the environment."""
    import boto3

    return boto3.client("s3")


class StudyDir:
    """One study's directory under the storage root, local or remote, behind one small interface."""

    def __init__(self, root: str, study_id: str):
        self.root, self.name = root, study_id
        self.uri = f"{root}/{study_id}"
        self.fs, self.path = pafs.FileSystem.from_uri(self.uri)
        self.local = None if is_remote(root) else Path(self.uri)

    @classmethod
    def of(cls, directory: "StudyDir | Path | str") -> "StudyDir":
        if isinstance(directory, StudyDir):
            return directory
        text = str(directory).rstrip("/")
        root, _, name = text.rpartition("/")
        return cls(root, name)

    def __repr__(self) -> str:
        return self.uri

    def __reduce__(self):  # pickled (with Tune's searcher) as where it is, not as a live filesystem client
        return (StudyDir, (self.root, self.name))

    def _at(self, name: str) -> str:
        return f"{self.path}/{name}" if name else self.path

    def makedirs(self, name: str = "") -> None:
        self.fs.create_dir(self._at(name), recursive=True)

    def exists(self, name: str = "") -> bool:
        return self.fs.get_file_info(self._at(name)).type != pafs.FileType.NotFound

    def read_bytes(self, name: str) -> bytes:
        with self.fs.open_input_stream(self._at(name)) as stream:
            return stream.read()

    def read_text(self, name: str) -> str:
        return self.read_bytes(name).decode()

    def write_bytes(self, name: str, data: bytes) -> None:
        """Whole or not at all: a local file via a renamed temporary, an object by one PUT."""
        self.makedirs(name.rpartition("/")[0])
        if self.local is None:
            with self.fs.open_output_stream(self._at(name)) as stream:
                stream.write(data)
            return
        tmp = self._at(f"{name}.{uuid.uuid4().hex[:8]}.tmp")
        with self.fs.open_output_stream(tmp) as stream:
            stream.write(data)
        self.fs.move(tmp, self._at(name))

    def write_text(self, name: str, text: str) -> None:
        self.write_bytes(name, text.encode())

    def delete(self, name: str) -> None:
        if self.exists(name):
            self.fs.delete_file(self._at(name))

    def _s3(self):
        """A boto3 client and the bucket/key prefix of this directory (credentials, endpoint: the environment)."""
        bucket, _, prefix = self.uri.removeprefix("s3://").partition("/")
        return s3_client(), bucket, prefix

    # S3 only (the segmented journal and the driver lease): conditional writes, batched deletes, listing from a key
    def create_if_absent(self, name: str, data: bytes) -> bool:
        """Write ``name`` only if nothing is there (``If-None-Match: *``, atomic); False if something is."""
        from botocore.exceptions import ClientError

        client, bucket, prefix = self._s3()
        try:
            client.put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=data, IfNoneMatch="*")
            return True
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise

    def read_versioned(self, name: str) -> tuple[bytes, str] | None:
        """(content, ETag) of an S3 object, or None if there is none."""
        from botocore.exceptions import ClientError

        client, bucket, prefix = self._s3()
        try:
            response = client.get_object(Bucket=bucket, Key=f"{prefix}/{name}")
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        return response["Body"].read(), response["ETag"]

    def replace_if(self, name: str, data: bytes, etag: str) -> str | None:
        """Overwrite an S3 object only if it is still the version ``etag`` (``If-Match``); its new ETag, or None."""
        from botocore.exceptions import ClientError

        client, bucket, prefix = self._s3()
        try:
            return client.put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=data, IfMatch=etag)["ETag"]
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict",
                                                              "NoSuchKey"):
                return None
            raise

    def delete_many(self, names: list[str]) -> None:
        """Delete ``names`` (absent ones are fine), 1,000 keys per request."""
        client, bucket, prefix = self._s3()
        for start in range(0, len(names), 1000):
            keys = [{"Key": f"{prefix}/{name}"} for name in names[start:start + 1000]]
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})

    def list_after(self, folder: str, starts: str, after: str = "") -> list[str]:
        """Names in ``folder`` that start with ``starts`` and sort after ``after``, listed from there
        (``Prefix`` and ``StartAfter``): a reader never pages through what it does not need."""
        client, bucket, prefix = self._s3()
        base = f"{prefix}/{folder}/"
        start = {"StartAfter": base + after} if after else {}
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base + starts, **start)
        return [item["Key"][len(base):] for page in pages for item in page.get("Contents", [])]

    def listdir(self, name: str = "") -> list[str]:
        """Names directly inside ``name`` (empty if it does not exist)."""
        infos = self.fs.get_file_info(pafs.FileSelector(self._at(name), allow_not_found=True))
        return sorted(info.base_name for info in infos)


def study_dirs(root: str) -> list[StudyDir]:
    """Every directory directly under the storage root, as a ``StudyDir`` (a study or not)."""
    fs, path = pafs.FileSystem.from_uri(root)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return [StudyDir(root, info.base_name) for info in infos if info.type == pafs.FileType.Directory]
