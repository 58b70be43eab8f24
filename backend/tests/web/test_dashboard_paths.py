"""Ids from the page's address go into API paths escaped: a crafted link (``#/new?from=../../keys``)
must not send the user's keyed requests to another route."""

from __future__ import annotations

import pytest

from factories import wait_for


@pytest.mark.parametrize("fragment, shown", [("#/new?from=../../keys", "#form-error"),
                                             ("#/compare?jobs=../../keys", "#compare-message")])
def test_an_id_from_the_address_stays_inside_its_api_path(page, server, fragment, shown):
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    with page.expect_request(lambda request: "/api/sft/jobs/..%2F..%2Fkeys" in request.url):
        page.goto(f"{server.url}/{fragment}")
    wait_for(lambda: page.locator(shown).inner_text().strip() != "", timeout=30, message="the error shown")
    assert not [url for url in requests if url.startswith(f"{server.url}/api/keys")], requests
