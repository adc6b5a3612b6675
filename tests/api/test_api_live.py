"""The gateway's fast paths against real parts: the live state's one-round-trip label commit and
counts (a real redis-server and the in-process implementation, the same assertions), the claim
index, the stale-while-revalidate cache, label-write progress against the progress endpoint, and
``oraculum serve api --workers 2`` passing its flags to every worker."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.support.api_fixtures import ROOT, TOKEN_LIST, RedisServer, auth, client_for, free_port, settings_for, stop_process, wait_port
from tests.support.api_world import EXPERIMENT
from oraculum.api.app import create_app, serve, worker_environment
from oraculum.api.cache import TtlCache
from oraculum.api.live import Live, MemoryLive, RedisLive
from oraculum.api.state import AppState
from oraculum.settings import Settings

IT1 = f"/api/v1/experiments/{EXPERIMENT}/iterations/1"


def entry(version: str, label: str | None, sample: str = "oracle", comment: str | None = None) -> dict[str, Any]:
    return {"v": version, "label": label, "who": "olga", "when": "2026-01-01T00:00:00+00:00", "comment": comment,
            "set": sample, "bulk": False}


@pytest_asyncio.fixture(params=["memory", "redis"])
async def live(request: pytest.FixtureRequest, redis_server: RedisServer) -> AsyncIterator[Live]:
    if request.param == "memory":
        yield MemoryLive()
        return
    redis_server.flushall()
    state = RedisLive(redis_server.url)
    try:
        yield state
    finally:
        await state.close()


@pytest.mark.asyncio
async def test_merge_counts_labelled_spectra_per_sample_and_releases_claims(live: Live) -> None:
    count = ["oracle", "estimation"]
    # not complete yet (never rebuilt from the store): no counts, only the merge
    assert await live.merge_labels("e", 1, {1: entry("0002", "emission")}, count=count) is None
    assert await live.labels("e", 1) is None
    counts = await live.merge_labels("e", 1, {2: entry("0001", "absorption"), 3: entry("0001", "unsure", "estimation"),
                                              1: entry("0001", "absorption")}, built=True, count=count)
    assert counts == {"oracle": 2, "estimation": 1}  # item 1 keeps its newer label
    assert (await live.labels("e", 1))[1]["label"] == "emission"
    # a clear is a tombstone: counted out, kept (so an older event can never come back)
    assert await live.merge_labels("e", 1, {2: entry("0003", None)}, count=count) == {"oracle": 1, "estimation": 1}
    assert await live.merge_labels("e", 1, {2: entry("0002", "emission")}, count=count) == {"oracle": 1, "estimation": 1}
    labels = await live.labels("e", 1)
    assert labels is not None and labels[2]["label"] is None and labels[2]["v"] == "0003"
    # claims are released in the same step, but only the caller's
    assert (await live.claim("e:1:4", "olga", 30))[1]
    assert (await live.claim("e:1:5", "otto", 30))[1]
    counts = await live.merge_labels("e", 1, {4: entry("0004", "emission")}, release=["e:1:4", "e:1:5"], who="olga",
                                     count=count)
    assert counts == {"oracle": 2, "estimation": 1}
    assert await live.holders("e:1:") == {"e:1:5": ("otto", pytest.approx(30, abs=1))}
    # another iteration is counted apart
    assert await live.merge_labels("e", 2, {4: entry("0005", "emission")}, built=True, count=count) == {
        "oracle": 1, "estimation": 0}


@pytest.mark.asyncio
async def test_labels_round_trip_any_text(live: Live) -> None:
    comment = 'tab\there, "quotes", a \\ backslash, {braces}, ünïcödé, newline\n'
    await live.merge_labels("e", 0, {7: entry("0001", "emission", comment=comment), 8: entry("0002", None)}, built=True)
    labels = await live.labels("e", 0)
    assert labels == {7: entry("0001", "emission", comment=comment), 8: entry("0002", None)}


@pytest.mark.asyncio
async def test_claims_are_listed_per_iteration_and_expire(live: Live) -> None:
    assert (await live.claim("e:1:10", "olga", 0.3)) == ("olga", True)
    assert (await live.claim("e:1:10", "olga", 30)) == ("olga", False)  # renewed
    assert (await live.claim("e:1:10", "otto", 30)) == ("olga", False)  # held
    assert (await live.claim("e:1:11", "otto", 0.3)) == ("otto", True)
    assert (await live.claim("e:2:10", "otto", 30)) == ("otto", True)
    assert (await live.claim("e:11:10", "otto", 30)) == ("otto", True)  # a prefix of e:1: must not leak in
    held = await live.holders("e:1:")
    assert {key: who for key, (who, _) in held.items()} == {"e:1:10": "olga", "e:1:11": "otto"}
    await asyncio.sleep(0.5)
    assert set(await live.holders("e:1:")) == {"e:1:10"}
    assert await live.release("e:1:10", "otto") is False
    assert await live.release("e:1:10", "olga") is True
    assert await live.holders("e:1:") == {}


@pytest.mark.asyncio
async def test_a_rebuild_recounts_from_the_hash(redis_server: RedisServer) -> None:
    """Counts that drifted (e.g. an older gateway version merged without them) heal on a rebuild."""
    import redis.asyncio as redis

    redis_server.flushall()
    live = RedisLive(redis_server.url)
    try:
        entries = {i: entry(f"{i:04d}", "emission") for i in range(5)}
        assert await live.merge_labels("e", 1, entries, built=True, count=["oracle"]) == {"oracle": 5}
        client = redis.Redis.from_url(redis_server.url)
        await client.sadd("oraculum:labelled:e:1:oracle", "99", "98")
        await client.srem("oraculum:labelled:e:1:oracle", "0")
        await client.aclose()
        assert await live.merge_labels("e", 1, {}, count=["oracle"]) == {"oracle": 6}  # drifted
        assert await live.merge_labels("e", 1, {}, built=True, count=["oracle"]) == {"oracle": 5}
    finally:
        await live.close()


@pytest.mark.asyncio
async def test_cache_loads_once_serves_stale_while_refreshing_and_forgets() -> None:
    cache = TtlCache()
    loads: list[int] = []

    async def load() -> int:
        loads.append(len(loads))
        await asyncio.sleep(0.05)
        return len(loads)

    # fifty concurrent misses: one load
    assert await asyncio.gather(*(cache.get("k", 0.2, load) for _ in range(50))) == [1] * 50
    assert await cache.get("k", 0.2, load) == 1 and len(loads) == 1
    await asyncio.sleep(0.25)  # stale: answered at once, refreshed behind
    started = time.monotonic()
    assert await cache.get("k", 0.2, load) == 1
    assert time.monotonic() - started < 0.04
    await asyncio.sleep(0.1)
    assert await cache.get("k", 0.2, load) == 2 and len(loads) == 2
    await asyncio.sleep(0.45)  # older than twice the ttl: waits for a fresh value
    assert await cache.get("k", 0.2, load) == 3
    # a load in flight when the key is forgotten does not put its (older) value back
    pending = asyncio.ensure_future(cache.get("j", 10, load))
    await asyncio.sleep(0.01)
    cache.forget("j")
    assert await pending == 4
    assert await cache.get("j", 10, load) == 5

    async def broken() -> int:
        raise RuntimeError("store down")

    with pytest.raises(RuntimeError, match="store down"):
        await cache.get("x", 1, broken)


@pytest.mark.asyncio
@pytest.mark.parametrize("live_kind", ["memory", "redis"])
async def test_write_progress_matches_the_progress_endpoint(local_store: Path, redis_server: RedisServer,
                                                            live_kind: str) -> None:
    redis_url = redis_server.url if live_kind == "redis" else None
    if redis_url:
        redis_server.flushall()
    async with client_for(create_app(settings_for(local_store, redis_url=redis_url))) as client:
        batch = (await client.get(f"/api/v1/experiments/{EXPERIMENT}/batch", headers=auth("viewer"))).json()
        listener = asyncio.create_task(label_events(client, 5))
        await asyncio.sleep(0.5)  # the stream subscribes first
        oracle = [i["index"] for i in batch["items"] if i["set"] == "oracle"]
        estimation = [i["index"] for i in batch["items"] if i["set"] == "estimation"]
        writes: list[tuple[str, str, Any]] = [("put", f"labels/{oracle[0]}", {"label": "emission"}),
                                              ("put", f"labels/{estimation[0]}", {"label": "absorption"}),
                                              ("put", f"labels/{oracle[0]}", {"label": "unsure"}),
                                              ("post", "labels/bulk", {"indices": oracle[1:4] + estimation[1:2],
                                                                       "label": "absorption"}),
                                              ("delete", f"labels/{oracle[2]}", None)]
        acks = []
        for step, (method, path, body) in enumerate(writes):
            if step == 3 and redis_url:
                redis_server.flushall()  # the cache is gone: the write must rebuild it to count
            kwargs = {"json": body} if body is not None else {}
            ack = await client.request(method.upper(), f"{IT1}/{path}", headers=auth("oracle"), **kwargs)
            assert ack.status_code == 201, ack.text
            shown = (await client.get(f"{IT1}/progress", headers=auth("viewer"))).json()
            assert ack.json()["progress"] == shown
            acks.append(ack.json())
        assert shown["oracle"]["labelled"] == 3 and shown["estimation"]["labelled"] == 2
        assert shown["text"] == f"3 / {len(oracle)} oracle, 2 / {len(estimation)} estimation"
        # dashboards see the same progress in each label event (published with the write's merge)
        events = await asyncio.wait_for(listener, 60)
        assert [(e["indices"], e["label"], e["progress"]) for e in events] == [
            (a["indices"], a["label"], a["progress"]) for a in acks]
        assert all(not key.startswith("_") for e in events for key in e)


async def label_events(client: httpx.AsyncClient, count: int) -> list[dict[str, Any]]:
    """The next ``count`` label events of the experiment's event stream."""
    response = await client.get(f"/api/v1/experiments/{EXPERIMENT}/events?max_events={count + 2}&timeout=50",
                                headers=auth("viewer"))
    assert response.status_code == 200
    found = []
    for block in response.text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if lines.get("event") == "label":
            found.append(json.loads(lines["data"]))
    return found


def test_each_subscriber_gets_the_progress_of_a_published_label_event() -> None:
    """The in-process live state hands one dict to every subscriber: finishing it for one stream
    must leave it whole for the next."""
    published = {"type": "label", "iteration": 1, "indices": [3], "_labelled": {"oracle": 2, "estimation": 0},
                 "_totals": {"oracle": 4, "estimation": 2}, "_submitted": False}
    first, second = (AppState.finish_event("e", published) for _ in range(2))
    assert first == second and first["progress"]["text"] == "2 / 4 oracle, 0 / 2 estimation"
    assert first["progress"]["labelled"] == 2 and first["progress"]["total"] == 6
    assert not any(key.startswith("_") for key in first) and "_labelled" in published


def test_worker_environment_reproduces_the_settings() -> None:
    settings = Settings(store="s3://bucket/prefix", redis_url="redis://h:1/0", api_run_jobs=False, api_lock_seconds=7.5,
                        archive_url_template="https://archive.example/{obsid}")
    env = worker_environment(settings)
    assert env["ORACULUM_API_RUN_JOBS"] == "false" and "ORACULUM_S3_ENDPOINT" not in env
    saved = {key: os.environ.pop(key) for key in list(os.environ) if key.startswith("ORACULUM_")}
    try:
        os.environ.update(env)
        assert Settings() == settings
    finally:
        for key in env:
            os.environ.pop(key, None)
        os.environ.update(saved)


def test_several_workers_need_redis_and_no_local_runner() -> None:
    with pytest.raises(ValueError, match="need Redis"):
        serve(Settings(), workers=2)
    with pytest.raises(ValueError, match="one worker"):
        serve(Settings(redis_url="redis://127.0.0.1:1/0", api_run_jobs=True), workers=2)
    refused = subprocess.run([sys.executable, "-m", "oraculum.cli.main", "serve", "api", "--workers", "2"],
                             capture_output=True, text=True, cwd=str(ROOT),
                             env={k: v for k, v in os.environ.items() if k != "ORACULUM_REDIS_URL"})
    assert refused.returncode != 0 and "needs Redis" in refused.stderr


@pytest.mark.slow
def test_two_workers_get_the_flags_of_the_command_line(local_store: Path, redis_server: RedisServer,
                                                       tmp_path: Path) -> None:
    """--redis-url given as a flag (not in the environment) reaches both worker processes, and
    each served worker freezes its start-up objects out of the garbage collector's reach."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORACULUM_")}
    env.update(ORACULUM_API_TOKENS=TOKEN_LIST, ORACULUM_API_BACKEND="local", ORACULUM_CACHE_DIR=str(tmp_path / "cache"))
    log = open(tmp_path / "api.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "oraculum.cli.main", "--store", str(local_store), "serve", "api",
                                "--port", str(port), "--workers", "2", "--redis-url", redis_server.url,
                                "--log-level", "info"], env=env, cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(port, timeout=60, process=process)
        kinds = set()
        for _ in range(12):  # fresh connections: the workers share the socket
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                ready = client.get("/readyz")
                assert ready.status_code == 200, ready.text
                kinds |= {name for name in ready.json()["checks"] if name.startswith("live")}
                put = client.put(f"{IT1}/labels/{labelled_index(client)}", json={"label": "emission"},
                                 headers=auth("oracle"))
                assert put.status_code == 201, put.text
        assert kinds == {"live (redis)"}
    finally:
        stop_process(process, timeout=20)
        log.close()
    frozen = re.findall(r"froze (\d+) start-up objects", (tmp_path / "api.log").read_text())
    assert len(frozen) == 2 and all(int(n) > 10_000 for n in frozen), frozen


def test_an_app_built_in_process_leaves_the_garbage_collector_alone(local_store: Path) -> None:
    """Only ``oraculum serve api`` freezes objects (they would never be freed): an app made by
    create_app(), as in tests and notebooks, does not."""
    import gc

    from fastapi.testclient import TestClient

    before = gc.get_freeze_count()
    with TestClient(create_app(settings_for(local_store))) as client:
        assert client.get("/healthz").status_code == 200
    assert gc.get_freeze_count() == before


def labelled_index(client: httpx.Client) -> int:
    batch = client.get(f"/api/v1/experiments/{EXPERIMENT}/batch", headers=auth("viewer"))
    assert batch.status_code == 200, batch.text
    return int(batch.json()["items"][0]["index"])
