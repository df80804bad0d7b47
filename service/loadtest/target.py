"""What a load test sends: the endpoint's requests with fresh seeds, and the target's checks.

A request is built from precomputed parts so that the hot loop does little more than bump a
seed counter; the preflight turns an unusable target into one clear `TargetError`.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

import httpx

Endpoint = Literal["single", "batch", "get"]
ENDPOINTS: tuple[Endpoint, ...] = ("single", "batch", "get")
# v1: this service's API (POST .../generate[/batch], GET .../images/{seed}.png); v2: the Open
# Inference Protocol over REST (POST /v2/models/{model}/infer: `seed` as a JSON tensor, the
# `png` output as binary data, as tritonclient asks for it).
Protocol = Literal["v1", "v2"]
PROTOCOLS: tuple[Protocol, ...] = ("v1", "v2")
MAX_SEED = 2**63


class TargetError(Exception):
    """The target cannot be load-tested (refused, unknown model, wrong key); one-line message."""


@dataclass(frozen=True)
class Target:
    base_url: str
    model: str
    endpoint: Endpoint = "single"
    items: int = 1  # images per request (batch endpoint only)
    api_key: str | None = None
    protocol: Protocol = "v1"
    # Class-conditional models: a class name or index for every request, or "random" (a
    # random class per image); None: no class (a seed's own class, seed % num_classes).
    class_choice: str | None = None

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol}")
        if self.protocol == "v2" and self.endpoint == "get":
            raise ValueError("the v2 protocol has no GET image route: use single or batch")
        if self.endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint must be one of {', '.join(ENDPOINTS)}, got {self.endpoint}")
        if self.items < 1:
            raise ValueError(f"items must be >= 1, got {self.items}")
        if self.endpoint != "batch" and self.items != 1:
            raise ValueError("items applies to the batch endpoint only")

    @property
    def images_per_request(self) -> int:
        return self.items

    @property
    def headers(self) -> dict[str, str]:
        if self.protocol == "v2":
            headers = {}
        else:
            headers = {"accept": "application/json" if self.endpoint == "batch" else "image/png"}
        if self.endpoint != "get":
            headers["content-type"] = "application/json"
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        return headers

    @property
    def model_url(self) -> str:
        return f"{self.base_url.rstrip('/')}/{self.protocol}/models/{quote(self.model, safe='')}"


class RequestFactory:
    """The next request, as httpx arguments or as ready HTTP/1.1 bytes for the lean transport.

    Every request gets seeds never used before in this run. `classes` (the model's class
    names, from the preflight) turn the target's class choice into class indices.
    """

    def __init__(
        self, target: Target, first_seed: int | None = None, classes: Sequence[str] = ()
    ) -> None:
        self.target = target
        self._next_seed = secrets.randbelow(MAX_SEED // 2) if first_seed is None else first_seed
        self._num_classes = len(classes)
        self._random_class = target.class_choice == "random"
        self._class_rng = random.Random(first_seed)
        self._fixed_class: int | None = None
        if target.class_choice is not None and not self._random_class:
            self._fixed_class = class_index(target.class_choice, classes)
        model_url = target.model_url
        v2 = target.protocol == "v2"
        self._v2 = v2
        self._generate_url = f"{model_url}/infer" if v2 else f"{model_url}/generate"
        self._batch_url = f"{model_url}/infer" if v2 else f"{model_url}/generate/batch"
        self._image_prefix = f"{model_url}/images/"
        self.headers = target.headers
        url = httpx.URL(target.base_url)
        self.address: tuple[str, int] = (url.host, url.port or 80)
        host = url.netloc
        base = url.raw_path.rstrip(b"/")
        version = target.protocol.encode()
        model_path = base + b"/" + version + b"/models/" + quote(target.model, safe="").encode()
        generate, batch = (b"/infer", b"/infer") if v2 else (b"/generate", b"/generate/batch")
        fields = b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in self.headers.items())
        self._post_generate = (
            b"POST " + model_path + generate + b" HTTP/1.1\r\nhost: " + host + b"\r\n" + fields
        )
        self._post_batch = (
            b"POST " + model_path + batch + b" HTTP/1.1\r\nhost: " + host + b"\r\n" + fields
        )
        self._get_image = b"GET " + model_path + b"/images/"
        self._get_tail = b".png HTTP/1.1\r\nhost: " + host + b"\r\n" + fields + b"\r\n"
        self.healthz_payload = b"GET " + base + b"/healthz HTTP/1.1\r\nhost: " + host + b"\r\n\r\n"

    def _take_seeds(self, count: int) -> int:
        seed = self._next_seed
        if seed + count > MAX_SEED:  # wrap so that a batch's seeds stay below MAX_SEED
            seed = 0
        self._next_seed = seed + count
        return seed

    def _class(self) -> int | None:
        if self._random_class:
            return self._class_rng.randrange(self._num_classes)
        return self._fixed_class

    def _body(self) -> bytes:
        if self._v2:
            count = self.target.items
            first = self._take_seeds(count)
            seeds = b",".join(b"%d" % seed for seed in range(first, first + count))
            return b"%s%d%s%s%s" % (_V2_HEAD, count, _V2_DATA, seeds, _V2_TAIL)
        if self.target.endpoint == "single":
            seed = self._take_seeds(1)
            chosen = self._class()
            if chosen is None:
                return b'{"seed":%d}' % seed
            return b'{"seed":%d,"class":%d}' % (seed, chosen)
        count = self.target.items
        seed = self._take_seeds(count)
        if self._random_class:
            classes = b",".join(
                b"%d" % self._class_rng.randrange(self._num_classes) for _ in range(count)
            )
            return b'{"count":%d,"seed":%d,"classes":[%s]}' % (count, seed, classes)
        if self._fixed_class is not None:
            return b'{"count":%d,"seed":%d,"class":%d}' % (count, seed, self._fixed_class)
        return b'{"count":%d,"seed":%d}' % (count, seed)

    def _query(self) -> str:
        chosen = self._class()
        return "" if chosen is None else f"?class={chosen}"

    def next(self) -> tuple[str, str, bytes | None]:
        """Method, URL and body of the next request (for an httpx client)."""
        endpoint = self.target.endpoint
        if endpoint == "get":
            return "GET", f"{self._image_prefix}{self._take_seeds(1)}.png{self._query()}", None
        url = self._generate_url if endpoint == "single" else self._batch_url
        return "POST", url, self._body()

    def next_payload(self) -> bytes:
        """The next request as HTTP/1.1 bytes (for the lean transport)."""
        endpoint = self.target.endpoint
        if endpoint == "get":
            seed = self._take_seeds(1)
            if self._fixed_class is None and not self._random_class:
                return b"%s%d%s" % (self._get_image, seed, self._get_tail)
            query = self._query().encode()
            return b"%s%d.png%s%s" % (self._get_image, seed, query, self._get_tail[4:])
        head = self._post_generate if endpoint == "single" else self._post_batch
        body = self._body()
        return b"%scontent-length: %d\r\n\r\n%s" % (head, len(body), body)


_V2_HEAD = b'{"inputs":[{"name":"seed","datatype":"INT64","shape":['
_V2_DATA = b'],"data":['
_V2_TAIL = b']}],"outputs":[{"name":"png","parameters":{"binary_data":true}}]}'


def error_kind(error: BaseException) -> str:
    """How a failed request is counted: the client-side error's class name."""
    if isinstance(error, httpx.TimeoutException):
        return "timeout"
    return type(error).__name__


def _server_message(response: httpx.Response) -> str:
    try:
        body = response.json()
        error = body["error"]
        message = error if isinstance(error, str) else error["message"]  # v2 : v1
        if isinstance(message, str) and message:
            return message
    except (ValueError, KeyError, TypeError):
        pass
    text = response.text.strip().replace("\n", " ")
    return text[:200] or response.reason_phrase


def class_index(choice: str, classes: Sequence[str]) -> int:
    """A class name (case-insensitive) or index among `classes`; ValueError otherwise."""
    folded = [name.casefold() for name in classes]
    text = choice.strip()
    if text.casefold() in folded:
        return folded.index(text.casefold())
    if text.isdigit() and int(text) < len(classes):
        return int(text)
    listed = ", ".join(f"{i} {name!r}" for i, name in enumerate(classes))
    raise ValueError(f"{choice!r} is not a class of the model; choose 'random' or one of: {listed}")


def check_class_choice(target: Target, classes: Sequence[str]) -> None:
    """TargetError when --class does not fit the model (unconditional, or an unknown class)."""
    if target.class_choice is None:
        return
    if not classes:
        raise TargetError(f"model {target.model} is not class-conditional; drop --class")
    if target.class_choice != "random":
        try:
            class_index(target.class_choice, classes)
        except ValueError as error:
            raise TargetError(str(error)) from None


async def preflight(client: httpx.AsyncClient, target: Target) -> list[str]:
    """Check that the target answers and serves the model with this key (and that the class
    choice fits it); returns the model's classes (empty for unconditional models), else
    raises TargetError."""
    url = target.model_url
    try:
        response = await client.get(url, headers=target.headers | {"accept": "application/json"})
    except httpx.ConnectError as error:
        raise TargetError(
            f"cannot connect to {target.base_url}: {_reason(error)} (is the service running?)"
        ) from None
    except httpx.TimeoutException:
        raise TargetError(f"{target.base_url} did not answer in time") from None
    except httpx.HTTPError as error:
        raise TargetError(f"request to {url} failed: {_reason(error)}") from None
    if response.status_code == 200:
        try:
            classes = response.json().get("classes") or []
        except (ValueError, AttributeError):
            classes = []
        check_class_choice(target, classes)
        return [str(name) for name in classes]
    message = _server_message(response)
    if response.status_code == 401:
        hint = "pass --api-key" if not target.api_key else "check --api-key"
        raise TargetError(f"401 from {target.base_url}: {message} ({hint})")
    if response.status_code == 404:
        raise TargetError(f"404 from {url}: {message}")
    raise TargetError(f"{response.status_code} from {url}: {message}")


def _reason(error: BaseException) -> str:
    """A short reason: 'connection refused' wherever in the chain of causes it is said."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError) or "refused" in str(seen).lower():
            return "connection refused"
        seen = seen.__cause__ or seen.__context__
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
