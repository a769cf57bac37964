"""The GCS side of the mirror: bucket URLs, the client, the listing, and which errors are retried."""

from __future__ import annotations

import logging
import os
from typing import Iterator

from tqdm import tqdm

from sign_vq.errors import UserError

log = logging.getLogger(__name__)
LIST_FIELDS = "items(name,size,crc32c,generation),nextPageToken"


def parse_bucket_url(url: str) -> tuple[str, str]:
    """`gs://bucket/some/prefix` -> ("bucket", "some/prefix/"); the prefix is empty or ends with "/"."""
    if not url.startswith("gs://"):
        raise UserError(f"--bucket {url!r}: expected gs://BUCKET[/PREFIX]")
    bucket, _, prefix = url[len("gs://"):].partition("/")
    if not bucket or any(c in bucket for c in " \\\0") or bucket in {".", ".."}:
        raise UserError(f"--bucket {url!r}: bad bucket name {bucket!r}")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


def make_client(anonymous: bool = False):
    """A storage client: Application Default Credentials, else anonymous (public buckets, emulators)."""
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud import storage

    if anonymous:
        return storage.Client.create_anonymous_client()
    try:
        # project is not needed to read; None skips the lookup that fails for credentials without a project
        return storage.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT"))
    except DefaultCredentialsError:
        log.info("no Google credentials found: using an anonymous client (public buckets only)")
        return storage.Client.create_anonymous_client()


def retryable_errors() -> tuple[type[BaseException], ...]:
    import requests
    import urllib3
    from google.api_core import exceptions as api
    from google.resumable_media import common

    return (
        ChecksumMismatch, ConnectionError, TimeoutError, requests.RequestException, urllib3.exceptions.HTTPError,
        api.ServerError, api.TooManyRequests, api.RequestRangeNotSatisfiable, common.InvalidResponse,
        common.DataCorruption,
    )


def bounded_retry(timeout: float, retries: int, retry_wait: float):
    """The client library's retry bounded by the run's flags: ``retries`` more attempts of ``timeout`` seconds
    each, the first wait ``retry_wait`` (the library's own default retries for 120 s whatever the flags say)."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_delay(initial=retry_wait, maximum=30.0).with_timeout(
        (retries + 1) * (timeout + retry_wait)
    )


def list_bucket(client, bucket: str, prefix: str, *, timeout: float = 120.0, retries: int = 5,
                retry_wait: float = 0.5) -> Iterator[tuple[str, int, str | None, int]]:
    """(full name, size, crc32c, generation) of every object under ``prefix``: one paginated listing, each page
    request bounded by ``timeout`` and :func:`bounded_retry`."""
    from google.api_core import exceptions as api
    from google.auth.exceptions import GoogleAuthError

    url = f"gs://{bucket}/{prefix}"
    pages = client.list_blobs(bucket, prefix=prefix, fields=LIST_FIELDS, timeout=timeout,
                              retry=bounded_retry(timeout, retries, retry_wait))
    try:
        for blob in tqdm(pages, desc="list", unit="obj", disable=None):
            yield blob.name, int(blob.size or 0), blob.crc32c, int(blob.generation or 0)
    except api.NotFound:
        raise UserError(f"{url}: bucket not found") from None
    except (api.Forbidden, api.Unauthorized) as error:
        raise UserError(f"{url}: access denied ({error.message}); check the credentials "
                        "(gcloud auth application-default login) or use --anonymous for a public bucket") from None
    except api.RetryError as error:
        raise UserError(f"{url}: no answer within --timeout {timeout:g} s and --retries {retries} "
                        f"({str(error.cause).splitlines()[0]}); check the network or raise the flags") from None
    except (api.GoogleAPIError, GoogleAuthError) as error:
        raise UserError(f"{url}: cannot list the bucket: {error}") from None
    except OSError as error:
        raise UserError(f"{url}: cannot reach the storage service: {error}") from None


class ChecksumMismatch(Exception):
    """The downloaded bytes do not have the listed size or crc32c."""
