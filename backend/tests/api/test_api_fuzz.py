"""Property-based fuzz of the whole HTTP API from its own OpenAPI schema: no request gets a 5xx, every
status and body matches its documented schema, and every 405 names in ``Allow`` exactly the methods
the schema documents for that path.

Jobs never train (the runner returns at once); pre-flight is on, with the dataset roots in a temp
directory. The Hub is unreachable in tests, so its lookups fail at once instead of retrying.
Half the generated job, config and file ids are swapped for ones that exist (completed, stopped or
failed jobs; a saved config; an uploaded file), so the found-paths are fuzzed as well as the 404s.
The OpenAI-compatible /v1 routes are in the same schema, so they are fuzzed too.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from job_helpers import quiesce
from app.api.sft_job_manager import SFTJob, SFTJobManager
from app.core.settings import Settings
from app.main import create_app
from app.sft import data, models
from app.jobs import webhook_sender
from app.sft.graders import judge
from app.sft.errors import DatasetError, ModelError
from app.store import SQLiteStore
from factories import contact_rows, wait_for, write_jsonl

FAIL_SEED = 13

# The schema is read at collection; the fixture below attaches the manager before any request.
app = create_app(manager=None)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


def _runner(job: SFTJob, emit) -> dict[str, Any]:
    """Trains nothing: returns at once (fails for one seed, so failed jobs exist too)."""
    if job.config.get("seed") == FAIL_SEED:
        raise RuntimeError("fuzz: failing on purpose")
    return {"stopped": job.stop_event.is_set(), "adapter_path": None, "global_step": 0}


def _no_hub_dataset(name, split, *, limit):
    raise DatasetError("the Hugging Face Hub is unreachable in tests", source=name)


def _no_hub_model(repo_id):
    raise ModelError(f"model '{repo_id}' is not reachable in tests")


def _no_judge(url, body, headers, timeout_seconds):
    """A fuzzed score_model grader's judge is never asked: no DNS lookup of its host (~80 ms each)."""
    import httpx

    raise httpx.ConnectError(f"no network in tests ({url})")


def _no_webhook_host(host, port):
    """A fuzzed webhook URL never resolves: no DNS lookup, and no endpoint that would send to a public address."""
    raise OSError(f"no network in tests ({host})")


class Fuzz:
    """The fuzzed app's manager, and ids that exist (made again when the fuzz deletes them)."""

    def __init__(self, manager: SFTJobManager, config: dict[str, Any]):
        self.manager = manager
        self.config = config
        self._kinds = itertools.cycle(("completed", "stopped", "failed"))
        self._seed = itertools.count(100)

    def job_id(self) -> str:
        kind = next(self._kinds)
        for job in list(self.manager.jobs.values()):
            if job.status.value == kind:
                return job.job_id
        config = self.config | {"seed": FAIL_SEED if kind == "failed" else next(self._seed)}
        if kind == "stopped":
            job_id = self.manager.create_job(config)
            self.manager.stop_job(job_id)
            return job_id
        job_id = self.manager.submit(config).job_id
        wait_for(lambda: self.manager.get_job(job_id).status.is_terminal(), timeout=10, message="the job to end")
        return job_id

    def file_id(self) -> str:
        uploaded = self.manager.store.load_files(purpose="fine-tune")
        if uploaded:
            return uploaded[0]["file_id"]
        with TestClient(app) as client:
            rows = "".join(json.dumps(row) + "\n" for row in contact_rows(4))
            answer = client.post("/v1/files", data={"purpose": "fine-tune"}, files={"file": ("f.jsonl", rows)})
        return answer.json()["id"]

    def config_id(self) -> str:
        saved = self.manager.list_configs()
        return saved[0]["config_id"] if saved else self.manager.save_config(f"fuzz-{next(self._seed)}", {})


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("fuzz")
    dataset = write_jsonl(root / "chat.jsonl", contact_rows(8))
    patch = pytest.MonkeyPatch()
    patch.setattr(data, "_read_hub", _no_hub_dataset)
    patch.setattr(models, "_check_hub_has", _no_hub_model)
    patch.setattr(webhook_sender, "lookup", _no_webhook_host)
    patch.setattr(judge, "send", _no_judge)
    manager = SFTJobManager(
        settings=Settings(data_dir=root / "data", dataset_roots=[root], model_cache_dir=root / "model-cache",
                        model_roots=[root, tiny_model_dir.parent]),
        store=SQLiteStore(root / "x.db"), runner=_runner, max_concurrent_jobs=2, preflight=True,
    )
    app.state.manager = manager
    yield Fuzz(manager, {"base_model": str(tiny_model_dir), "dataset_name": str(dataset), "max_steps": 1})
    quiesce(manager)
    app.state.manager = None
    patch.undo()


@schema.parametrize()
@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_server_error(case, fuzz):
    params = case.path_parameters or {}
    if isinstance(params.get("job_id"), str) and len(params["job_id"]) % 2 == 0:
        params["job_id"] = fuzz.job_id()
    if isinstance(params.get("config_id"), str) and len(params["config_id"]) % 2 == 0:
        params["config_id"] = fuzz.config_id()
    if isinstance(params.get("file_id"), str) and len(params["file_id"]) % 2 == 0:
        params["file_id"] = fuzz.file_id()
    case.call_and_validate(
        headers={"Accept": "application/json"},  # the JSON events page, never the live SSE stream
        checks=[not_a_server_error, status_code_conformance, response_schema_conformance,
                content_type_conformance, response_headers_conformance, allow_header_conformance,
                unsupported_method],
    )


HTTP_METHODS = ("get", "put", "post", "delete", "patch", "options")


@pytest.mark.parametrize("path", sorted(app.openapi()["paths"]))
def test_undocumented_methods_are_405_with_the_documented_allow_header(fuzz, path):
    from fastapi.testclient import TestClient

    documented = {m for m in app.openapi()["paths"][path] if m in HTTP_METHODS}
    expected = {m.upper() for m in documented} | ({"HEAD"} if "get" in documented else set())
    url = path.replace("{job_id}", fuzz.job_id()).replace("{config_id}", fuzz.config_id())
    client = TestClient(app)
    for method in sorted(set(HTTP_METHODS) - documented):
        response = client.request(method.upper(), url)
        assert response.status_code == 405, (method, path, response.text)
        assert {m.strip() for m in response.headers["allow"].split(",")} == expected, (method, path)
        assert response.json()["detail"].startswith(f"{method.upper()} is not allowed on ")


# The same fuzz with keys on, as a user's key (not an admin's): half the ids are the user's own objects, a
# quarter another user's (which must read as missing), the rest random. Fewer examples: the schema-shaped
# part is the run above; this one is about the keyed paths (ownership, scoping, the path rule) never 5xx-ing.

@pytest.fixture(scope="module")
def keyed_users(fuzz):
    from app.store.keys import KeyStore

    keys = KeyStore(fuzz.manager.store)
    alice = keys.create("fuzz-alice")[1]
    keys.create("fuzz-bob")
    bob_job = fuzz.manager.submit(fuzz.config | {"seed": 7}, owner="fuzz-bob").job_id
    wait_for(lambda: fuzz.manager.get_job(bob_job).status.is_terminal(), timeout=10, message="bob's job to end")
    return keys, {"Authorization": f"Bearer {alice}"}, bob_job


@pytest.fixture
def keys_on(keyed_users):
    keys, headers, bob_job = keyed_users
    app.state.keys, app.state.auth_mode = keys, "keys"
    yield headers, bob_job
    app.state.auth_mode = "off"


def _alice_job(fuzz) -> str:
    mine = [job for job in fuzz.manager.jobs.values() if job.owner == "fuzz-alice" and job.status.is_terminal()]
    if mine:
        return mine[0].job_id
    job_id = fuzz.manager.submit(fuzz.config | {"seed": next(fuzz._seed)}, owner="fuzz-alice").job_id
    wait_for(lambda: fuzz.manager.get_job(job_id).status.is_terminal(), timeout=10, message="alice's job to end")
    return job_id


@schema.parametrize()
@settings(max_examples=12, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_keyed_request_gets_a_server_error(case, fuzz, keys_on):
    headers, bob_job = keys_on
    params = case.path_parameters or {}
    if isinstance(params.get("job_id"), str):
        params["job_id"] = {0: _alice_job(fuzz), 1: bob_job}.get(len(params["job_id"]) % 3, params["job_id"])
    response = case.call_and_validate(
        headers={"Accept": "application/json", **headers},
        checks=[not_a_server_error, status_code_conformance, response_schema_conformance, content_type_conformance],
    )
    assert response.status_code != 401, response.text  # the key was taken: the run is the keyed one
