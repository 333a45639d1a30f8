"""A FastAPI app whose background jobs report their progress live, to the taskevents
dashboard and any other Socket.IO client.

Run it from the repository's root (``pip install 'taskevents[asgi]' fastapi``)::

    uvicorn examples.fastapi_app.app:app --port 8000

then open http://127.0.0.1:8000/websocket and start a job::

    curl -X POST 'http://127.0.0.1:8000/deploy/web01?seconds=10'
    curl -X POST 'http://127.0.0.1:8000/backup/web02?seconds=10'

A deployment runs as a coroutine on the event loop; a backup, which blocks, runs in a
worker thread. Both report to the same emitter, and the dashboard shows both alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import RedirectResponse

from taskevents import SubjectBusy, TaskTracker
from taskevents.adapters.logging import console_handler
from taskevents.asgi import TaskEvents

SERVERS = {"web01": {"region": "eu-west-1"}, "web02": {"region": "us-east-1"}}
STAGES = ("download", "unpack", "migrate", "switch", "verify")

# Every event on the console, as the logging adapter writes it.
logging.getLogger("taskevents").setLevel(logging.INFO)
logging.getLogger("taskevents").addHandler(console_handler())

tasks = TaskEvents(subjects=SERVERS, adapters={"logging": {"levels": {"task_progress": "INFO"}}})
emitter = tasks.emitter
# The background jobs (asyncio keeps only weak references to tasks): at shutdown, those
# on the loop are cancelled, those in threads told to stop, and all waited for.
on_loop: set[asyncio.Task[None]] = set()
in_threads: set[asyncio.Task[None]] = set()
stopping = threading.Event()


@contextlib.asynccontextmanager
async def lifespan(api: FastAPI) -> AsyncIterator[None]:
    stopping.clear()
    yield
    # Shutdown: each running job ends as "cancelled" on the dashboard, before TaskEvents
    # (which wraps this app, lifespan included) closes its adapters.
    stopping.set()
    for job in on_loop:
        job.cancel()
    await asyncio.gather(*on_loop, *in_threads, return_exceptions=True)


api = FastAPI(title="taskevents with FastAPI", lifespan=lifespan)
#: What to serve: Socket.IO at /socket.io/, the REST endpoints at /api/tasks, the
#: dashboard at /websocket, and every other path to the FastAPI app.
app = tasks.wrap(api)


def in_background(job: Coroutine[Any, Any, None], jobs: set[asyncio.Task[None]]) -> None:
    task = asyncio.get_running_loop().create_task(job)
    jobs.add(task)
    task.add_done_callback(jobs.discard)


def check_server(server: str) -> None:
    if server not in SERVERS:
        raise HTTPException(404, f"unknown server {server!r}")


def busy(server: str, error: SubjectBusy) -> HTTPException:
    return HTTPException(409, f"{server} is busy with a {error.running_task_type} task")


@api.get("/", include_in_schema=False)
async def index() -> RedirectResponse:
    return RedirectResponse("/websocket")


# -- a job in a coroutine ---------------------------------------------------------------


@api.post("/deploy/{server}", status_code=202)
async def deploy(
    server: str, seconds: float = Query(5.0, gt=0, le=600), version: str = "2.4.1"
) -> dict[str, str]:
    """Deploy ``version`` to ``server``, in the background; 409 while a task runs there."""
    check_server(server)
    job = contextlib.AsyncExitStack()
    try:
        # The task starts now, so that the answer can give its id (or say it is busy)...
        task = await job.enter_async_context(emitter.track(server, "deploy"))
    except SubjectBusy as error:
        raise busy(server, error) from None
    # ...and goes on in the background, where leaving the block ends it: completed,
    # failed (an exception), or cancelled (asyncio.CancelledError).
    in_background(roll_out(job, task, version, seconds), on_loop)
    return {"task_id": task.task_id, "server": server}


async def roll_out(
    job: contextlib.AsyncExitStack, task: TaskTracker, version: str, seconds: float
) -> None:
    async with job:
        for number, stage in enumerate(STAGES, 1):
            await asyncio.sleep(seconds / len(STAGES))  # the real work, awaited
            # Emitting is a plain call, cheap, and never waits for the clients.
            task.progress(100 * number / len(STAGES), stage=stage, message=f"{stage} {version}")
        task.result = {"version": version}


# -- a blocking job in a worker thread ------------------------------------------------------


@api.post("/backup/{server}", status_code=202)
async def backup(server: str, seconds: float = Query(5.0, gt=0, le=600)) -> dict[str, str]:
    """Back ``server`` up, in a worker thread: for blocking code (files, a sync client)."""
    check_server(server)
    job = contextlib.ExitStack()
    try:
        task = job.enter_context(emitter.track(server, "backup"))
    except SubjectBusy as error:
        raise busy(server, error) from None
    in_background(asyncio.to_thread(copy_files, job, task, seconds), in_threads)
    return {"task_id": task.task_id, "server": server}


def copy_files(job: contextlib.ExitStack, task: TaskTracker, seconds: float) -> None:
    """Runs in a worker thread: it reports from there, as it would from the loop."""
    with job:
        copied = 0
        for part in range(1, 11):
            if stopping.is_set():  # a thread cannot be cancelled: it looks
                task.cancel("the server stopped")
                return
            time.sleep(seconds / 10)  # blocking work: fine in a thread, never on the loop
            copied += 250
            task.progress(part * 10, stage="copy", message=f"{copied} MB copied")
        task.result = {"megabytes": copied}
