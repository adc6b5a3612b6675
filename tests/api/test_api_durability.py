"""Durability with real processes: the API as a uvicorn subprocess (``oraculum serve api``), a real
redis-server and a real S3 endpoint (moto server). Oracles label concurrently; Redis is SIGKILLed
mid-labelling and started again empty; then the API is SIGKILLed mid-labelling and started again.
Every label the API acknowledged (2xx) is in the store and served back."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.api_fixtures import TOKEN_LIST, ApiProcess, RedisServer, auth
from tests.support.api_world import EXPERIMENT, upload
from oraculum.learning.labels import current_labels, read_events
from oraculum.settings import Settings
from oraculum.store import open_store

ORACLES = [f"labeller{n}" for n in range(6)]
EXTRA_TOKENS = ",".join(f"{name}:oracle:{name}-token-0123456789abcdef" for name in ORACLES)
LABELS = ["absorption", "emission", "double-peak", "unsure"]


class Oracle(threading.Thread):
    """Labels its own items round and round; remembers what was acknowledged and what was in flight."""

    def __init__(self, name: str, base: list[str], indices: list[int], stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.token = f"{name}-token-0123456789abcdef"
        self.base = base
        self.indices = indices
        self.stop_flag = stop
        self.acked: list[tuple[int, str, list[str]]] = []  # (index, label, event keys), in order
        self.unacked: list[tuple[int, str]] = []  # sent, no 2xx seen (refused, or lost in a crash)
        self.codes: dict[int | str, int] = {}

    def run(self) -> None:
        n = 0
        with httpx.Client(timeout=5.0) as client:
            while not self.stop_flag.is_set():
                index = self.indices[n % len(self.indices)]
                label = LABELS[(n // len(self.indices) + len(self.acked)) % len(LABELS)]
                n += 1
                try:
                    response = client.put(f"{self.base[0]}/api/v1/experiments/{EXPERIMENT}/iterations/1/labels/{index}",
                                          json={"label": label}, headers={"Authorization": f"Bearer {self.token}"})
                except httpx.HTTPError as error:
                    self.unacked.append((index, label))
                    self.codes[type(error).__name__] = self.codes.get(type(error).__name__, 0) + 1
                    time.sleep(0.05)
                    continue
                self.codes[response.status_code] = self.codes.get(response.status_code, 0) + 1
                if 200 <= response.status_code < 300:
                    self.acked.append((index, label, response.json()["events"]))
                else:
                    self.unacked.append((index, label))
                    time.sleep(0.02)


@pytest.mark.slow
def test_acknowledged_labels_survive_sigkill_of_redis_and_the_api(world: Path, s3_endpoint: str, tmp_path: Path) -> None:  # noqa: F811
    bucket = f"durable-{uuid.uuid4().hex[:8]}"
    settings = Settings(store=f"s3://{bucket}", s3_endpoint=s3_endpoint, s3_access_key="testing",
                        s3_secret_key="testing", s3_region="us-east-1")
    store = open_store(settings=settings)
    upload(world, store)
    redis = RedisServer(tmp_path / "redis").start()
    env = {"ORACULUM_STORE": settings.store, "ORACULUM_S3_ENDPOINT": s3_endpoint, "ORACULUM_S3_ACCESS_KEY": "testing",
           "ORACULUM_S3_SECRET_KEY": "testing", "ORACULUM_S3_REGION": "us-east-1", "ORACULUM_REDIS_URL": redis.url,
           "ORACULUM_API_TOKENS": f"{TOKEN_LIST},{EXTRA_TOKENS}", "ORACULUM_API_BACKEND": "local",
           "ORACULUM_CACHE_DIR": str(tmp_path / "cache")}
    api = ApiProcess(env, tmp_path / "api.log")
    oracles: list[Oracle] = []
    stop = threading.Event()
    try:
        api.start()
        base = [api.url]
        with httpx.Client(timeout=10.0) as client:
            assert client.get(f"{api.url}/readyz").status_code == 200
            batch = client.get(f"{api.url}/api/v1/experiments/{EXPERIMENT}/batch", headers=auth("viewer")).json()
        indices = [item["index"] for item in batch["items"]]
        oracles = [Oracle(name, base, indices[n::len(ORACLES)], stop) for n, name in enumerate(ORACLES)]
        for oracle in oracles:
            oracle.start()
        time.sleep(2.0)
        acked_before_redis_kill = sum(len(o.acked) for o in oracles)
        redis.kill()  # mid-labelling
        time.sleep(1.0)
        redis.start()  # back, empty
        time.sleep(2.0)
        api.kill()  # mid-labelling
        time.sleep(0.5)
        api = ApiProcess(env, tmp_path / "api.log")
        api.start()
        base[0] = api.url  # the oracles carry on against the restarted API
        time.sleep(1.5)
        stop.set()
        for oracle in oracles:
            oracle.join(timeout=15)

        acked = [entry for oracle in oracles for entry in oracle.acked]
        codes: dict[Any, int] = {}
        for oracle in oracles:
            for code, count in oracle.codes.items():
                codes[code] = codes.get(code, 0) + count
        print(f"durability: {len(acked)} labels acknowledged ({acked_before_redis_kill} before Redis was killed); "
              f"answers {codes}")
        assert acked_before_redis_kill > 20 and len(acked) > acked_before_redis_kill, codes
        assert codes.get(503, 0) > 0, f"Redis was down but no write was refused: {codes}"
        # 1. every acknowledged event is in the store
        keys = {info.key for info in store.list(f"experiments/{EXPERIMENT}/labels/")}
        missing = [key for _, _, events in acked for key in events if key not in keys]
        assert not missing, f"{len(missing)} acknowledged label events are not in the store"
        # 2. the store's fold agrees with what was acknowledged: each item ends on its last
        #    acknowledged label, or on a label sent after it whose answer was lost in the crash
        truth = current_labels(read_events(store, EXPERIMENT, 1))
        for oracle in oracles:
            last: dict[int, str] = {}
            for index, label, _ in oracle.acked:
                last[index] = label
            later = {(i, lab) for i, lab in oracle.unacked}
            for index, label in last.items():
                assert index in truth, f"item {index}: acknowledged {label!r}, nothing stored"
                stored = truth[index].label
                assert stored == label or (index, stored) in later, (index, label, stored)
        # 3. the restarted API (with an empty Redis) serves exactly the store's labels
        with httpx.Client(timeout=10.0) as client:
            served = client.get(f"{api.url}/api/v1/experiments/{EXPERIMENT}/iterations/1/labels", headers=auth("viewer")).json()
        assert {int(i): v["label"] for i, v in served["labels"].items()} == {i: c.label for i, c in truth.items()}
    finally:
        stop.set()
        for oracle in oracles:
            oracle.join(timeout=5)
        api.kill()
        redis.kill()
