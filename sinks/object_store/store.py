"""The storage behind the sink: a local directory, or any fsspec store (S3 API via s3fs).

Three operations are all the sink needs: put a whole object (atomically: a
reader never sees half an object), get one, and ask whether one exists. A
local object is written to a hidden temporary file, fsynced and renamed; an
S3 PUT (or completed multipart upload) is atomic by itself.

Errors are sorted for the pipeline: a missing bucket or a refused permission
is a :class:`FatalError` (retrying cannot fix it), anything else (connection
lost, throttled, disk full) a :class:`RetriableError`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from etl.errors import FatalError, RetriableError
from sinks.object_store.config import ObjectStoreSinkConfig

T = TypeVar("T")
_FATAL = (FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError)


class ObjectStore:
    """Put/get/exists of whole objects below ``root``."""

    #: Path prefix of every object (``/abs/dir`` or ``bucket/prefix``).
    root: str = ""
    #: For messages: where the objects go (no credentials).
    location: str = ""

    async def open(self) -> None:
        """Connect and check that the destination exists."""

    async def put(self, path: str, data: bytes) -> None:
        """Write a whole object (replacing one of the same name)."""
        raise NotImplementedError

    async def get(self, path: str) -> bytes | None:
        """The object's bytes, or None when it does not exist."""
        raise NotImplementedError

    async def exists(self, path: str) -> bool:
        """Whether the object exists."""
        raise NotImplementedError

    async def delete(self, path: str, *, tree: bool = False) -> None:
        """Remove the object (``tree``: everything below ``path``); a missing one is fine."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release connections."""

    async def _guard(self, what: str, path: str, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except (FatalError, RetriableError, asyncio.CancelledError):
            raise
        except _FATAL as exc:
            raise FatalError(f"object store {what} {path} failed: {_describe(exc)}") from exc
        except (TypeError, AttributeError):
            raise
        except Exception as exc:
            raise RetriableError(f"object store {what} {path} failed: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class LocalStore(ObjectStore):
    """A directory on a local (or mounted) file system."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = str(root)
        self.location = str(root)
        self.fsync = fsync

    async def open(self) -> None:
        await self._guard("create directory", self.root, lambda: _thread(_mkdir, self.root))

    async def put(self, path: str, data: bytes) -> None:
        await self._guard("write", path, lambda: _thread(_write_atomic, path, data, self.fsync))

    async def get(self, path: str) -> bytes | None:
        return await self._guard("read", path, lambda: _thread(_read_or_none, path))

    async def exists(self, path: str) -> bool:
        return await asyncio.to_thread(os.path.exists, path)

    async def delete(self, path: str, *, tree: bool = False) -> None:
        await self._guard("delete", path, lambda: _thread(_remove, path, tree))


async def _thread(func: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(func, *args)


def _mkdir(path: str) -> None:
    os.makedirs(path, exist_ok=True)


def _remove(path: str, tree: bool) -> None:
    import shutil

    try:
        if tree and os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    except FileNotFoundError:
        pass


def _read_or_none(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def _write_atomic(path: str, data: bytes, fsync: bool) -> None:
    directory, name = os.path.split(path)
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f".{name}.tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        if fsync:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(temporary, path)
    if fsync:
        # The rename is durable only once the directory entry is on disk.
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


class FsspecStore(ObjectStore):
    """Any fsspec file system; async ones (s3fs) are awaited, others run in a thread."""

    def __init__(self, url: str, options: dict[str, Any]) -> None:
        import fsspec

        protocol = urlsplit(url).scheme
        cls = fsspec.get_filesystem_class(protocol)
        self.is_async = bool(getattr(cls, "async_impl", False))
        self.is_s3 = protocol in ("s3", "s3a")
        if self.is_async:
            options = {**options, "asynchronous": True}
        fs, root = fsspec.core.url_to_fs(url, skip_instance_cache=True, **options)
        self.fs: Any = fs
        self.root = root.rstrip("/")
        self.location = f"{protocol}://{self.root}"
        self._session: Any = None

    async def open(self) -> None:
        if self.is_s3:
            self._session = await self._guard("connect", self.location, self.fs.set_session)
            bucket = self.root.split("/", 1)[0]
            if not await self._guard("check bucket", bucket, lambda: self.fs._exists(bucket)):
                raise FatalError(
                    f"object store bucket {bucket!r} does not exist or is not readable"
                )

    async def put(self, path: str, data: bytes) -> None:
        if self.is_async:
            await self._guard("write", path, lambda: self.fs._pipe_file(path, data))
        else:
            await self._guard("write", path, lambda: _thread(self.fs.pipe_file, path, data))

    async def get(self, path: str) -> bytes | None:
        try:
            if self.is_async:
                data: bytes = await self._guard("read", path, lambda: self.fs._cat_file(path))
            else:
                data = await self._guard("read", path, lambda: _thread(self.fs.cat_file, path))
        except FatalError as exc:
            if isinstance(exc.__cause__, FileNotFoundError):
                return None
            raise
        return data

    async def exists(self, path: str) -> bool:
        self.fs.invalidate_cache(path)
        try:
            if self.is_async:
                await self._guard("check", path, lambda: self.fs._info(path))
            else:
                await self._guard("check", path, lambda: _thread(self.fs.info, path))
        except FatalError as exc:
            if isinstance(exc.__cause__, FileNotFoundError):
                return False
            raise
        return True

    async def delete(self, path: str, *, tree: bool = False) -> None:
        if not await self.exists(path) and not tree:
            return
        try:
            if self.is_async:
                await self._guard("delete", path, lambda: self.fs._rm(path, recursive=tree))
            else:
                await self._guard("delete", path, lambda: _thread(self.fs.rm, path, tree))
        except FatalError as exc:
            if not isinstance(exc.__cause__, FileNotFoundError):
                raise

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def s3_options(config: ObjectStoreSinkConfig) -> dict[str, Any]:
    """s3fs options from the sink's config (endpoint, credentials, TLS, addressing)."""
    client: dict[str, Any] = {}
    if config.region:
        client["region_name"] = config.region
    if config.ca_bundle:
        client["verify"] = config.ca_bundle
    elif not config.verify_tls:
        client["verify"] = False
    options: dict[str, Any] = {"client_kwargs": client}
    if config.endpoint_url:
        options["endpoint_url"] = config.endpoint_url
    if config.access_key is not None:
        options["key"] = config.access_key.get_secret_value()
    if config.secret_key is not None:
        options["secret"] = config.secret_key.get_secret_value()
    if config.session_token is not None:
        options["token"] = config.session_token.get_secret_value()
    if config.addressing_style != "auto":
        options["config_kwargs"] = {"s3": {"addressing_style": config.addressing_style}}
    return options


def make_store(config: ObjectStoreSinkConfig, default_dir: Path, base_dir: Path) -> ObjectStore:
    """The store the ``url`` option names; a relative local path is taken from ``base_dir``."""
    url = config.url
    if not url:
        return LocalStore(default_dir, fsync=config.fsync)
    parts = urlsplit(url)
    if parts.scheme in ("", "file", "local"):
        path = Path(unquote(parts.netloc + parts.path) if parts.scheme else url).expanduser()
        return LocalStore(path if path.is_absolute() else base_dir / path, fsync=config.fsync)
    options = dict(config.storage_options)
    if parts.scheme in ("s3", "s3a"):
        options = {**s3_options(config), **options}
    return FsspecStore(url, options)
